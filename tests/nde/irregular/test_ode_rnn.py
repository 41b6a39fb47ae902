"""ODE-RNN (nde.irregular.ode_rnn): the recurrence against closed forms, invariances, and fits that beat baselines."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nde.data
from nde.irregular import IrregularDataset, IrregularModel, forecast_split
from nde.irregular.base import gaussian_nll
from nde.irregular.ode_rnn import ODERNNEncoder, ODERNNModel


# --------------------------------------------------------------------------- helpers
def damped_sinusoids(n: int, seed: int, n_obs: int = 30, noise: float = 0.05) -> IrregularDataset:
    """Two channels ``e^{-0.05 t} (sin, cos)(ω t + φ)`` with random ``ω``, ``φ`` at 30 of 100 grid times in
    ``[0, 10]``, each channel missing with probability 1/4 (never both)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 10.0, 100)
    rows = []
    for i in range(n):
        t = np.sort(rng.choice(grid, n_obs, replace=False))
        w, phi = rng.uniform(0.4, 0.8), rng.uniform(0.0, 2 * np.pi)
        amp = np.exp(-0.05 * t)
        x = amp * np.sin(w * t + phi) + noise * rng.standard_normal(n_obs)
        y = amp * np.cos(w * t + phi) + noise * rng.standard_normal(n_obs)
        has_x = rng.random(n_obs) < 0.75
        has_y = (rng.random(n_obs) < 0.75) | ~has_x
        rows += [(f"s{i}", tt, a if ox else np.nan, b if oy else np.nan)
                 for tt, a, b, ox, oy in zip(t, x, y, has_x, has_y, strict=True)]
    frame = pd.DataFrame(rows, columns=["id", "t", "x", "y"])
    return IrregularDataset.from_frame(frame, id_col="id", time_col="t")


def last_value_crps(model: IrregularModel, data: IrregularDataset) -> float:
    """CRPS of the baseline ``N(last observed context value, training std²)`` per channel, in data units
    (closed form ``σ [z (2Φ(z) - 1) + 2 φ(z) - 1/√π]``), averaged over the observed target entries."""
    context, target = forecast_split(data, model.forecast_fraction)
    assert model.scaler is not None
    std = np.asarray(model.scaler.std)
    scores = []
    for ctx, tgt in zip(context._values, target._values, strict=True):
        last = np.array([ctx[~np.isnan(ctx[:, c]), c][-1] for c in range(ctx.shape[1])])
        z = torch.as_tensor((tgt - last) / std)
        phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        crps = torch.as_tensor(std) * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))
        scores.append(crps[~torch.isnan(crps)])
    return float(torch.cat(scores).mean())


def spirals(thin: int = 3) -> IrregularDataset:
    """The shipped spirals, every ``thin``-th observation of each series (still irregular)."""
    frame = pd.read_csv(nde.data.dataset_path("spirals") / "spirals.csv")
    frame = frame[frame.groupby("series_id").cumcount() % thin == 0]
    return IrregularDataset.from_frame(frame, id_col="series_id", time_col="time", label_col="label")


def random_batch(lengths: list[int], channels: int = 2, seed: int = 0, dtype=torch.float64) -> dict:
    """Standard inputs of series of the given lengths (padding repeats the last time, mask 0), with some
    entries unobserved."""
    g = torch.Generator().manual_seed(seed)
    b, length = len(lengths), max(lengths)
    times = torch.cumsum(torch.rand(b, length, generator=g, dtype=dtype) * 0.3 + 0.01, dim=1)
    times = times - times[:, :1]
    mask = (torch.rand(b, length, channels, generator=g) < 0.7).to(dtype)
    mask[..., 0] = torch.maximum(mask[..., 0], 1 - mask.amax(-1))  # at least one channel per real row
    for i, n in enumerate(lengths):
        times[i, n:] = times[i, n - 1]
        mask[i, n:] = 0.0
    values = torch.randn(b, length, channels, generator=g, dtype=dtype) * mask
    return {"times": times, "values": values, "mask": mask, "lengths": torch.tensor(lengths)}


def manual_ode_rnn(cell: nn.GRUCell, flow, times, values, mask) -> torch.Tensor:
    """Reference: one series at a time, only its observed rows, ``h <- GRU(x, flow(h, Δt))``."""
    out = []
    for b in range(times.shape[0]):
        h = torch.zeros(1, cell.hidden_size, dtype=values.dtype)
        t_prev = None
        for i in range(times.shape[1]):
            if mask[b, i].sum() == 0:
                continue
            if t_prev is not None:
                h = flow(h, float(times[b, i] - t_prev))
            h = cell(torch.cat([values[b, i], mask[b, i]])[None], h)
            t_prev = times[b, i]
        out.append(h)
    return torch.cat(out)


