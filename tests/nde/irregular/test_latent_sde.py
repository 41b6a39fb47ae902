"""The Latent SDE forecaster (nde.irregular.latent_sde): KL terms against closed forms, the law of its forecasts
against the exact law of its Euler scheme, padding, gradients, KL warm-up, persistence, bad inputs and a small
fit on a simulated Ornstein-Uhlenbeck process."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from nde.data import gaussian_crps
from nde.irregular import IrregularDataset, IrregularModel, forecast_split, get_model_class
from nde.irregular.latent_sde import LatentSDEModel, LatentSDENetwork
from nde.metrics import crps_from_samples


# ----------------------------------------------------------------------------- helpers
def _net(latent: int = 2, n_channels: int = 1, dt: float = 0.05, **kw) -> LatentSDENetwork:
    torch.manual_seed(0)
    settings = {"hidden": 8, "width": 16, "depth": 1, "method": "euler", "diffusion_width": 4,
                "diffusion_activation": "sigmoid", "obs_std_init": 0.5, "obs_std_floor": 1e-3, **kw}
    return LatentSDENetwork(n_channels, latent=latent, dt=dt, **settings)


def _pad(rows: list[list[float]]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max())
    times = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows])
    return times, lengths


def _inputs(context: list[list[float]], targets: list[list[float]], n_channels: int = 1, seed: int = 0
            ) -> dict[str, Tensor]:
    """Standard forecast inputs with random values at the given (per-series) context and target times."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for prefix, rows in (("", context), ("target_", targets)):
        times, lengths = _pad(rows)
        mask = (torch.arange(times.shape[1])[None, :] < lengths[:, None]).float()
        mask = mask.unsqueeze(-1).expand(*times.shape, n_channels).contiguous()
        values = torch.randn(*times.shape, n_channels, generator=g) * mask
        out.update({f"{prefix}times": times, f"{prefix}values": values, f"{prefix}mask": mask,
                    f"{prefix}lengths": lengths})
    return out


class _Constant(nn.Module):
    """Returns ``value`` for every row of its last argument, ``[N, size]`` (in its graph, so that Milstein's
    derivative of the diffusion exists: it is zero)."""

    def __init__(self, value: float, size: int) -> None:
        super().__init__()
        self.value, self.size = value, size

    def forward(self, *args: Tensor) -> Tensor:
        x = args[-1]
        return x.new_full((x.shape[0], self.size), self.value) + 0 * x.sum(-1, keepdim=True)


