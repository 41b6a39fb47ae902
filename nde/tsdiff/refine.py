"""Refinement of a base forecast with a trained TSDiff model (Kollovieh et al., NeurIPS 2023, Sec. 4.2).

The unconditional model's denoising loss is used as an energy of a whole window ``x`` (scaled, with its lag
channels, :mod:`nde.tsdiff.model`): at a diffusion step ``i`` with ``a = ā_i``,

    E_θ(x; i, ε) = Σ_{t,k} (eps_θ(sqrt(a) x + sqrt(1 - a) ε, i/N) - ε)²_{t,k},     ε ~ N(0, I),

a one-draw estimate of ``E_ε ‖eps_θ(...) - ε‖²``, which is (up to constants and weights) the diffusion bound
of ``-log p_θ(x)``. It is combined with a prior centred on the base forecast ``ŷ`` (the base model's sample
or point prediction, scaled like the window) on the ``P`` forecast values ``y = x[C:, 0]``:

- ``prior="gaussian"``: ``R(y) = Σ_h (y_h - ŷ_h)²``;
- ``prior="quantile"``: ``R(y) = Σ_h ρ_q(ŷ_h - y_h)`` with the pinball loss ``ρ_q(e) = max(q e, (q - 1) e)`` (an
  asymmetric Laplace), one level per sample path ``q_j = j / (S + 1)``, ``j = 1..S``, as TSDiff-Q; the base
  samples are sorted per series and time point first, so that path ``j`` starts at (and is tied to) the
  ``j``-th smallest base sample;

and the refined forecast minimises or samples ``U(y) = E_θ(x(y)) + λ R(y)`` (``λ = reg_weight``):

- ``method="ml"`` (maximum likelihood): gradient descent ``y ← y - η ∇U`` (SGD, or Adam with
  ``optimizer="adam"``), ``steps`` iterations from the base forecast; a fresh ``ε`` every iteration;
- ``method="langevin"`` (energy-based sampling): ``y ← y - η ∇U + sqrt(2η) γ ξ``, ``ξ ~ N(0, I)``, ``steps``
  iterations from the base forecast; ``γ = noise_scale``. With ``γ = 1`` this is the unadjusted Langevin
  algorithm for the density ``∝ exp(-U)``; the reference's ``γ = 0.1`` targets the sharper ``exp(-U / γ²)``.

**The window.** As in :func:`nde.tsdiff.forecast.forecast_inputs`, the window covers the last ``C`` context
values and the ``P`` forecast values, scaled by the mean ``|y|`` of the observed context; its lag channels
point ``max(lags)`` further back. Here it is built from one underlying series of ``max(lags) + C + P`` values,
``x[t, k] = z[max(lags) + t - lag_k]``, so a lag channel that points into the forecast range carries the same
(refined) value as channel 0 there. Observed values are held fixed; the forecast values and every missing
value the window reaches (NaN in the context, or history before the series' start) are the free variables.
Missing values start at the mean of the row's observed context values and have no prior; the output holds
only the forecast values, times the scale.

**Diffusion step.** ``diffusion_step="best"`` (the default, as the reference) uses one fixed step for all
iterations: the step whose mean loss on the initial windows is closest to the mean over all steps,
:func:`representative_step` of :func:`diffusion_step_losses` (the reference evaluates it on one batch of
training windows). ``"random"`` draws a step uniformly from ``1..N`` per path and iteration (the reference's
``fixed_t=-1``); an ``int`` fixes it.

**Facts from the reference** (amazon-science/unconditional-time-series-diffusion):
``src/uncond_ts_diff/sampler/refiner.py`` (``Refiner``, ``MostLikelyRefiner``, ``MCMCRefiner``): energy
``p_losses(x, t, reduction="sum")`` plus ``scale`` times the prior, with ``t`` fixed, fresh noise per
iteration; ``MostLikelyRefiner`` is SGD (lr 0.1, with a ``ReduceLROnPlateau`` of patience 100 that never fires
within its 10-20 iterations, so it is left out here); ``MCMCRefiner`` ``"lmc"`` calls ``langevin_dynamics``
(``src/uncond_ts_diff/sampler/_base.py``) once per iteration: ``z + η (-∇E) + sqrt(2η) · noise_scale · ξ``;
base samples sorted along the sample axis, a single base sample (seasonal naive) tiled to ``num_samples``.
``bin/refinement_experiment.py``: ``fixed_t = get_best_diffusion_step`` (``argmin_t (loss_t - mean_t loss)²``);
``configs/refinement/*.yaml``: 20 iterations (10 for the solar example), lr and step size 0.1, noise scale
0.1, 100 samples, ``scale`` (λ) left at 1. Two deliberate differences: the reference lets the whole window
move and ties the context to its observed values through the prior, while here the observed values are
fixed (the limit of a strong context prior) and the lag channels stay consistent with the forecast; and its
Gaussian prior is summed over the observed (context) entries only, so that the base forecast enters only as
the starting point, while here both priors act on the forecast values as in the paper's
``E(y) + λ R(y, ŷ)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from nde.tsdiff.forecast import forecast_inputs, pinball, sample_quantile_levels
from nde.tsdiff.model import TSDiff

__all__ = [
    "METHODS",
    "OPTIMIZERS",
    "PRIORS",
    "diffusion_step_losses",
    "refine_forecast",
    "representative_step",
    "window_energy",
]

METHODS = ("langevin", "ml")
PRIORS = ("gaussian", "quantile")
OPTIMIZERS = ("sgd", "adam")
Method = Literal["langevin", "ml"]
Prior = Literal["gaussian", "quantile"]
Optimizer = Literal["sgd", "adam"]
#: Windows used to pick the representative diffusion step (the reference uses one batch of training windows).
_STEP_WINDOWS = 32


def _model_device_dtype(model: TSDiff) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def window_energy(model: TSDiff, windows: Tensor, steps: Tensor, noise: Tensor) -> Tensor:
    """``[B]``: ``Σ_{t,k} (eps_θ(sqrt(ā_i) x + sqrt(1 - ā_i) ε, i/N) - ε)²`` per window.

    Args:
        model: the epsilon model, with its schedule of ``N`` steps.
        windows: ``x [B, L, 1 + K]`` scaled windows (finite).
        steps: ``[B]`` integer steps ``i`` in ``1..N``.
        noise: ``ε [B, L, 1 + K]``.
    """
    n = model.config.num_steps
    a_bar = model.schedule.alpha_bars.to(device=windows.device, dtype=windows.dtype)[steps - 1][:, None, None]
    noised = a_bar.sqrt() * windows + (1 - a_bar).sqrt() * noise
    eps = model(noised, steps.to(windows.dtype) / n)
    return (eps - noise).square().reshape(windows.shape[0], -1).sum(1)


@torch.no_grad()
def diffusion_step_losses(model: TSDiff, windows: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``[N]`` float64: the mean denoising loss of ``windows [B, L, 1 + K]`` at each step ``i = 1..N``.

    One noise draw ``ε`` (from ``generator``) is shared by all steps, so that the steps are compared on the
    same noise; the loss is the mean over windows and entries.
    """
    noise = torch.randn(windows.shape, generator=generator, dtype=windows.dtype, device=windows.device)
    losses = torch.empty(model.config.num_steps, dtype=torch.float64)
    for i in range(1, model.config.num_steps + 1):
        steps = torch.full((windows.shape[0],), i, dtype=torch.long, device=windows.device)
        losses[i - 1] = float(window_energy(model, windows, steps, noise).sum()) / windows.numel()
    return losses