# --------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"hidden": 0}, "hidden must be an int >= 1"),
    ({"width": 2.5}, "width must be an int >= 1"),
    ({"depth": -1}, "depth must be an int >= 0"),
    ({"ode_steps": 0}, "ode_steps must be an int >= 1"),
    ({"decoder_steps": True}, "decoder_steps must be an int >= 1"),
    ({"method": "dopri5"}, "method must be one of"),
    ({"task": "regress"}, "supports tasks"),
    ({"forecast_fraction": 1.0}, "forecast_fraction"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ODERNNModel(**kwargs)


def test_encoder_rejects_mismatched_shapes():
    enc = ODERNNEncoder(2, 4, 8, 1)
    with pytest.raises(ValueError, match=r"values must have shape \[B, L, 2\]"):
        enc(torch.zeros(1, 3), torch.zeros(1, 3, 3), torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="do not match"):
        enc(torch.zeros(1, 4), torch.zeros(1, 3, 2), torch.ones(1, 3, 2))


# --------------------------------------------------------------------------- the recurrence, pinned
def test_zero_field_is_a_masked_gru():
    """With ``f = 0`` the ODE-RNN is a GRU over each series' observed rows (padding and gaps change nothing)."""
    torch.manual_seed(0)
    enc = ODERNNEncoder(2, 5, 8, 1).double()
    last = enc.field.net[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = random_batch([6, 3, 1])
    got = enc(x["times"], x["values"], x["mask"])
    want = manual_ode_rnn(enc.cell, lambda h, dt: h, x["times"], x["values"], x["mask"])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_linear_field_matches_the_matrix_exponential():
    """``f(h) = A h`` (depth 0, no bias): between observations ``h <- expm(A Δt_b) h`` with each series' own gaps;
    RK4 with 8 steps per gap agrees with the exact flow to 1e-6, and doubling the steps cuts the error ~16x."""
    torch.manual_seed(1)
    x = random_batch([7, 4, 5], seed=3)
    a = torch.tensor([[0.0, -3.0, 0.2, 0.0], [3.0, 0.0, 0.0, 0.1],
                      [0.0, 0.0, -1.0, 0.5], [0.3, 0.0, 0.0, -0.5]], dtype=torch.float64)
    errors = []
    for steps in (8, 16):
        enc = ODERNNEncoder(2, 4, 8, 0, method="rk4", ode_steps=steps).double()
        torch.manual_seed(1)
        enc.cell.reset_parameters()  # the same GRU weights for both step counts
        lin = enc.field.net[-1]
        with torch.no_grad():
            lin.weight.copy_(a)
            lin.bias.zero_()
        got = enc(x["times"], x["values"], x["mask"])
        want = manual_ode_rnn(enc.cell, lambda h, dt: h @ torch.linalg.matrix_exp(a * dt).T,
                              x["times"], x["values"], x["mask"])
        errors.append(float((got - want).abs().max().detach()))
    assert errors[0] < 1e-6
    assert 8 < errors[0] / errors[1] < 32  # fourth order
    # and the ODE does matter: with no flow between observations the result differs
    plain = manual_ode_rnn(enc.cell, lambda h, dt: h, x["times"], x["values"], x["mask"])
    assert (got - plain).abs().max() > 1e-2


def test_padding_and_empty_rows_change_nothing():
    torch.manual_seed(2)
    enc = ODERNNEncoder(2, 6, 16, 2).double()
    x = random_batch([3, 8], seed=5)
    batched = enc(x["times"], x["values"], x["mask"])
    alone = enc(x["times"][:1, :3], x["values"][:1, :3], x["mask"][:1, :3])
    torch.testing.assert_close(batched[:1], alone, rtol=0, atol=1e-12)
    # a row with no observed channel, inside the series at an intermediate time, is skipped
    t, v, m = (x[k][1:] for k in ("times", "values", "mask"))
    t2 = torch.cat([t[:, :4], (t[:, 3:4] + t[:, 4:5]) / 2, t[:, 4:]], dim=1)
    v2 = torch.cat([v[:, :4], torch.zeros_like(v[:, :1]), v[:, 4:]], dim=1)
    m2 = torch.cat([m[:, :4], torch.zeros_like(m[:, :1]), m[:, 4:]], dim=1)
    torch.testing.assert_close(enc(t2, v2, m2), batched[1:], rtol=0, atol=1e-12)
    # both directions too
    torch.testing.assert_close(enc(t2, v2, m2, reverse=True), enc(t, v, m, reverse=True), rtol=0, atol=1e-12)


def test_reverse_runs_the_series_backward_in_time():
    """``reverse=True`` equals the forward recurrence on the time-reversed series ``t' = T - t``."""
    torch.manual_seed(3)
    enc = ODERNNEncoder(2, 5, 16, 1, method="rk4", ode_steps=2).double()
    x = random_batch([6, 6], seed=7)
    t, v, m = x["times"], x["values"], x["mask"]
    flipped_t = t[:, -1:] - t.flip(1)
    torch.testing.assert_close(enc(t, v, m, reverse=True), enc(flipped_t, v.flip(1), m.flip(1)),
                               rtol=1e-12, atol=1e-12)


def test_networks_shapes_dtypes_and_gradients():
    torch.manual_seed(4)
    x = random_batch([5, 2], dtype=torch.float32)
    model = ODERNNModel(hidden=8, width=16, depth=1)
    net = model.build_network(2, 3)
    logits = net({k: v[:1] for k, v in x.items()})
    assert logits.shape == (1, 3) and logits.dtype == torch.float32
    nn.functional.cross_entropy(net(x), torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    fnet = ODERNNModel(task="forecast", hidden=8, width=16, depth=1).build_network(2, None)
    y = dict(x)
    y["target_times"] = x["times"][:, -1:] + torch.tensor([[0.1, 0.3, 0.4], [0.2, 0.2, 0.2]])
    y["target_values"] = torch.randn(2, 3, 2)
    y["target_mask"] = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])[..., None].expand(2, 3, 2).clone()
    y["target_lengths"] = torch.tensor([3, 1])
    fnet.loss(y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fnet.parameters())
    draws = fnet.sample({k: v[:1] for k, v in y.items()}, 4)
    assert draws.shape == (4, 1, 3, 2) and draws.dtype == torch.float32


def test_forecast_distribution_starts_at_unit_std_and_loss_is_the_gaussian_nll():
    torch.manual_seed(5)
    x = random_batch([4, 3], dtype=torch.float64)
    net = ODERNNModel(task="forecast", hidden=6, width=8, depth=1).build_network(2, None).double()
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)
    x["target_times"] = x["times"][:, -1:] + torch.tensor([[0.5, 1.0], [0.25, 0.25]], dtype=torch.float64)
    x["target_values"] = torch.randn(2, 2, 2, dtype=torch.float64)
    x["target_mask"] = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    mean, std = net.distribution(x)
    torch.testing.assert_close(std, torch.full_like(std, 1.01), rtol=0, atol=1e-4)
    assert mean.abs().max() == 0
    net.head.bias.data.normal_()
    mean, std = net.distribution(x)
    m = x["target_mask"].bool()
    want = -torch.distributions.Normal(mean[m], std[m]).log_prob(x["target_values"][m]).mean()
    torch.testing.assert_close(net.loss(x), want)
    torch.testing.assert_close(gaussian_nll(mean, std, x["target_values"], x["target_mask"]), want)


