"""Latent ODE (nde.irregular.latent_ode): the ELBO's pieces against closed forms and references, and fits."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from nde.irregular import IrregularModel
from nde.irregular.latent_ode import LatentODEModel, LatentODENetwork, gaussian_kl_standard
from nde.solvers import solve_ode
from tests.nde.irregular.test_ode_rnn import damped_sinusoids, last_value_crps, random_batch, spirals

SMALL = {"latent": 3, "hidden": 6, "width": 8, "depth": 1, "method": "rk4", "ode_steps": 1,
         "decoder_step_size": 0.05, "train_samples": 2, "kl_warmup_steps": 0}


def forecast_inputs(lengths: list[int], q: int = 3, seed: int = 0, dtype=torch.float64) -> dict:
    x = random_batch(lengths, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    b = len(lengths)
    gaps = torch.cumsum(torch.rand(b, q, generator=g, dtype=dtype) * 0.2 + 0.05, dim=1)
    x["target_times"] = x["times"][:, -1:] + gaps
    x["target_mask"] = (torch.rand(b, q, 2, generator=g) < 0.6).to(dtype)
    x["target_values"] = torch.randn(b, q, 2, generator=g, dtype=dtype) * x["target_mask"]
    x["target_lengths"] = torch.full((b,), q)
    return x


# --------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"latent": 0}, "latent must be an int >= 1"),
    ({"hidden": -2}, "hidden must be an int >= 1"),
    ({"train_samples": 0}, "train_samples must be an int >= 1"),
    ({"kl_warmup_steps": -1}, "kl_warmup_steps must be an int >= 0"),
    ({"depth": 1.0}, "depth must be an int >= 0"),
    ({"method": "dopri5"}, "method must be one of"),
    ({"decoder_step_size": 0.0}, "decoder_step_size must be a finite number > 0"),
    ({"decoder_step_size": math.nan}, "decoder_step_size must be a finite number > 0"),
    ({"decoder_step_size": "0.1"}, "decoder_step_size must be a finite number > 0"),
    ({"elbo_weight": -1.0}, "elbo_weight must be a finite number >= 0"),
    ({"task": "regress"}, "supports tasks"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentODEModel(**kwargs)


def test_classify_only_network_parts_raise_without_a_head():
    net = LatentODENetwork(2, **SMALL)
    with pytest.raises(RuntimeError, match="no classifier head"):
        net(random_batch([3]))


# --------------------------------------------------------------------------- the ELBO, piece by piece
def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean = torch.randn(5, 4, dtype=torch.float64)
    std = torch.rand(5, 4, dtype=torch.float64) * 2 + 0.05
    want = kl_divergence(Normal(mean, std), Normal(torch.zeros_like(mean), torch.ones_like(std))).sum(-1)
    torch.testing.assert_close(gaussian_kl_standard(mean, std), want, rtol=1e-12, atol=1e-12)
    assert gaussian_kl_standard(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0.0


def test_decoder_matches_an_adaptive_solve_at_each_series_times():
    """Shared fixed grid + linear interpolation agrees with dopri5 (rtol 1e-10) solved per series at its own times."""
    torch.manual_seed(1)
    net = LatentODENetwork(2, **{**SMALL, "decoder_step_size": 2e-3}).double()
    z0 = torch.randn(2, 3, 3, dtype=torch.float64)  # [K, B, D]
    query = torch.sort(torch.rand(3, 4, dtype=torch.float64) * 1.5, dim=1).values + 0.01
    got = net.decode(z0, query)
    for k in range(2):
        for b in range(3):
            times = torch.cat([torch.zeros(1, dtype=torch.float64), query[b]])
            path = solve_ode(net.dynamics, z0[k, b][None], times, method="dopri5", rtol=1e-10, atol=1e-12).ys
            torch.testing.assert_close(got[k, b], net.readout(path[0, 1:]), rtol=0, atol=2e-5)


def test_negative_elbo_equals_a_direct_computation():
    """With fixed draws ``eps``: ``[-Σ_k log N(x_obs | W z_k(t) + b, σ²) / K + Σ_b KL] / N_obs`` over context and
    targets, computed here with torch.distributions."""
    torch.manual_seed(2)
    net = LatentODENetwork(2, **SMALL).double().eval()
    with torch.no_grad():
        net.raw_obs_std.copy_(torch.tensor([-0.7, 0.4]))
    x = forecast_inputs([5, 3, 4])
    eps = torch.randn(4, 3, 3, dtype=torch.float64)
    mean, std = net.posterior(x)
    query = torch.cat([x["times"], x["target_times"]], 1)
    values = torch.cat([x["values"], x["target_values"]], 1)
    mask = torch.cat([x["mask"], x["target_mask"]], 1).bool()
    pred = net.decode(mean + std * eps, query)
    sigma = nn.functional.softplus(net.raw_obs_std + 0.5413) + 1e-3
    log_lik = Normal(pred, sigma).log_prob(values.expand_as(pred))[mask.expand_as(pred)].sum() / 4
    kl = kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum()
    want = (-log_lik + kl) / mask.sum()
    torch.testing.assert_close(net.negative_elbo(x, eps=eps), want, rtol=1e-12, atol=1e-12)
    # context only (the classification objective's ELBO)
    pred_c = net.decode(mean + std * eps, x["times"])
    m_c = x["mask"].bool()
    log_lik_c = Normal(pred_c, sigma).log_prob(x["values"].expand_as(pred_c))[m_c.expand_as(pred_c)].sum() / 4
    torch.testing.assert_close(net.negative_elbo(x, eps=eps, with_targets=False), (-log_lik_c + kl) / m_c.sum())


def test_monte_carlo_elbo_is_unbiased_for_a_linear_decoder():
    """With ``g = 0`` and one observation per series the expected log-likelihood has a closed form:
    ``E log N(x | w·z + b, σ²) = log N(x | w·μ + b, σ²) - Σ w_d² s_d² / (2σ²)``; the Monte-Carlo ELBO
    (20 000 draws) matches it within 3 standard errors (estimated from 20 batches of 1000)."""
    torch.manual_seed(3)
    net = LatentODENetwork(1, **SMALL).double().eval().requires_grad_(False)
    last = net.dynamics.net[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    net.to_posterior[-1].bias.add_(torch.tensor([0.0, 0.0, 0.0, 2.0, 1.5, 2.5], dtype=torch.float64))  # s ~ 0.6 .. 1
    x = {"times": torch.zeros(2, 1, dtype=torch.float64), "values": torch.tensor([[[0.7]], [[-1.2]]]).double(),
         "mask": torch.ones(2, 1, 1, dtype=torch.float64), "lengths": torch.tensor([1, 1])}
    mean, std = net.posterior(x)
    w, b = net.readout.weight[0], net.readout.bias[0]
    sigma = net.obs_std[0]
    exact_ll = Normal(mean @ w + b, sigma).log_prob(x["values"][:, 0, 0]) - (w**2 * std**2).sum(-1) / (2 * sigma**2)
    exact = (-exact_ll.sum() + gaussian_kl_standard(mean, std).sum()) / 2
    batches = torch.stack([net.negative_elbo(x, eps=torch.randn(1000, 2, 3, dtype=torch.float64))
                           for _ in range(20)])  # 20 estimates of 1000 draws each
    estimate, se = float(batches.mean()), float(batches.std()) / math.sqrt(20)
    assert abs(estimate - float(exact)) < 3 * se
    # sharp enough to tell the expectation from the plug-in value at the posterior mean
    plug_in = (-Normal(mean @ w + b, sigma).log_prob(x["values"][:, 0, 0]).sum()
               + gaussian_kl_standard(mean, std).sum()) / 2
    assert abs(float(plug_in - exact)) > 10 * se


def test_kl_warmup_schedule_and_its_counter_is_saved():
    net = LatentODENetwork(2, **{**SMALL, "kl_warmup_steps": 4})
    net.train()
    assert [net.kl_weight() for _ in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert int(net.state_dict()["kl_steps"]) == 6
    net.eval()
    assert net.kl_weight() == 1.0 and int(net.kl_steps) == 6
    assert LatentODENetwork(2, **SMALL).train().kl_weight() == 1.0


def test_sample_moments_match_the_closed_form():
    """With ``g = 0``: ``x = W z0 + b + σ ε``, ``z0 ~ N(μ, s²)``, so per channel mean ``Wμ + b`` and variance
    ``Σ_d W_cd² s_d² + σ_c²``."""
    torch.manual_seed(4)
    net = LatentODENetwork(2, **SMALL).double().eval().requires_grad_(False)
    nn.init.zeros_(net.dynamics.net[-1].weight)
    nn.init.zeros_(net.dynamics.net[-1].bias)
    with torch.no_grad():
        net.raw_obs_std.copy_(torch.tensor([-1.0, 0.3]))
        net.to_posterior[-1].bias.add_(torch.tensor([0.0, 0.0, 0.0, 2.0, 1.5, 2.5]))  # posterior std ~ 0.2 .. 0.5
    x = forecast_inputs([4, 2], q=2)
    draws = net.sample(x, 40000)
    assert draws.shape == (40000, 2, 2, 2)
    mean, std = net.posterior(x)
    w = net.readout.weight
    want_mean = (mean @ w.T + net.readout.bias)[:, None, :].expand(2, 2, 2)
    want_var = ((std**2) @ (w**2).T + net.obs_std**2)[:, None, :].expand(2, 2, 2)
    torch.testing.assert_close(draws.mean(0), want_mean, rtol=0, atol=4 * float(want_var.max().sqrt()) / 200)
    torch.testing.assert_close(draws.var(0), want_var, rtol=0.03, atol=0)


def test_padding_invariance_shapes_and_gradients():
    torch.manual_seed(5)
    net = LatentODENetwork(2, **SMALL).double().eval()
    x = forecast_inputs([6, 2])
    alone = {k: v[1:] for k, v in x.items()}
    alone.update({k: x[k][1:, :2] for k in ("times", "values", "mask")})
    for a, b in zip(net.posterior(x), net.posterior(alone), strict=True):
        torch.testing.assert_close(a[1:], b, rtol=0, atol=1e-12)
    z0 = torch.randn(1, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(net.decode(z0, x["target_times"])[:, 1:],
                               net.decode(z0[:, 1:], alone["target_times"]), rtol=0, atol=1e-12)

    model = LatentODEModel(task="forecast", **{k: v for k, v in SMALL.items()})
    fnet = model.build_network(2, None).train()
    x32 = forecast_inputs([5, 3], dtype=torch.float32)
    draws = fnet.sample({k: v[:1] for k, v in x32.items()}, 3)
    assert draws.shape == (3, 1, 3, 2) and draws.dtype == torch.float32
    fnet.loss(x32).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fnet.parameters())

    cnet = LatentODEModel(task="classify", **SMALL).build_network(2, 3)
    x32["labels"] = torch.tensor([0, 2])
    assert cnet(x32).shape == (2, 3)
    cnet.loss(x32).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cnet.parameters())


# --------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def forecast_fit():
    train, test = damped_sinusoids(128, seed=0), damped_sinusoids(96, seed=1)
    model = LatentODEModel(task="forecast", forecast_fraction=0.25, latent=8, hidden=32, width=32, depth=1,
                           decoder_step_size=0.05, train_samples=1, kl_warmup_steps=100)
    start = time.perf_counter()
    model.fit(train, epochs=20, batch_size=16, lr=1e-2, device="cpu", seed=0)
    return model, test, time.perf_counter() - start


def test_forecast_beats_last_value_baseline(forecast_fit):
    model, test, seconds = forecast_fit
    metrics = model.predict(test, n_samples=200, seed=0).metrics()
    baseline = last_value_crps(model, test)
    print(f"latent_ode damped sinusoids: 20 epochs, {seconds:.1f} s, CRPS {metrics['crps']:.3f} "
          f"(last value {baseline:.3f}), coverage90 {metrics['coverage_90']:.2f}, mse {metrics['mse']:.4f}")
    assert metrics["crps"] < 0.7 * baseline
    assert 0.75 < metrics["coverage_90"] <= 1.0


def test_save_load_round_trip_and_future_times(forecast_fit, tmp_path):
    model, test, _ = forecast_fit
    loaded = IrregularModel.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, LatentODEModel) and loaded.hyper == model.hyper
    assert int(loaded.net.kl_steps) == int(model.net.kl_steps) > 0
    data = test.subset(range(10))
    a, b = model.predict(data, seed=3), loaded.predict(data, seed=3)
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    future = np.stack([t[-1] + np.array([0.5, 1.0, 2.0]) for t in data._times])
    pred = loaded.forecast(data, future, n_samples=20)
    assert pred.samples.shape == (20, 10, 3, 2) and torch.isfinite(pred.samples).all()


def test_spirals_classification():
    """Posterior-mean classifier trained jointly with the context's ELBO, on 128 thinned spirals."""
    data = spirals(thin=3)
    train, test = data.subset(range(128)), data.subset(range(500, 700))
    model = LatentODEModel(task="classify", latent=8, hidden=16, width=32, depth=1, decoder_step_size=0.05,
                           train_samples=1)
    start = time.perf_counter()
    model.fit(train, epochs=4, batch_size=16, lr=1e-2, device="cpu", seed=0)
    metrics = model.predict(test).metrics()
    print(f"latent_ode spirals: 4 epochs, {time.perf_counter() - start:.1f} s, "
          f"test accuracy {metrics['accuracy']:.3f}")
    assert metrics["accuracy"] >= 0.85


