"""Tests for nde.irregular.gru_d: the GRU-D bookkeeping against the paper's recursion, the network against
hand-stepped torch.nn.GRUCell references, padding invariance, fits on spirals and simulated forecasts,
save/load and bad hyperparameters."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nde.data import dataset_path
from nde.irregular import IrregularDataset, IrregularModel, Standardizer, get_model_class
from nde.irregular.base import standard_inputs
from nde.irregular.gru_d import GRUD, GRUDModel, grud_deltas, grud_features
from nde.metrics import crps_from_samples

NAN = math.nan


# --------------------------------------------------------------------------- small data
def small_dataset(seed: int = 0, n: int = 4, channels: int = 3) -> IrregularDataset:
    """Series of different lengths with random gaps in every channel (at least one channel per row)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = 3 + 2 * i
        t = np.cumsum(rng.uniform(0.1, 1.0, k))
        v = rng.standard_normal((k, channels))
        m = rng.random((k, channels)) < 0.5
        m[np.arange(k), rng.integers(0, channels, k)] = True
        v[~m] = NAN
        for j in range(k):
            rows.append((f"s{i}", t[j], *v[j], i % 2))
    df = pd.DataFrame(rows, columns=["id", "t", *[f"c{c}" for c in range(channels)], "label"])
    return IrregularDataset.from_frame(df, id_col="id", time_col="t", label_col="label")


