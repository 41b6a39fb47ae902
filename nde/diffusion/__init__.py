"""Diffusion models: noise schedules, forward SDEs, samplers, guidance and exact likelihoods.

- :mod:`nde.diffusion.schedules`: discrete schedules (linear, cosine) and continuous SDEs (VP, cosine VP,
  sub-VP, VE), each with Gaussian marginals ``x_t = alpha(t) x0 + sigma(t) eps``;
- :mod:`nde.diffusion.samplers`: six samplers on one interface, ``sample(model, shape, steps, guidance)``,
  for an epsilon model ``model(x, t) -> eps``, and observation (self-)guidance;
- :mod:`nde.diffusion.likelihood`: log-likelihood through the probability-flow ODE;
- :mod:`nde.diffusion.gaussian`: Gaussian data with its closed-form optimal denoiser, the reference.
"""

from nde.diffusion.gaussian import GaussianData, GaussianEpsilonModel
from nde.diffusion.likelihood import log_likelihood
from nde.diffusion.samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlus2M,
    EpsilonModel,
    GaussianObservationGuidance,
    Guidance,
    ObservationGuidance,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    Sampler,
    make_sampler,
)
from nde.diffusion.schedules import (
    SCHEDULES,
    SDES,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiffusionInputError,
    DiffusionSDE,
    DiscreteSchedule,
    NoiseProcess,
    SubVPSDE,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    make_sde,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "SDES",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPlusPlus2M",
    "DiffusionInputError",
    "DiffusionSDE",
    "DiscreteSchedule",
    "EpsilonModel",
    "GaussianData",
    "GaussianEpsilonModel",
    "GaussianObservationGuidance",
    "Guidance",
    "NoiseProcess",
    "ObservationGuidance",
    "PredictorCorrectorSampler",
    "ProbabilityFlowSampler",
    "ReverseSDESampler",
    "Sampler",
    "SubVPSDE",
    "cosine_schedule",
    "linear_schedule",
    "log_likelihood",
    "make_sampler",
    "make_schedule",
    "make_sde",
]