class _Linear(nn.Module):
    """Prior drift ``h(z) = -a z``."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return -self.a * z


def _simulate_ou(n_series: int, seed: int, theta: float = 0.5, mu: float = 1.0, sigma: float = 0.8,
                 rate: float = 4.0, length: float = 10.0) -> pd.DataFrame:
    """Stationary OU paths simulated exactly at Poisson(rate) times on [0, length] (at least 5 points)."""
    rng = np.random.default_rng(seed)
    var = sigma**2 / (2 * theta)
    rows = []
    for i in range(n_series):
        n = max(5, int(rng.poisson(rate * length)))
        t = np.sort(rng.uniform(0.0, length, n))
        x = np.empty(n)
        x[0] = mu + math.sqrt(var) * rng.standard_normal()
        for k in range(1, n):
            decay = math.exp(-theta * (t[k] - t[k - 1]))
            x[k] = mu + (x[k - 1] - mu) * decay + math.sqrt(var * (1 - decay**2)) * rng.standard_normal()
        rows.append(pd.DataFrame({"series_id": f"s{i}", "time": t, "x": x}))
    return pd.concat(rows, ignore_index=True)


def _ou_data(n_series: int, seed: int) -> IrregularDataset:
    return IrregularDataset.from_frame(_simulate_ou(n_series, seed), id_col="series_id", time_col="time")


# ----------------------------------------------------------------------------- KL terms
def test_path_kl_of_a_constant_drift_difference_is_half_c_over_s_squared_times_the_context_length():
    latent, c, s = 3, 0.7, 0.5
    net = _net(latent=latent, dt=0.05)
    net.posterior_drift = _Constant(c, latent)
    net.diffusion = _Constant(s, latent)
    # Context windows [0, 0.5], [0, 1.0] (on the step grid) and [0, 0.52] (not: counted to the nearest step).
    inputs = _inputs([[0.0, 0.3, 0.5], [0.0, 0.2, 0.6, 1.0], [0.0, 0.52]], [[0.8], [1.1, 1.3], [0.9]])
    with torch.no_grad():
        kl_path = net.elbo_terms(inputs)["kl_path"]
    per_time = 0.5 * (c / s) ** 2 * latent
    torch.testing.assert_close(kl_path, torch.tensor([0.5, 1.0, 0.5]) * per_time, rtol=1e-5, atol=1e-6)


def test_path_kl_is_zero_when_the_posterior_drift_equals_the_prior_drift():
    net = _net()
    net.posterior_drift = _Constant(0.0, 2)
    inputs = _inputs([[0.0, 0.4, 0.9]], [[1.2]])
    with torch.no_grad():
        assert float(net.elbo_terms(inputs)["kl_path"].abs().max()) == 0.0


def test_z0_kl_matches_the_gaussian_closed_form():
    net = _net(latent=3)
    with torch.no_grad():
        net.p0_mean.copy_(torch.tensor([0.3, -0.2, 1.0]))
        net.p0_log_std.copy_(torch.tensor([0.1, -0.5, 0.4]))
    inputs = _inputs([[0.0, 0.3, 0.5], [0.0, 0.2, 0.6, 1.0]], [[0.8], [1.1, 1.3]])
    with torch.no_grad():
        _, mq, sq = net.encode(inputs)
        kl0 = net.elbo_terms(inputs)["kl0"]
    mp, sp = net.p0_mean.detach(), net.p0_log_std.detach().exp()
    closed = (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    torch.testing.assert_close(kl0, closed, rtol=1e-5, atol=1e-6)


def test_loss_is_the_negative_elbo_per_observed_entry_with_the_warm_up_weight():
    net = _net(kl_warmup_steps=4)
    inputs = _inputs([[0.0, 0.3, 0.5], [0.0, 0.2, 0.6, 1.0]], [[0.8], [1.1, 1.3]])
    count = inputs["mask"].sum() + inputs["target_mask"].sum()
    for step in range(6):
        torch.manual_seed(step)
        terms = net.elbo_terms(inputs)
        net.train()
        torch.manual_seed(step)
        loss = net.loss(inputs)
        beta = min(1.0, step / 4)
        expected = (terms["nll"] + beta * (terms["kl0"] + terms["kl_path"]).sum()) / count
        torch.testing.assert_close(loss, expected)
        assert int(net.train_steps) == step + 1
    net.eval()
    assert net.kl_weight() == 1.0
    with torch.no_grad():
        net.train()
        net.loss(inputs)  # no gradient: not a training step
    assert int(net.train_steps) == 6


# ----------------------------------------------------------------------------- the law of the forecasts
@pytest.mark.parametrize("c", [0.0, 0.8])
def test_forecasts_follow_the_posterior_in_the_context_and_the_prior_after_it(c: float):
    """Linear prior ``dz = -a z dt + s dW``, posterior drift ``-a z + c`` up to the end of the context, identity
    decoder: the draws' mean and variance at the targets equal those of the exact Euler recursion, in which
    the extra drift ``c`` stops at the last context time (``c = 0``: the posterior is the prior)."""
    a, s, mu_q, sd_q, dt, obs = 1.5, 0.6, 0.4, 0.3, 0.02, 1e-3
    net = _net(latent=1, dt=dt, obs_std_floor=obs)
    net.prior_drift = _Linear(a)
    net.posterior_drift = _Constant(c, 1)
    net.diffusion = _Constant(s, 1)
    with torch.no_grad():
        net.decoder.weight.fill_(1.0)
        net.decoder.bias.zero_()
        net.obs_std_raw.fill_(-30.0)
        net.q0.weight.zero_()
        net.q0.bias.copy_(torch.tensor([mu_q, math.log(math.expm1(sd_q - 1e-4))]))
    inputs = _inputs([[0.0, 0.5, 1.0]], [[1.2, 1.5, 2.0]])
    torch.manual_seed(0)
    with torch.no_grad():
        draws = net.sample(inputs, 40_000)[:, 0, :, 0].double()  # [S, Q]
    assert draws.shape == (40_000, 3)
    # Exact mean and variance of the Euler scheme on the grid k * dt (every target lies on it).
    mean, var, expected = mu_q, sd_q**2, {}
    for k in range(100):
        t = k * dt
        mean, var = (1 - a * dt) * mean + (c * dt if t + dt / 2 < 1.0 else 0.0), (1 - a * dt) ** 2 * var + s**2 * dt
        expected[round(t + dt, 6)] = (mean, var + obs**2)
    exp_mean = torch.tensor([expected[q][0] for q in (1.2, 1.5, 2.0)], dtype=torch.float64)
    exp_var = torch.tensor([expected[q][1] for q in (1.2, 1.5, 2.0)], dtype=torch.float64)
    n = draws.shape[0]
    assert ((draws.mean(0) - exp_mean).abs() < 4 * (exp_var / n).sqrt()).all()
    assert ((draws.var(0) / exp_var - 1).abs() < 4 * math.sqrt(2 / n)).all()
    if c:  # had the extra drift continued after the context, the mean at t = 2 would be higher by about c/a (1 - e^-a)
        assert float(draws[:, 2].mean()) < float(exp_mean[2]) + 0.1


def test_sample_shape_dtype_and_fresh_noise_per_draw():
    net = _net(latent=2, n_channels=3)
    inputs = _inputs([[0.0, 0.4, 0.9]], [[1.0, 1.1]], n_channels=3)
    with torch.no_grad():
        draws = net.sample(inputs, 5)
    assert draws.shape == (5, 1, 2, 3) and draws.dtype == torch.float32
    assert torch.isfinite(draws).all()
    assert float(draws.std(0).min()) > 0


def test_encoder_is_unchanged_by_padding_next_to_a_longer_series():
    net = _net()
    alone = _inputs([[0.0, 0.3, 0.5]], [[0.8]])
    both = _inputs([[0.0, 0.3, 0.5], [0.0, 0.1, 0.2, 0.6, 0.7, 1.0]], [[0.8], [1.1, 1.3]])
    both["values"][0, :3] = alone["values"][0]
    with torch.no_grad():
        out1, m1, s1 = net.encode(alone)
        out2, m2, s2 = net.encode(both)
    torch.testing.assert_close(m2[:1], m1)
    torch.testing.assert_close(s2[:1], s1)
    torch.testing.assert_close(out2[:1, :3], out1)


def test_gradients_reach_every_parameter():
    net = _net(latent=2, n_channels=2)
    net.train()
    inputs = _inputs([[0.0, 0.3, 0.5], [0.0, 0.2, 0.6, 1.0]], [[0.8], [1.1, 1.3]], n_channels=2)
    net.loss(inputs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().max()) > 0, name


@pytest.mark.parametrize("method", ["milstein", "heun"])
def test_other_schemes_give_the_path_kl_of_constant_noise(method: str):
    """Milstein evaluates the drift at the step's start, as Euler: exact. Heun averages both ends, and the
    extra drift stops at the last context time: the last context step counts half (an O(dt) error)."""
    dt = 0.05
    net = _net(latent=2, method=method, dt=dt)
    net.posterior_drift = _Constant(0.4, 2)
    net.diffusion = _Constant(0.8, 2)
    inputs = _inputs([[0.0, 0.3, 0.5]], [[0.8]])
    with torch.no_grad():
        kl_path = net.elbo_terms(inputs)["kl_path"]
    per_time = 0.5 * 0.5**2 * 2
    length = 0.5 if method == "milstein" else 0.5 - dt / 2
    torch.testing.assert_close(kl_path, torch.tensor([per_time * length]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the model
def test_registered_and_forecast_only():
    assert get_model_class("latent_sde") is LatentSDEModel
    assert LatentSDEModel().task == "forecast"
    with pytest.raises(ValueError, match="supports tasks"):
        LatentSDEModel(task="classify")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"latent": 0}, "latent must be an int >= 1"),
    ({"hidden": 2.5}, "hidden must be an int"),
    ({"depth": -1}, "depth must be an int >= 0"),
    ({"dt": 0.0}, "dt must be a positive finite number"),
    ({"dt": math.inf}, "dt must be a positive finite number"),
    ({"method": "rk4"}, "method must be one of"),
    ({"diffusion_activation": "relu"}, "diffusion_activation must be one of"),
    ({"obs_std_init": 1e-4, "obs_std_floor": 1e-3}, "must exceed obs_std_floor"),
    ({"kl_warmup_epochs": -1}, "kl_warmup_epochs must be an int >= 0"),
    ({"kl_warmup_epochs": True}, "kl_warmup_epochs must be an int"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentSDEModel(**kwargs)


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError, match="no network"):
        LatentSDEModel().predict(_ou_data(3, seed=5))


_SMALL = {"latent": 2, "hidden": 16, "width": 32, "depth": 1, "dt": 0.05, "kl_warmup_epochs": 2}


def test_kl_warm_up_is_counted_in_optimiser_steps(tmp_path):
    data = _ou_data(20, seed=3)
    model = LatentSDEModel(**_SMALL)
    model.fit(data, epochs=2, batch_size=8, lr=1e-2)
    assert int(model.net.kl_warmup_steps) == 2 * 3  # 2 epochs of ceil(20 / 8) steps
    assert int(model.net.train_steps) == 2 * 3
    assert model.net.kl_weight() == 1.0  # eval mode after fit
    # Persistence: same draws after a save / load round trip, and the step counters travel with the weights.
    before = model.predict(data, n_samples=7, seed=3)
    loaded = IrregularModel.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, LatentSDEModel) and loaded.hyper == model.hyper
    after = loaded.predict(data, n_samples=7, seed=3)
    torch.testing.assert_close(after.samples, before.samples, rtol=0, atol=0)
    assert int(loaded.net.train_steps) == 6
    # Forecasts after the whole series (target times past every series' end).
    future = loaded.forecast(data, [10.5, 11.0, 12.0], n_samples=9)
    assert future.samples.shape == (9, len(data), 3, 1) and torch.isfinite(future.samples).all()


def _oracle_crps(data: IrregularDataset, forecast_fraction: float = 0.2, theta: float = 0.5, mu: float = 1.0,
                 sigma: float = 0.8) -> float:
    """Mean CRPS of the exact OU forecast: each target given the last context observation (Markov)."""
    context, target = forecast_split(data, forecast_fraction)
    scores = []
    for i in range(len(data)):
        s_ctx, s_tgt = context[i], target[i]
        decay = np.exp(-theta * (s_tgt.times.numpy() - float(s_ctx.times[-1])))
        mean = mu + (float(s_ctx.values[-1, 0]) - mu) * decay
        std = sigma / math.sqrt(2 * theta) * np.sqrt(1 - decay**2)
        scores.append(gaussian_crps(mean, std, s_tgt.values[:, 0].numpy()))
    return float(np.concatenate(scores).mean())


def test_small_fit_on_ou_is_calibrated_and_close_to_the_exact_forecast():
    """Seeded fit on 96 simulated OU paths, scored on 48 others: 90% intervals cover 80-97% of the targets, the
    CRPS is within 15% of the exact forecast's and well below that of the stationary law N(μ, σ²/2θ)."""
    train, test = _ou_data(96, seed=11), _ou_data(48, seed=12)
    model = LatentSDEModel(latent=2, hidden=16, width=32, depth=1, dt=0.05, kl_warmup_epochs=2)
    model.fit(train, epochs=15, batch_size=16, lr=2e-2, seed=0)
    pred = model.predict(test, n_samples=200, seed=0)
    scores = pred.metrics()
    observed = pred.observed[..., 0][pred.valid].numpy()
    stationary = float(gaussian_crps(1.0, 0.8, observed).mean())
    oracle = _oracle_crps(test)
    assert 0.80 <= scores["coverage_90"] <= 0.97, scores
    assert scores["crps"] < 1.15 * oracle, (scores, oracle)
    assert scores["crps"] < 0.9 * stationary, (scores, stationary)
    # Interpolation: every other inner observation of the test paths held out and read off the posterior
    # path given the rest; the OU bridge there is much narrower than the stationary law.
    keep = [np.setdiff1d(np.arange(len(t)), np.arange(1, len(t) - 1, 2)) for t in test._times]
    hidden = [np.arange(1, len(t) - 1, 2) for t in test._times]
    context = test._replace([t[k] for t, k in zip(test._times, keep, strict=True)],
                            [v[k] for v, k in zip(test._values, keep, strict=True)])
    width = min(len(h) for h in hidden)
    query = np.stack([t[h[:width]] for t, h in zip(test._times, hidden, strict=True)])
    truth = np.stack([v[h[:width], 0] for v, h in zip(test._values, hidden, strict=True)])
    inner = model.interpolate(context, query, n_samples=200, seed=0)
    assert inner.samples.shape == (200, len(test), width, 1)
    crps_inner = float(crps_from_samples(inner.samples[..., 0], torch.as_tensor(truth)).mean())
    assert crps_inner < 0.8 * float(gaussian_crps(1.0, 0.8, truth).mean()), crps_inner
