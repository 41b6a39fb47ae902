"""TSDiff (Kollovieh et al., NeurIPS 2023): one unconditional diffusion model per data set, guided at sampling time.

- :mod:`nde.tsdiff.s4`: the diagonal S4 (S4D) layer, bidirectional, in plain torch;
- :mod:`nde.tsdiff.model`: the denoiser (S4 residual blocks, step embedding), lagged inputs, mean scaling,
  the :class:`TSDiff` model with ``save`` / ``load``;
- :mod:`nde.tsdiff.train`: training on random windows of each series' training part through :mod:`nde.train`;
- :mod:`nde.tsdiff.forecast`: self-guided forecasting, TSDiff-MS and TSDiff-Q, with the DDPM, DDIM and
  DPM-Solver++ samplers of :mod:`nde.diffusion`;
- :mod:`nde.tsdiff.refine`: refinement of another forecaster's output (Langevin and maximum likelihood on the
  denoising loss as an energy);
- :mod:`nde.tsdiff.synthesis`: unconditional windows and the train-on-synthetic-test-on-real linear score.

The command line is ``nde tsdiff train`` / ``nde tsdiff forecast`` (:mod:`nde.cli.tsdiff`); see docs/tsdiff.md.
"""

from nde.tsdiff.forecast import (
    GUIDANCES,
    SAMPLER_NAMES,
    ClippedGuidance,
    MeanSquareGuidance,
    QuantileGuidance,
    clip_bounds,
    default_steps,
    forecast,
    forecast_inputs,
    pinball,
    sample_quantile_levels,
)
from nde.tsdiff.model import (
    TSDiff,
    TSDiffConfig,
    TSDiffDenoiser,
    TSDiffModelError,
    lagged_windows,
    mean_scale,
)
from nde.tsdiff.refine import diffusion_step_losses, refine_forecast, representative_step
from nde.tsdiff.s4 import S4DKernel, S4DLayer
from nde.tsdiff.synthesis import (
    RidgeForecaster,
    fit_ridge,
    linear_predictive_score,
    sample_real_windows,
    scale_windows,
    synthesize,
)
from nde.tsdiff.train import TrainingWindows, fit_tsdiff, validation_loss, validation_windows, window_arrays

__all__ = [
    "GUIDANCES",
    "SAMPLER_NAMES",
    "ClippedGuidance",
    "MeanSquareGuidance",
    "QuantileGuidance",
    "RidgeForecaster",
    "S4DKernel",
    "S4DLayer",
    "TSDiff",
    "TSDiffConfig",
    "TSDiffDenoiser",
    "TSDiffModelError",
    "TrainingWindows",
    "clip_bounds",
    "default_steps",
    "diffusion_step_losses",
    "fit_ridge",
    "fit_tsdiff",
    "forecast",
    "forecast_inputs",
    "lagged_windows",
    "linear_predictive_score",
    "mean_scale",
    "pinball",
    "refine_forecast",
    "representative_step",
    "sample_quantile_levels",
    "sample_real_windows",
    "scale_windows",
    "synthesize",
    "validation_loss",
    "validation_windows",
    "window_arrays",
]
