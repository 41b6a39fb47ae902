"""Synthetic windows from an unconditional TSDiff model, and the linear predictive score (TSTR).

**Synthesis** (:func:`synthesize`): unguided reverse diffusion from ``N(0, I)`` gives windows ``x [L, 1 + K]``
of the model's training distribution, in its **scaled units**: a training window is divided by the mean
``|y|`` of its own context values (:func:`nde.tsdiff.model.mean_scale`), so a synthetic window has no data
unit; its context has a mean ``|y|`` near 1, and only its shape (seasonality, dynamics, relative level of
context and future) carries information. Channel 0 is the series; the other channels are its lagged copies
as the model generated them (not forced to agree with channel 0).

**Linear predictive score** (:func:`linear_predictive_score`, Kollovieh et al., 2023, Sec. 5.3): train on
synthetic, test on real (TSTR). A ridge regression ``ŷ = W x + b`` from the ``C`` context values to the ``P``
following values,

    (W, b) = argmin Σ_j ‖y_j - W x_j - b‖² + α ‖W‖²_F        (the intercept is not penalised),

is fitted on the synthetic windows (already scaled) and tested on real test windows: each test context is
divided by its mean ``|y|`` (floored at ``min_scale``), the prediction multiplied back, and the point forecast
scored in the data's units by :func:`nde.metrics.forecast_metrics` (a point forecast is a one-sample
forecast: its CRPS is its absolute error, ``crps_normalized = mean_wql = nd``). The same regression fitted on
real training windows, scaled the same way, is the train-on-real (TRTR) reference: a good generator scores
close to it.

Facts from the reference (amazon-science/unconditional-time-series-diffusion): ``bin/tstr_experiment.py``
(10 000 synthetic windows from ``TSDiff.sample_n``: DDPM over all steps, channel 0 of the scaled windows;
the test set sliced to its last ``C + P`` points and mean-scaled by the first ``C`` of them,
``ScaleAndAddMeanFeature`` in ``src/uncond_ts_diff/utils.py``, scale floored at ``1e-7``);
``src/uncond_ts_diff/model/linear/_estimator.py`` (``LinearEstimator``: scikit-learn ``Ridge()``, i.e.
``α = 1`` with an unpenalised intercept, context -> prediction, ``scaling=False`` for synthetic windows, mean
scaling of the context for real ones); ``src/uncond_ts_diff/metrics/linear_pred_score.py`` (the same
protocol, scored with GluonTS's ``Evaluator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from nde.diffusion import make_sampler
from nde.metrics.forecast import forecast_metrics
from nde.tsdiff.forecast import SAMPLER_NAMES, SamplerName, default_steps
from nde.tsdiff.model import TSDiff

__all__ = [
    "RidgeForecaster",
    "fit_ridge",
    "linear_predictive_score",
    "sample_real_windows",
    "scale_windows",
    "synthesize",
]


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def synthesize(
    model: TSDiff,
    num_samples: int,
    *,
    sampler: SamplerName = "ddpm",
    steps: int | None = None,
    batch_size: int = 512,
    seed: int = 0,
    device: str | torch.device | None = None,
    with_lags: bool = False,
    sampler_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Unconditional windows of the model: ``[num_samples, L]`` float64 (channel 0), in the model's scaled units.

    Args:
        model: a trained :class:`~nde.tsdiff.model.TSDiff`.
        num_samples: number of windows.
        sampler: ``"ddpm"`` (the reference), ``"ddim"`` or ``"dpmpp"`` (:data:`nde.tsdiff.SAMPLER_NAMES`).
        steps: sampler steps (default :func:`nde.tsdiff.default_steps`: all ``N`` for DDPM and DDIM, 20 for
            DPM-Solver++, at most ``N``).
        batch_size: windows per sampler call.
        seed: seed of the sampler's noise; the same seed, ``batch_size`` and device give the same windows.
        device: default: the model's device.
        with_lags: return all channels, ``[num_samples, L, 1 + K]``.
        sampler_options: extra options of the sampler (e.g. ``{"eta": 1.0}`` for DDIM).

    Returns:
        Windows divided by their context's mean ``|y|`` (module docstring): multiply by a level of the data
        to get data-like values.

    Raises:
        ValueError: an unknown sampler, or a non-positive ``num_samples``, ``batch_size`` or ``steps``.
    """
    if sampler not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLER_NAMES)}")
    num_samples = _positive_int("num_samples", num_samples)
    batch_size = _positive_int("batch_size", batch_size)
    config = model.config
    # default_steps asks 20 of DPM-Solver++ whatever N; a model of fewer steps gets all of its N.
    steps = min(default_steps(model, sampler), config.num_steps) if steps is None else _positive_int("steps", steps)
    parameter = next(model.parameters(), None)
    if device is None:
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = parameter.dtype if parameter is not None else torch.float32
    model = model.to(device).eval()
    engine = make_sampler(SAMPLER_NAMES[sampler], model.schedule, **(sampler_options or {}))
    generator = torch.Generator(device=device).manual_seed(seed)
    out = np.empty((num_samples, config.window_length, config.channels))
    for lo in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - lo)
        x = engine.sample(model, (count, config.window_length, config.channels), steps, None,
                          generator=generator, dtype=dtype, device=device)
        out[lo : lo + count] = x.double().cpu().numpy()
    return out if with_lags else out[..., 0]