def representative_step(losses: Tensor | ArrayLike) -> int:
    """The step ``i`` (1-based) whose loss is closest to the mean loss over all steps: ``argmin (l_i - mean l)² + 1``.

    This is the reference's ``get_best_diffusion_step`` (``bin/refinement_experiment.py``), shifted to 1-based steps.
    """
    values = torch.as_tensor(losses, dtype=torch.float64)
    if values.ndim != 1 or values.numel() == 0 or not bool(torch.isfinite(values).all()):
        raise ValueError("losses must be a non-empty 1-D array of finite numbers")
    return int(((values - values.mean()) ** 2).argmin()) + 1


def _adam_direction(grad: Tensor, first: Tensor, second: Tensor, k: int, beta1: float = 0.9, beta2: float = 0.999,
                    eps: float = 1e-8) -> Tensor:
    """Adam's step direction at iteration ``k >= 1`` (Kingma & Ba, 2015; torch.optim.Adam's defaults).

    ``m ← β1 m + (1 - β1) g``, ``v ← β2 v + (1 - β2) g²`` (in place), direction ``m̂ / (sqrt(v̂) + eps)`` with
    ``m̂ = m / (1 - β1^k)``, ``v̂ = v / (1 - β2^k)``. Written out rather than through ``torch.optim`` because it is
    one line, and the first ``torch.optim`` step costs about a second of imports.
    """
    first.mul_(beta1).add_(grad, alpha=1 - beta1)
    second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return (first / (1 - beta1**k)) / ((second / (1 - beta2**k)).sqrt() + eps)