def inputs_of(ds: IrregularDataset, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return standard_inputs(ds.batch(dtype=dtype))


def grud_reference(cell: nn.GRUCell, w_x, b_x, w_h, b_h, t, x, m, delta_input: bool = False) -> torch.Tensor:
    """GRU-D of one unpadded series ``t [n]``, ``x [n, C]``, ``m [n, C]`` by the paper's recursion."""
    n, c = x.shape
    h = torch.zeros(1, cell.hidden_size, dtype=x.dtype)
    delta = torch.zeros(c, dtype=x.dtype)
    x_last = torch.zeros(c, dtype=x.dtype)
    for i in range(n):
        if i > 0:
            gap = t[i] - t[i - 1]
            delta = torch.where(m[i - 1] > 0, gap, gap + delta)
        gamma_x = torch.exp(-torch.relu(w_x * delta + b_x))
        x_hat = m[i] * x[i] + (1 - m[i]) * (gamma_x * x_last + (1 - gamma_x) * 0.0)
        gamma_h = torch.exp(-torch.relu(w_h @ delta + b_h))
        inp = torch.cat([x_hat, m[i], delta] if delta_input else [x_hat, m[i]])
        h = cell(inp[None], gamma_h[None] * h)
        x_last = torch.where(m[i] > 0, x[i], x_last)
    return h[0]


# --------------------------------------------------------------------------- bookkeeping
def test_deltas_and_last_values_match_the_papers_recursion():
    ds = small_dataset()
    inputs = inputs_of(ds)
    feats = grud_features(inputs["times"], inputs["values"], inputs["mask"])
    assert torch.equal(grud_deltas(inputs["times"], inputs["mask"]), feats["delta"])
    for b in range(len(ds)):
        s = ds[b]
        n, c = s.values.shape
        delta = torch.zeros(c, dtype=torch.float64)
        x_last = torch.zeros(c, dtype=torch.float64)
        for i in range(n):
            if i > 0:  # δ_i = t_i - t_{i-1} after an observation at i-1, else that plus δ_{i-1}
                gap = s.times[i] - s.times[i - 1]
                delta = torch.where(s.mask[i - 1], gap, gap + delta)
                x_last = torch.where(s.mask[i - 1], s.values[i - 1], x_last)
            torch.testing.assert_close(feats["delta"][b, i], delta, rtol=0, atol=1e-12)
            torch.testing.assert_close(feats["x_last"][b, i], x_last, rtol=0, atol=0)
        # after the series: its last row counts as seen
        gap_end = torch.where(s.mask[-1], torch.zeros(()), delta)
        torch.testing.assert_close(feats["delta_end"][b], gap_end.double(), rtol=0, atol=1e-12)
        torch.testing.assert_close(feats["x_end"][b], torch.where(s.mask[-1], s.values[-1], x_last), rtol=0, atol=0)
    assert (feats["delta"][:, 0] == 0).all()


def test_deltas_by_hand_on_a_tiny_example():
    times = torch.tensor([[0.0, 1.0, 3.0, 4.5, 4.5]])  # last position is padding
    mask = torch.tensor([[[1, 0], [0, 0], [1, 1], [0, 1], [0, 0]]], dtype=torch.float32)
    # channel 0: seen at 0 and 3.0 -> δ = 0, 1, 3, 1.5, 1.5 ; channel 1: first seen at 3.0 -> 0, 1, 3, 1.5, 0
    expected = torch.tensor([[[0, 0], [1, 1], [3, 3], [1.5, 1.5], [1.5, 0]]])
    torch.testing.assert_close(grud_deltas(times, mask), expected)
    feats = grud_features(times, torch.ones(1, 5, 2), mask)
    torch.testing.assert_close(feats["delta_end"], torch.tensor([[1.5, 0.0]]))


# --------------------------------------------------------------------------- the network
def _cell_copy(net: GRUD) -> nn.GRUCell:
    ref = nn.GRUCell(net.cell.input_size, net.cell.hidden_size).double()
    ref.load_state_dict(net.cell.state_dict())
    return ref


@pytest.mark.parametrize("delta_input", [False, True])
def test_unit_decays_give_a_plain_masked_gru_over_forward_filled_values(delta_input):
    ds = small_dataset(1)
    inputs = inputs_of(ds)
    torch.manual_seed(0)
    net = GRUD(3, 8, delta_input=delta_input).double()
    with torch.no_grad():  # γ = exp(-max(0, 0·δ - 1000)) = 1 exactly
        for decay in (net.input_decay, net.hidden_decay):
            decay.weight.zero_()
            decay.bias.fill_(-1000.0)
    h, _ = net(inputs)
    ref = _cell_copy(net)
    deltas = grud_deltas(inputs["times"], inputs["mask"])
    for b in range(len(ds)):
        s = ds[b]
        hb = torch.zeros(1, 8, dtype=torch.float64)
        ffill = torch.zeros(3, dtype=torch.float64)
        for i in range(len(s.times)):
            ffill = torch.where(s.mask[i], s.values[i], ffill)
            m = s.mask[i].double()
            parts = [ffill, m, deltas[b, i]] if delta_input else [ffill, m]
            hb = ref(torch.cat(parts)[None], hb)
        torch.testing.assert_close(h[b], hb[0], rtol=0, atol=1e-12)


def test_network_equals_the_papers_recursion_with_active_decays():
    ds = small_dataset(2)
    inputs = inputs_of(ds)
    torch.manual_seed(1)
    net = GRUD(3, 6).double()
    with torch.no_grad():  # some rates clipped at 0 by max(0, .), some active
        net.input_decay.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        net.input_decay.bias.copy_(torch.tensor([-0.2, 0.1, 0.0]))
        net.hidden_decay.bias.uniform_(-0.5, 0.5)
    h, _ = net(inputs)
    ref = _cell_copy(net)
    d_x, d_h = net.input_decay, net.hidden_decay
    for b in range(len(ds)):
        s = ds[b]
        x = torch.nan_to_num(s.values)
        hb = grud_reference(ref, d_x.weight, d_x.bias, d_h.weight, d_h.bias, s.times, x, s.mask.double())
        torch.testing.assert_close(h[b], hb, rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", ["classify", "forecast"])
def test_padding_invariance_shapes_and_gradients(task):
    ds = small_dataset(3, n=3, channels=2)
    model = GRUDModel(task=task, hidden=8, width=16)
    model._setup(ds)
    net = model.net.double()
    if task == "forecast":
        model.scaler = Standardizer().fit(ds)
        full = model.prepare(ds)
        alone = model.prepare(ds.subset([0]))
        full = {k: v.double() if v.is_floating_point() else v for k, v in full.items()}
        alone = {k: v.double() if v.is_floating_point() else v for k, v in alone.items()}
        assert full["times"].shape[1] > alone["times"].shape[1]
        mean_f, std_f = net.distribution(full)
        mean_a, std_a = net.distribution(alone)
        q = int(alone["target_lengths"][0])
        torch.testing.assert_close(mean_f[0, :q], mean_a[0, :q], rtol=0, atol=1e-12)
        torch.testing.assert_close(std_f[0, :q], std_a[0, :q], rtol=0, atol=1e-12)
        draws = net.sample(alone, 5)
        assert draws.shape == (5, 1, alone["target_times"].shape[1], 2) and draws.dtype == torch.float64
        loss = net.loss(full)
    else:
        full, alone = inputs_of(ds), inputs_of(ds.subset([0]))
        out_f, out_a = net(full), net(alone)
        assert out_a.shape == (1, 2) and out_a.dtype == torch.float64
        torch.testing.assert_close(out_f[0], out_a[0], rtol=0, atol=1e-12)
        loss = nn.functional.cross_entropy(out_f, ds.labels)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forecast_std_starts_at_one():
    ds = small_dataset(4, n=2, channels=2)
    model = GRUDModel(task="forecast", hidden=4, width=8)
    model._setup(ds)
    with torch.no_grad():
        for p in model.net.head.parameters():
            p.zero_()
    model.scaler = Standardizer().fit(ds)
    _, std = model.net.distribution(model.prepare(ds))
    # softplus(0.5413) = log(1 + e^0.5413) = 1.0000 (to 4 digits), plus the 0.01 floor
    torch.testing.assert_close(std, torch.full_like(std, 1.01), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def spirals_fit():
    df = pd.read_csv(dataset_path("spirals") / "spirals.csv")
    ds = IrregularDataset.from_frame(df, id_col="series_id", time_col="time", label_col="label")
    train, test = ds.subset(range(160)), ds.subset(range(800, 1000))
    model = GRUDModel(hidden=16)
    # A module fixture runs before conftest's per-test single-thread setting: set it here too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        result = model.fit(train, epochs=10, batch_size=32, lr=1e-2, seed=0)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return model, test, result, seconds


def test_fit_classifies_spirals(spirals_fit):
    model, test, result, seconds = spirals_fit
    metrics = model.predict(test).metrics()
    print(f"\nGRU-D spirals: 160 train series, {result.epochs_run} epochs, {seconds:.1f} s, "
          f"test accuracy {metrics['accuracy']:.3f}, auroc {metrics['auroc']:.3f}")
    assert metrics["accuracy"] >= 0.9


def test_save_load_round_trip(spirals_fit, tmp_path):
    model, test, _, _ = spirals_fit
    model.save(tmp_path / "m")
    loaded = IrregularModel.load(tmp_path / "m")
    assert isinstance(loaded, GRUDModel) and loaded.hyper == model.hyper
    assert torch.equal(loaded.predict(test).probabilities, model.predict(test).probabilities)


def simulate_rotations(n: int, seed: int) -> IrregularDataset:
    """``(a sin(t + φ), a cos(t + φ)) + 0.1 noise`` at 25-39 uniform random times in ``[0, 10]``, each channel
    seen with probability 0.7 (at least one per row); random amplitude ``a`` and phase ``φ`` per series."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(25, 40))
        t = np.sort(rng.uniform(0, 10, k))
        a, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        x = a * np.sin(t + phase) + 0.1 * rng.standard_normal(k)
        y = a * np.cos(t + phase) + 0.1 * rng.standard_normal(k)
        mx = rng.random(k) < 0.7
        my = (rng.random(k) < 0.7) | ~mx
        rows += [(f"s{i}", t[j], x[j] if mx[j] else NAN, y[j] if my[j] else NAN) for j in range(k)]
    return IrregularDataset.from_frame(pd.DataFrame(rows, columns=["id", "t", "x", "y"]), id_col="id", time_col="t")


def test_forecast_beats_climatology_and_round_trips(tmp_path):
    train, test = simulate_rotations(300, 0), simulate_rotations(100, 1)
    model = GRUDModel(task="forecast", hidden=32)
    start = time.perf_counter()
    result = model.fit(train, epochs=15, batch_size=32, lr=1e-2, seed=0)
    seconds = time.perf_counter() - start
    pred = model.predict(test, n_samples=200)
    metrics = pred.metrics()
    # trivial baseline: the training distribution of each channel, N(mean, std)
    hit = ~torch.isnan(pred.observed) & pred.valid.unsqueeze(-1)
    y = torch.nan_to_num(pred.observed)
    gen = torch.Generator().manual_seed(0)
    mean, std = torch.tensor(model.scaler.mean), torch.tensor(model.scaler.std)
    clim = mean + std * torch.randn((200, *y.shape), generator=gen, dtype=torch.float64)
    crps_clim = float(crps_from_samples(clim, y)[hit].mean())
    print(f"\nGRU-D rotations forecast: 300 train series, {result.epochs_run} epochs, {seconds:.1f} s, "
          f"CRPS {metrics['crps']:.3f} vs climatology {crps_clim:.3f}, mse {metrics['mse']:.3f}, "
          f"coverage 90% {metrics['coverage_90']:.3f}, 50% {metrics['coverage_50']:.3f}")
    assert metrics["crps"] < 0.6 * crps_clim
    assert 0.7 <= metrics["coverage_90"] <= 0.99

    # forecast(...) after the whole series, and an identical reload
    future = [10.5, 11.0]
    fc = model.forecast(test.subset([0, 1]), future, n_samples=7)
    assert fc.samples.shape == (7, 2, 2, 2)
    model.save(tmp_path / "f")
    loaded = GRUDModel.load(tmp_path / "f")
    assert torch.equal(loaded.predict(test, n_samples=20).samples, model.predict(test, n_samples=20).samples)


# --------------------------------------------------------------------------- errors
def test_registered_name():
    assert get_model_class("gru") is GRUDModel and GRUDModel.name == "gru"


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": 0}, "hidden"),
    ({"hidden": True}, "hidden"),
    ({"hidden": 8.0}, "hidden"),
    ({"width": -1}, "width"),
    ({"depth": -1}, "depth"),
    ({"delta_input": "yes"}, "delta_input"),
    ({"task": "impute"}, "supports tasks"),
    ({"forecast_fraction": 1.0}, "forecast_fraction"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRUDModel(**kwargs)


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match="times"):
        grud_deltas(torch.zeros(2, 3), torch.zeros(2, 4, 1))
