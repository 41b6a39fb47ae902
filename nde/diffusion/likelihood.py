"""Exact log-likelihood of a diffusion model through its probability-flow ODE (Song et al., 2021, App. D.2).

The probability-flow ODE ``dx/dt = f̃(x, t) = f(x, t) - g(t)² score(x, t) / 2``, with
``score = -eps(x, t) / sigma(t)``, carries the density ``p_t`` of the model along its trajectories, and by the
instantaneous change of variables (Chen et al., 2018)::

    log p_{t_eps}(x) = log p_T(x(T)) + ∫_{t_eps}^{T} div f̃(x(t), t) dt,    x(t_eps) = x.

The ODE runs forward from the data at ``t_eps`` to ``T``, jointly with the integral, through
:func:`nde.solvers.solve_ode`; ``p_T`` is the SDE's prior. The divergence is either exact (one
vector-Jacobian product per dimension: for small dimension) or Hutchinson's estimate
``div f̃ ≈ (1/K) Σ_k v_kᵀ (∂f̃/∂x) v_k`` with ``K`` probes ``v_k`` (Rademacher or standard Gaussian, both with
``E[v vᵀ] = I``) drawn once and held fixed over the solve (Grathwohl et al., 2019); the estimate of
``log p`` is then unbiased up to the solver's error.

Only continuous data is handled (no dequantisation): the result is a density in nats per sample, of data
at ``t_eps`` (the model's ``p_{t_eps}``, which tends to ``p_0`` as ``t_eps -> 0``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from nde.diffusion.samplers import EpsilonModel, _check_eps
from nde.diffusion.schedules import DiffusionInputError, DiffusionSDE
from nde.solvers import ODE_METHODS, solve_ode

__all__ = ["log_likelihood"]


def log_likelihood(
    model: EpsilonModel,
    sde: DiffusionSDE,
    x: Tensor,
    *,
    divergence: Literal["exact", "hutchinson"] = "hutchinson",
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    num_probes: int = 1,
    t_eps: float = 1e-5,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``[B]``: the model's log-density of each sample of ``x [B, ...]``, in nats per sample.

    Args:
        model: the epsilon model ``model(x, t) -> eps`` (see :mod:`nde.diffusion.samplers`).
        sde: the forward SDE the model was trained for; its prior gives ``log p_T``.
        x: data ``[B, ...]``, floating point and finite (float64 for tight results).
        divergence: ``"exact"`` (``D`` vector-Jacobian products per evaluation, ``D = x[0].numel()``) or
            ``"hutchinson"`` (``num_probes`` of them).
        probe: distribution of Hutchinson's probes, ``"rademacher"`` (±1, lower variance) or ``"gaussian"``.
        num_probes: Hutchinson probes averaged per sample.
        t_eps: start time of the ODE (the score is singular at 0).
        method, rtol, atol: the ODE solver (:data:`nde.solvers.ODE_METHODS`; fixed-step methods take one
            step over the whole span, so use an adaptive one).
        generator: source of the probes.

    Returns:
        ``[B]`` log-likelihoods, detached, in ``x``'s dtype.
    """
    if not isinstance(sde, DiffusionSDE):
        raise DiffusionInputError(f"log_likelihood needs a DiffusionSDE, got {type(sde).__name__}")
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0 or not x.is_floating_point():
        raise DiffusionInputError(
            f"x must be a floating-point tensor [B, ...] with a batch and an event dimension, got "
            f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )
    if not bool(torch.isfinite(x).all()):
        raise DiffusionInputError("x has NaN or infinite entries")
    if divergence not in ("exact", "hutchinson"):
        raise DiffusionInputError(f"unknown divergence {divergence!r}; choose 'exact' or 'hutchinson'")
    if probe not in ("rademacher", "gaussian"):
        raise DiffusionInputError(f"unknown probe {probe!r}; choose 'rademacher' or 'gaussian'")
    if not isinstance(num_probes, int) or isinstance(num_probes, bool) or num_probes <= 0:
        raise DiffusionInputError(f"num_probes must be a positive int, got {num_probes!r}")
    if not 0 < t_eps < sde.T:
        raise DiffusionInputError(f"t_eps must lie in (0, T={sde.T}), got {t_eps!r}")
    if method not in ODE_METHODS:
        raise DiffusionInputError(f"unknown ODE method {method!r}; choose one of {sorted(ODE_METHODS)}")

    shape, batch = tuple(x.shape), x.shape[0]
    dim = x[0].numel()
    if divergence == "exact":
        probes = torch.eye(dim, dtype=x.dtype, device=x.device)[:, None, :].expand(dim, batch, dim)
    elif probe == "rademacher":
        bits = torch.randint(0, 2, (num_probes, batch, dim), generator=generator, device=x.device)
        probes = (2 * bits - 1).to(x.dtype)
    else:
        probes = torch.randn(num_probes, batch, dim, generator=generator, dtype=x.dtype, device=x.device)
    # Exact: Σ_i e_iᵀ J e_i is the trace itself; Hutchinson: the mean over probes.
    weight = 1.0 if divergence == "exact" else 1.0 / num_probes

    def augmented(t: Tensor, state: Tensor) -> Tensor:
        """``d/dt [x, ∫ div f̃] = [f̃(x, t), div f̃(x, t)]`` on ``[B, D + 1]``."""
        t64 = t.detach().to(torch.float64)
        sigma = sde.marginal(t64)[1].to(x.dtype)
        g2 = sde.diffusion(t64).to(x.dtype) ** 2
        with torch.enable_grad():
            flat = state[:, :dim].detach().requires_grad_(True)
            xt = flat.reshape(shape)
            eps = model(xt, torch.full((batch,), float(t), dtype=x.dtype, device=x.device))
            _check_eps(eps, xt)
            # f̃ = f - g² score / 2 = f + g² eps / (2 sigma)
            field = (sde.drift(xt, t.to(x.dtype)) + 0.5 * g2 * eps / sigma).reshape(batch, dim)
            div = torch.zeros(batch, dtype=x.dtype, device=x.device)
            for k, v in enumerate(probes):
                (vjp,) = torch.autograd.grad(field, flat, grad_outputs=v, retain_graph=k + 1 < len(probes))
                div = div + (vjp * v).sum(1)
        return torch.cat([field.detach(), weight * div.detach()[:, None]], dim=1)

    state0 = torch.cat([x.detach().reshape(batch, dim), torch.zeros(batch, 1, dtype=x.dtype, device=x.device)], 1)
    times = torch.tensor([t_eps, sde.T], dtype=x.dtype, device=x.device)
    with torch.no_grad():
        # Adaptive steps must end at T: torchdiffeq otherwise steps past it and interpolates, evaluating the
        # model beyond T (where the cosine VP-SDE's β diverges).
        options = {"step_t": times} if ODE_METHODS[method].adaptive else None
        end = solve_ode(augmented, state0, times, method=method, rtol=rtol, atol=atol, options=options).ys[:, -1]
    x_T, integral = end[:, :dim].reshape(shape), end[:, dim]
    return sde.prior_log_prob(x_T).to(x.dtype) + integral