def _windows(windows: ArrayLike, name: str, length: int | None = None) -> np.ndarray:
    values = np.asarray(windows, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D array [M, C + P] with M >= 1, got shape {list(values.shape)}")
    if length is not None and values.shape[1] != length:
        raise ValueError(f"{name} must have C + P = {length} columns, got {values.shape[1]}")
    if np.isinf(values).any():
        raise ValueError(f"{name} contains infinite values (use NaN for missing values)")
    return values


def scale_windows(windows: ArrayLike, context_length: int, min_scale: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Mean scaling of whole windows by their context: ``(windows / scale, scale)``, ``[M, L]`` and ``[M]``.

    ``scale = max(mean_{t < C} |y_t|, min_scale)`` over the observed (non-NaN) context values; a row without
    any gets NaN (it cannot be scaled).
    """
    values = _windows(windows, "windows")
    context_length = _positive_int("context_length", context_length)
    if context_length >= values.shape[1]:
        raise ValueError(f"context_length {context_length} must be shorter than the windows ({values.shape[1]})")
    if not min_scale > 0:
        raise ValueError(f"min_scale must be > 0, got {min_scale}")
    context = np.abs(values[:, :context_length])
    count = (~np.isnan(context)).sum(1)
    total = np.where(np.isnan(context), 0.0, context).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(count > 0, np.maximum(total / np.maximum(count, 1), min_scale), np.nan)
    return values / scale[:, None], scale


class RidgeForecaster:
    """A fitted ridge regression from ``C`` context values to the ``P`` next ones: ``ŷ = x Wᵀ + b``.

    Attributes:
        weights: ``[P, C]`` float64.
        intercept: ``[P]`` float64.
    """

    def __init__(self, weights: np.ndarray, intercept: np.ndarray) -> None:
        self.weights, self.intercept = weights, intercept

    def predict(self, context: ArrayLike) -> np.ndarray:
        """``[M, P]`` predictions for ``context [M, C]`` (in the units the model was fitted in)."""
        x = np.asarray(context, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.weights.shape[1]:
            raise ValueError(f"context must be [M, {self.weights.shape[1]}], got shape {list(x.shape)}")
        return x @ self.weights.T + self.intercept


def fit_ridge(x: ArrayLike, y: ArrayLike, ridge: float = 1.0) -> RidgeForecaster:
    """Least squares with an L2 penalty ``α ‖W‖²`` on the weights, not on the intercept (scikit-learn's ``Ridge``).

    With the column means ``x̄``, ``ȳ`` and the centred ``X``, ``Y``: ``Wᵀ = (XᵀX + α I)⁻¹ XᵀY``, ``b = ȳ - W x̄``
    (``α = 0``: ordinary least squares, by ``lstsq``).

    Args:
        x: ``[M, C]`` inputs; y: ``[M, P]`` targets; both finite.
        ridge: ``α >= 0``.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.ndim != 2 or ys.ndim != 2 or xs.shape[0] != ys.shape[0] or xs.shape[0] < 1:
        raise ValueError(f"x must be [M, C] and y [M, P] with the same M >= 1, got {list(xs.shape)}, {list(ys.shape)}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    x_mean, y_mean = xs.mean(0), ys.mean(0)
    xc, yc = xs - x_mean, ys - y_mean
    if ridge > 0:
        coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(xs.shape[1]), xc.T @ yc)  # [C, P]
    else:
        coef = np.linalg.lstsq(xc, yc, rcond=None)[0]
    return RidgeForecaster(coef.T.copy(), y_mean - x_mean @ coef)


def sample_real_windows(
    series: Sequence[ArrayLike] | np.ndarray, window_length: int, num_windows: int, *, seed: int = 0
) -> np.ndarray:
    """``[num_windows, L]`` float64 windows of the data drawn uniformly (with replacement) from all complete windows.

    A window is ``L`` consecutive values of one series without a missing value, in the data's units (the real
    counterpart of :func:`synthesize`, e.g. from the training parts of the series,
    :attr:`nde.data.timeseries.RollingWindows.train`).

    Raises:
        ValueError: no series has a complete window of ``L`` values, or bad sizes.
    """
    window_length = _positive_int("window_length", window_length)
    num_windows = _positive_int("num_windows", num_windows)
    rows = [np.asarray(v, dtype=np.float64).ravel() for v in
            (series if not isinstance(series, np.ndarray) or series.ndim > 1 else [series])]
    starts: list[tuple[int, int]] = []
    for i, values in enumerate(rows):
        if np.isinf(values).any():
            raise ValueError(f"series {i} contains infinite values (use NaN for missing values)")
        if len(values) < window_length:
            continue
        missing = np.concatenate([[0], np.cumsum(np.isnan(values))])
        first = np.arange(len(values) - window_length + 1)
        complete = first[missing[first + window_length] == missing[first]]
        starts.extend((i, int(s)) for s in complete)
    if not starts:
        raise ValueError(f"no series has {window_length} consecutive observed values")
    pick = np.random.default_rng(seed).integers(len(starts), size=num_windows)
    return np.stack([rows[starts[k][0]][starts[k][1] : starts[k][1] + window_length] for k in pick])


def _score(train_scaled: np.ndarray, test: np.ndarray, context_length: int, ridge: float,
           min_scale: float) -> dict[str, float]:
    ok = np.isfinite(train_scaled).all(1)
    if not ok.any():
        raise ValueError("no complete training window (every window has a missing or unscalable value)")
    model = fit_ridge(train_scaled[ok, :context_length], train_scaled[ok, context_length:], ridge)
    scaled, scale = scale_windows(test, context_length, min_scale)
    usable = np.isfinite(scaled[:, :context_length]).all(1)
    if not usable.any():
        raise ValueError("no test window has a complete context")
    point = model.predict(scaled[usable, :context_length]) * scale[usable, None]
    target = test[usable, context_length:]
    metrics = forecast_metrics(point[None], target)
    keep = ("crps", "crps_normalized", "mean_wql", "nd", "nrmse")
    return {**{k: metrics[k] for k in keep}, "n_train": int(ok.sum()), "n_train_dropped": int((~ok).sum()),
            "n_test": int(usable.sum()), "n_test_dropped": int((~usable).sum())}


def linear_predictive_score(
    synthetic_windows: ArrayLike,
    test_windows: ArrayLike,
    context_length: int,
    *,
    real_windows: ArrayLike | None = None,
    ridge: float = 1.0,
    min_scale: float = 1e-7,
) -> dict[str, dict[str, float]]:
    """Train-on-synthetic-test-on-real scores of a ridge forecaster, and optionally the train-on-real reference.

    Args:
        synthetic_windows: ``[M, C + P]`` windows in scaled units (:func:`synthesize`), used as they are.
        test_windows: ``[K, C + P]`` real windows in the data's units, e.g. the context and target of
            :func:`nde.data.timeseries.rolling_test_windows` side by side; each is scaled by its context.
        context_length: ``C``; the regression predicts the last ``P = L - C`` values from the first ``C``.
        real_windows: ``[M', C + P]`` real training windows in the data's units (:func:`sample_real_windows`),
            mean-scaled by their context before the fit: the TRTR reference.
        ridge: the penalty ``α`` (scikit-learn's default 1, as the reference).
        min_scale: floor of a test (and real training) window's scale (the reference's ``1e-7``).

    Returns:
        ``{"tstr": scores}`` and, with ``real_windows``, ``"trtr": scores``; scores are ``crps`` (mean absolute
        error in the data's units: the CRPS of a point forecast), ``crps_normalized``, ``mean_wql``, ``nd``,
        ``nrmse`` (GluonTS's definitions, :mod:`nde.metrics.forecast`), and the counts ``n_train``,
        ``n_train_dropped`` (windows with a missing value), ``n_test``, ``n_test_dropped`` (test windows with a
        missing context value; NaN in a test target only leaves that point out).

    Raises:
        ValueError: windows of different lengths, ``C`` not shorter than them, infinite values, no usable window.
    """
    synthetic = _windows(synthetic_windows, "synthetic_windows")
    length = synthetic.shape[1]
    test = _windows(test_windows, "test_windows", length)
    context_length = _positive_int("context_length", context_length)
    if context_length >= length:
        raise ValueError(f"context_length {context_length} must be shorter than the windows ({length})")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    out = {"tstr": _score(synthetic, test, context_length, ridge, min_scale)}
    if real_windows is not None:
        real, _ = scale_windows(_windows(real_windows, "real_windows", length), context_length, min_scale)
        out["trtr"] = _score(real, test, context_length, ridge, min_scale)
    return out