# --------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def spirals_fit():
    torch.manual_seed(0)
    data = spirals(thin=3)
    train, test = data.subset(range(128)), data.subset(range(500, 800))
    model = ODERNNModel(hidden=16, width=32, depth=1)
    start = time.perf_counter()
    model.fit(train, epochs=4, batch_size=16, lr=1e-2, device="cpu", seed=0)
    return model, test, time.perf_counter() - start


def test_spirals_classification_accuracy(spirals_fit):
    """128 training spirals (every 3rd observation, ~23 per series), 4 epochs: >= 0.95 on 300 held-out."""
    model, test, seconds = spirals_fit
    metrics = model.predict(test).metrics()
    print(f"ode_rnn spirals: 4 epochs, {seconds:.1f} s, test accuracy {metrics['accuracy']:.3f}, "
          f"auroc {metrics['auroc']:.3f}")
    assert metrics["accuracy"] >= 0.95


@pytest.fixture(scope="module")
def forecast_fit():
    train, test = damped_sinusoids(128, seed=0), damped_sinusoids(96, seed=1)
    model = ODERNNModel(task="forecast", forecast_fraction=0.25, hidden=32, width=32, depth=1)
    start = time.perf_counter()
    model.fit(train, epochs=12, batch_size=16, lr=1e-2, device="cpu", seed=0)
    return model, test, time.perf_counter() - start


def test_forecast_beats_last_value_baseline(forecast_fit):
    model, test, seconds = forecast_fit
    metrics = model.predict(test, n_samples=200, seed=0).metrics()
    baseline = last_value_crps(model, test)
    print(f"ode_rnn damped sinusoids: 12 epochs, {seconds:.1f} s, CRPS {metrics['crps']:.3f} "
          f"(last value {baseline:.3f}), coverage90 {metrics['coverage_90']:.2f}, mse {metrics['mse']:.4f}")
    assert metrics["crps"] < 0.5 * baseline
    assert 0.7 < metrics["coverage_90"] <= 1.0


def test_save_load_round_trip(forecast_fit, spirals_fit, tmp_path):
    for i, (model, test, _) in enumerate((forecast_fit, spirals_fit)):
        loaded = IrregularModel.load(model.save(tmp_path / str(i)))
        assert isinstance(loaded, ODERNNModel) and loaded.hyper == model.hyper
        a, b = model.predict(test.subset(range(20)), seed=3), loaded.predict(test.subset(range(20)), seed=3)
        if model.task == "forecast":
            torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
        else:
            torch.testing.assert_close(a.probabilities, b.probabilities, rtol=0, atol=0)


def test_forecast_at_future_times(forecast_fit):
    model, test, _ = forecast_fit
    data = test.subset(range(3))
    future = [t[-1] + np.array([0.5, 1.0, 2.0]) for t in data._times]
    pred = model.forecast(data, np.stack(future), n_samples=50)
    assert pred.samples.shape == (50, 3, 3, 2)
    assert torch.isfinite(pred.samples).all()
