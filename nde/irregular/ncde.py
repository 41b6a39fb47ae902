"""Neural CDE classifier: a hidden state driven by the interpolated data, read out at the end."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nde.layers import NeuralCDE
from nde.layers.cde import Interpolation
from nde.solvers import AdjointMode

__all__ = ["NeuralCDEClassifier", "classification_metrics"]


class NeuralCDEClassifier(nn.Module):
    """Logits ``[B, K] = W z(T) + b`` where ``z`` solves the Neural CDE driven by the data path.

    Args:
        input_channels: channels of the control (time included).
        hidden_channels: size of the CDE state.
        n_classes: ``K``.
        interpolation, width, depth, method, step_size, adjoint: passed to :class:`nde.layers.NeuralCDE`.
    """

    def __init__(self, input_channels: int, hidden_channels: int, n_classes: int, *,
                 interpolation: Interpolation = "cubic", width: int = 64, depth: int = 2, method: str = "rk4",
                 step_size: float | None = None, adjoint: AdjointMode = "direct") -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
        self.cde = NeuralCDE(input_channels, hidden_channels, interpolation=interpolation, width=width,
                             depth=depth, method=method, step_size=step_size, adjoint=adjoint)
        self.readout = nn.Linear(hidden_channels, n_classes)

    def coefficients(self, values: Tensor, times: Tensor | None = None) -> Tensor:
        """Interpolation coefficients of ``values [B, L, C]`` (compute once, before training)."""
        return self.cde.coefficients(values, times)

    def forward(self, coeffs: Tensor) -> Tensor:
        """``coeffs`` from :meth:`coefficients` -> logits ``[B, K]``."""
        return self.readout(self.cde(coeffs)[:, -1])


@torch.no_grad()
def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy, accuracy and (for two classes) the area under the ROC curve.

    Args:
        logits: ``[N, K]``.
        labels: ``[N]`` class indices.
    """
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    metrics = {"loss": loss, "accuracy": accuracy}
    if logits.shape[-1] == 2:
        metrics["auroc"] = binary_auroc(logits[:, 1] - logits[:, 0], labels)
    return metrics


def binary_auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: the probability that a positive outscores a negative (ties count 1/2)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)