def test_interpolation_inside_the_window_beats_the_series_mean(forecast_fit):
    # Every other observation of each test series is held out; the Latent ODE reads its path at those
    # times given the rest. The baseline is each channel's Gaussian with the mean and std of the series'
    # kept observations, which knows the level but not where in the oscillation a hidden point lies.
    from nde.data import gaussian_crps

    model, test, _ = forecast_fit
    keep_t, keep_v, hide_t, hide_v = [], [], [], []
    for t, v in zip(test._times, test._values, strict=True):
        inner = np.arange(len(t))
        hidden = inner[1:-1:2]
        kept = np.setdiff1d(inner, hidden)
        keep_t.append(t[kept])
        keep_v.append(v[kept])
        hide_t.append(t[hidden])
        hide_v.append(v[hidden])
    context = test._replace(keep_t, keep_v)
    width = min(len(h) for h in hide_t)
    query = np.stack([h[:width] for h in hide_t])
    prediction = model.interpolate(context, query, n_samples=200, seed=0)
    assert prediction.samples.shape == (200, len(test), width, 2)
    truth = np.stack([h[:width] for h in hide_v])
    observed = ~np.isnan(truth)
    from nde.metrics import crps_from_samples

    crps = crps_from_samples(prediction.samples, torch.as_tensor(np.nan_to_num(truth))).numpy()[observed].mean()
    level = np.stack([np.nanmean(v, axis=0) for v in keep_v])[:, None, :]
    spread = np.stack([np.nanstd(v, axis=0) for v in keep_v])[:, None, :]
    baseline = gaussian_crps(np.broadcast_to(level, truth.shape), np.broadcast_to(spread, truth.shape),
                             np.nan_to_num(truth))[observed].mean()
    assert crps < 0.6 * baseline, (crps, baseline)
    with pytest.raises(ValueError, match="before the first observation"):
        model.interpolate(context.subset([0]), [float(keep_t[0][0]) - 1.0])


def test_models_that_read_the_series_at_its_end_refuse_to_interpolate():
    from nde.irregular.ode_rnn import ODERNNModel

    with pytest.raises(ValueError, match="does not interpolate"):
        ODERNNModel(task="forecast").interpolate(damped_sinusoids(2, seed=0), [1.0])