def _window_index(model: TSDiff) -> Tensor:
    """``[L, 1 + K]`` int64: position ``max(lags) + t - lag_k`` (``lag_0 = 0``) of each window entry in the series."""
    config = model.config
    lags = torch.tensor([0, *config.lags], dtype=torch.long)
    t = torch.arange(config.window_length, dtype=torch.long)
    return config.history_length + t[:, None] - lags[None, :]


def _series_of(observed: Tensor, index: Tensor, length: int) -> Tensor:
    """``[N, length]`` float64: the underlying series of the windows ``observed [N, L, 1 + K]`` (NaN = unknown).

    Every entry pointing at a position holds that position's value (:func:`lagged_windows`), so scattering
    the entries back is exact; positions no entry reaches stay NaN and are never used.
    """
    series = torch.full((observed.shape[0], length), float("nan"), dtype=torch.float64)
    series[:, index.reshape(-1)] = observed.reshape(observed.shape[0], -1).to(torch.float64)
    return series


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_number(name: str, value: object, *, positive: bool) -> float:
    if not isinstance(value, int | float | np.floating | np.integer) or isinstance(value, bool) \
            or not math.isfinite(float(value)) or (float(value) <= 0 if positive else float(value) < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _base_samples(base: ArrayLike, n_series: int, prediction_length: int, num_samples: int | None) -> np.ndarray:
    """The base forecast as ``[S, N, P]`` float64 (a point ``[N, P]`` repeated ``num_samples`` times, default 1)."""
    values = np.asarray(base, dtype=np.float64)
    if values.ndim == 2:
        count = 1 if num_samples is None else _check_positive_int("num_samples", num_samples)
        values = np.broadcast_to(values, (count, *values.shape))
    elif values.ndim == 3:
        if num_samples is not None and num_samples != values.shape[0]:
            raise ValueError(f"num_samples={num_samples!r} differs from the {values.shape[0]} base samples; "
                             "num_samples only repeats a point forecast [N, P]")
    else:
        raise ValueError(f"base must be a point forecast [N, P] or samples [S, N, P], got shape {list(values.shape)}")
    if values.shape[1:] != (n_series, prediction_length) or values.shape[0] < 1:
        raise ValueError(f"base must be [N, P] or [S, N, P] with N = {n_series} series and P = {prediction_length} "
                         f"(the model's prediction length), got shape {list(np.shape(base))}")
    if not np.isfinite(values).all():
        raise ValueError("base contains NaN or infinite values")
    return values


def refine_forecast(
    model: TSDiff,
    history: Sequence[ArrayLike] | np.ndarray,
    base: ArrayLike,
    *,
    method: Method = "langevin",
    prior: Prior = "gaussian",
    steps: int = 20,
    step_size: float = 0.1,
    reg_weight: float = 1.0,
    noise_scale: float = 0.1,
    diffusion_step: int | Literal["best", "random"] = "best",
    optimizer: Optimizer = "sgd",
    num_samples: int | None = None,
    batch_size: int = 512,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Refine a base forecast of the ``P`` points after each history: ``[S, N, P]`` float64 in the data's units.

    See the module docstring for the energy, the priors and the two methods.

    Args:
        model: a trained :class:`~nde.tsdiff.model.TSDiff`.
        history: ``N`` series up to their forecast origins, as for :func:`nde.tsdiff.forecast.forecast`.
        base: the base forecast in the data's units: samples ``[S, N, P]`` (one refined path per sample, e.g.
            :func:`nde.forecast_baselines.linear_lag_forecast`) or a point forecast ``[N, P]`` (e.g. seasonal
            naive), repeated ``num_samples`` times.
        method: ``"langevin"`` (samples) or ``"ml"`` (gradient descent to the most likely forecast).
        prior: ``"gaussian"`` or ``"quantile"`` (one quantile level per path; the base samples are sorted).
        steps: iterations (the reference: 20).
        step_size: ``η``, the Langevin step or the optimiser's learning rate (the reference: 0.1).
        reg_weight: ``λ``, the weight of the prior (the reference: 1; 0 leaves only the model's energy).
        noise_scale: ``γ`` of the Langevin noise ``sqrt(2η) γ ξ`` (the reference: 0.1); unused by ``"ml"``.
        diffusion_step: ``"best"``, ``"random"`` or a fixed step in ``1..N`` (module docstring).
        optimizer: ``"sgd"`` (the reference) or ``"adam"``, for ``method="ml"``.
        num_samples: paths per series for a point ``base`` (default 1); must match ``S`` if given with samples.
        batch_size: paths refined together (memory: activations and gradients of ``batch_size`` windows).
        seed: seed of all noise (energy draws, Langevin noise, random steps); the same seed, ``batch_size``
            and device give the same result.
        device: default: the model's device.

    Raises:
        ValueError: an unknown method / prior / optimiser, a bad number, a ``base`` of the wrong shape or with
            non-finite values, or bad histories (:func:`nde.tsdiff.forecast.forecast_inputs`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose one of {list(PRIORS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    steps = _check_positive_int("steps", steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    step_size = _check_number("step_size", step_size, positive=True)
    reg_weight = _check_number("reg_weight", reg_weight, positive=False)
    noise_scale = _check_number("noise_scale", noise_scale, positive=False)
    config = model.config
    n_steps = config.num_steps
    if (diffusion_step not in ("best", "random") if isinstance(diffusion_step, str)
            else not isinstance(diffusion_step, int | np.integer) or isinstance(diffusion_step, bool)
            or not 1 <= diffusion_step <= n_steps):
        raise ValueError(f"diffusion_step must be 'best', 'random' or a step in 1..{n_steps}, got {diffusion_step!r}")

    observed, data_scale = forecast_inputs(model, history)
    n_series, horizon = observed.shape[0], config.prediction_length
    samples = _base_samples(base, n_series, horizon, num_samples)
    if prior == "quantile":
        samples = np.sort(samples, axis=0)  # path j is tied to level j/(S+1): give it the j-th smallest base value
    n_paths = samples.shape[0]
    base_scaled = torch.from_numpy(samples / data_scale.numpy()[None, :, None])  # [S, N, P]

    default_device, dtype = _model_device_dtype(model)
    device = default_device if device is None else torch.device(device)
    model = model.to(device).eval()
    index = _window_index(model).to(device)
    length = config.history_length + config.window_length
    series = _series_of(observed, index.cpu(), length)  # [N, length]
    known = ~torch.isnan(series)
    reached = torch.zeros(length, dtype=torch.bool)
    reached[index.reshape(-1).cpu()] = True
    free = ~known & reached[None, :]
    # Missing values start at the mean of the row's observed context (scaled); forecast values at the base.
    context = series[:, length - horizon - config.context_length : length - horizon]
    fill = torch.nanmean(context, dim=1)
    start = torch.where(known, series, fill[:, None])
    levels = sample_quantile_levels(n_paths)
    generator = torch.Generator(device=device).manual_seed(seed)

    total = n_series * n_paths  # paths series-major: path p is sample p % S of series p // S
    rows_of = torch.arange(total) // n_paths
    samples_of = torch.arange(total) % n_paths

    def initial(paths: Tensor) -> Tensor:
        z = start[rows_of[paths]].clone()
        z[:, length - horizon :] = base_scaled[samples_of[paths], rows_of[paths]]
        return z.to(device=device, dtype=dtype)

    fixed_step: int | None = diffusion_step if isinstance(diffusion_step, int | np.integer) else None
    if diffusion_step == "best":
        probe = initial(torch.linspace(0, total - 1, min(total, _STEP_WINDOWS)).round().long())  # across series
        fixed_step = representative_step(diffusion_step_losses(model, probe[:, index], generator=generator))

    out = torch.empty(total, horizon, dtype=torch.float64)
    for lo in range(0, total, batch_size):
        paths = torch.arange(lo, min(lo + batch_size, total))
        rows = rows_of[paths]
        known_b = known[rows].to(device)
        values_b = torch.where(known_b, series[rows].to(device), 0.0).to(dtype)
        free_b = free[rows].to(device=device, dtype=dtype)
        target = base_scaled[samples_of[paths], rows].to(device=device, dtype=dtype)  # [B, P]
        q = levels[samples_of[paths]].to(device=device, dtype=dtype)[:, None]

        def energy(z: Tensor, known_b: Tensor = known_b, values_b: Tensor = values_b, target: Tensor = target,
                   q: Tensor = q) -> Tensor:
            """``[B]`` the refinement energy ``E_θ(x(z)) + λ R(y)`` with fresh noise (and step) per call."""
            full = torch.where(known_b, values_b, z)
            windows = full[:, index]  # [B, L, 1 + K]
            if fixed_step is None:
                step = torch.randint(1, n_steps + 1, (z.shape[0],), generator=generator, device=device)
            else:
                step = torch.full((z.shape[0],), int(fixed_step), dtype=torch.long, device=device)
            noise = torch.randn(windows.shape, generator=generator, dtype=dtype, device=device)
            forecast_values = full[:, length - horizon :]
            if prior == "gaussian":
                penalty = (forecast_values - target).square().sum(1)
            else:
                penalty = pinball(target - forecast_values, q).sum(1)
            return window_energy(model, windows, step, noise) + reg_weight * penalty

        z = initial(paths)
        first, second = torch.zeros_like(z), torch.zeros_like(z)  # Adam's moment estimates
        for k in range(1, steps + 1):
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(energy(leaf).sum(), leaf)  # zero at the fixed (observed) values
            if method == "langevin":
                kick = torch.randn(z.shape, generator=generator, dtype=dtype, device=device)
                z = z - step_size * grad + math.sqrt(2 * step_size) * noise_scale * kick * free_b
            elif optimizer == "sgd":
                z = z - step_size * grad
            else:
                z = z - step_size * _adam_direction(grad, first, second, k)
        out[lo : lo + len(paths)] = z[:, length - horizon :].double().cpu()

    refined = out.reshape(n_series, n_paths, horizon).transpose(0, 1) * data_scale[None, :, None]
    return refined.numpy()
