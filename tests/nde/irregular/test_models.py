"""The fit/predict/save/load interface (nde.irregular.base), the Neural CDE model and the scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from nde.data import dataset_path, gaussian_crps
from nde.irregular import (
    ClassPrediction,
    IrregularDataError,
    IrregularDataset,
    IrregularModel,
    ModelFileError,
    NeuralCDEModel,
    forecast_split,
    get_model_class,
)
from nde.irregular.base import interpolate_path
from nde.metrics import binary_auroc, crps_from_samples, interval_coverage, macro_auroc


def _spirals(n_series: int, labelled: bool = True) -> IrregularDataset:
    frame = pd.read_csv(dataset_path("spirals") / "spirals.csv")
    keep = frame["series_id"].isin(frame["series_id"].unique()[:n_series])
    frame = frame[keep]
    if not labelled:
        frame = frame.drop(columns=["label"])
    return IrregularDataset.from_frame(frame, id_col="series_id", time_col="time",
                                       label_col="label" if labelled else None)


# ----------------------------------------------------------------------------- scores
def test_crps_from_samples_equals_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(37, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    direct = (samples - y).abs().mean(0) - 0.5 * (samples[:, None] - samples[None, :]).abs().mean((0, 1))
    torch.testing.assert_close(crps_from_samples(samples, y), direct, rtol=1e-12, atol=1e-12)


def test_crps_from_many_gaussian_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(1)
    mean, std = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    y = torch.tensor([0.3, 2.0, -2.5], dtype=torch.float64)
    samples = mean + std * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    exact = gaussian_crps(mean.numpy(), std.numpy(), y.numpy())
    # Monte Carlo error: |X - y| has a standard deviation below std, so 4 std / sqrt(S) bounds it.
    # (The empirical-distribution CRPS is also biased low by std / (sqrt(pi) S): negligible here.)
    tolerance = 4 * std.numpy() / math.sqrt(200_000)
    assert (np.abs(crps_from_samples(samples, y).numpy() - exact) < tolerance).all()


def test_interval_coverage_of_exact_quantiles():
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(4000, 1000, generator=g, dtype=torch.float64)
    y = torch.randn(1000, generator=g, dtype=torch.float64)
    cover = interval_coverage(samples, y, 0.9).double().mean().item()
    assert abs(cover - 0.9) < 3 * math.sqrt(0.09 / 1000) + 0.01
    with pytest.raises(ValueError, match="level"):
        interval_coverage(samples, y, 1.0)
    with pytest.raises(ValueError, match="shape"):
        crps_from_samples(samples, y[:10])


def test_auroc_against_counting_pairs():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # positives {0.35, 0.8, 0.4} vs negatives {0.1, 0.4}: wins 1 + 2 + 1, one tie -> (4 + 0.5) / 6
    assert binary_auroc(scores, labels) == pytest.approx(4.5 / 6)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    assert macro_auroc(probs, torch.tensor([0, 1, 2, 1])) == pytest.approx(1.0)
    # Labels 1, 1, 2, 0: one-vs-rest AUROCs 2/3 (class 0: 0.5 beats 0.2 and 0.1, not 0.8), 1/2, 1.
    assert macro_auroc(probs, torch.tensor([1, 1, 2, 0])) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_interpolate_path_is_exact_on_a_linear_path():
    grid = torch.linspace(0, 2, 9, dtype=torch.float64)
    slope = torch.tensor([1.0, -3.0], dtype=torch.float64)
    path = (grid[:, None] * slope).expand(4, 9, 2)  # [B, G, H]
    query = torch.rand(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    out = interpolate_path(grid, path, query)
    torch.testing.assert_close(out, query[..., None] * slope)
    samples = torch.stack([path, 2 * path])  # leading sample dimension
    torch.testing.assert_close(interpolate_path(grid, samples, query)[1], 2 * query[..., None] * slope)


# ----------------------------------------------------------------------------- data plumbing
def test_forecast_split_follows_the_documented_rule():
    frame = pd.DataFrame({"id": ["a"] * 5 + ["b"] * 2, "t": [0.0, 1.0, 2.0, 7.9, 10.0, 3.0, 4.0],
                          "x": [1.0, 2, 3, 4, 5, 6, 7]})
    data = IrregularDataset.from_frame(frame, id_col="id", time_col="t")
    context, target = forecast_split(data, 0.2)
    assert context[0].times.tolist() == [0.0, 1.0, 2.0, 7.9] and target[0].times.tolist() == [10.0]
    assert context[1].times.tolist() == [3.0] and target[1].times.tolist() == [4.0]
    one = IrregularDataset.from_frame(frame.iloc[:1], id_col="id", time_col="t")
    with pytest.raises(IrregularDataError, match=r"'a'.*at least 2"):
        forecast_split(one, 0.2)
    with pytest.raises(ValueError, match="forecast_fraction"):
        forecast_split(data, 1.0)


def test_model_registry_and_bad_arguments():
    assert get_model_class("ncde") is NeuralCDEModel
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        get_model_class("transformer")
    with pytest.raises(ValueError, match="supports tasks"):
        NeuralCDEModel(task="segment")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="forecast_fraction"):
        NeuralCDEModel(task="forecast", forecast_fraction=0.0)
    with pytest.raises(RuntimeError, match="fit"):
        NeuralCDEModel().predict(_spirals(4))
    with pytest.raises(TypeError, match="IrregularDataset"):
        NeuralCDEModel().fit(pd.DataFrame())  # type: ignore[arg-type]
    with pytest.raises(IrregularDataError, match="labels"):
        NeuralCDEModel().fit(_spirals(4, labelled=False), epochs=1)


# ----------------------------------------------------------------------------- the Neural CDE model
def _trends(n_series: int, seed: int) -> IrregularDataset:
    """Rising (label 1) or falling (label 0) noisy lines at irregular times, 8-20 points, a noise channel."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_series):
        label = i % 2
        times = np.sort(rng.uniform(0, 5, size=rng.integers(8, 21)))
        level = rng.normal()
        for t in times:
            rows.append((f"s{i}", t, level + (0.5 if label else -0.5) * t + 0.3 * rng.normal(), rng.normal(), label))
    frame = pd.DataFrame(rows, columns=["id", "t", "x", "noise", "label"])
    return IrregularDataset.from_frame(frame, id_col="id", time_col="t", label_col="label")


@pytest.fixture(scope="module")
def fitted_classifier() -> tuple[NeuralCDEModel, IrregularDataset]:
    train, val, test = _trends(160, seed=0).split((0.6, 0.2, 0.2), seed=0)
    model = NeuralCDEModel(hidden=8, width=16)
    model.fit(train, val, epochs=15, batch_size=16, lr=1e-2, seed=0, device="cpu")
    return model, test


def test_ncde_classifier_learns_the_trend(fitted_classifier):
    model, test = fitted_classifier
    prediction = model.predict(test)
    assert isinstance(prediction, ClassPrediction)
    assert prediction.probabilities.shape == (len(test), 2)
    torch.testing.assert_close(prediction.probabilities.sum(-1), torch.ones(len(test), dtype=torch.float64))
    metrics = prediction.metrics()
    assert metrics["accuracy"] >= 0.9 and metrics["auroc"] >= 0.95, metrics
    frame = prediction.to_frame()
    assert list(frame.columns) == ["series_id", "predicted", "p_0", "p_1", "label"]
    assert (frame["predicted"] == frame["label"]).mean() == pytest.approx(metrics["accuracy"])


def test_ncde_prediction_does_not_depend_on_the_batch_it_is_padded_in(fitted_classifier):
    model, test = fitted_classifier
    lengths = test.lengths
    short = int(lengths.argmin())
    together = model.predict(test).probabilities[short]
    alone = model.predict(test.subset([short])).probabilities[0]
    assert lengths[short] < lengths.max()
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_and_bad_model_folders(fitted_classifier, tmp_path):
    model, test = fitted_classifier
    model.save(tmp_path / "m")
    again = IrregularModel.load(tmp_path / "m")
    assert isinstance(again, NeuralCDEModel) and again.hyper == model.hyper
    torch.testing.assert_close(again.predict(test).probabilities, model.predict(test).probabilities)
    with pytest.raises(ModelFileError, match="not a saved model"):
        IrregularModel.load(tmp_path / "nothing")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"] = "nope"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="unknown model 'nope'"):
        IrregularModel.load(tmp_path / "m")
    config["model"], config["format"] = "ncde", 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="format 99"):
        IrregularModel.load(tmp_path / "m")


def test_predict_refuses_other_channels(fitted_classifier):
    model, _ = fitted_classifier
    frame = pd.DataFrame({"id": ["a", "a"], "t": [0.0, 1.0], "x": [1.0, 2.0], "z": [0.0, 1.0], "label": [0, 0]})
    other = IrregularDataset.from_frame(frame, id_col="id", time_col="t", label_col="label")
    with pytest.raises(IrregularDataError, match="channels"):
        model.predict(other)


def test_ncde_forecaster_beats_the_climatological_forecast_and_forecasts_future_times():
    # Slow sine waves with a random phase: the context pins the phase, so a forecast can be sharp.
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        times = np.sort(rng.uniform(0, 6, size=30))
        phase = rng.uniform(0, 2 * np.pi)
        rows += [(f"s{i}", t, math.sin(t + phase) + 0.05 * rng.normal()) for t in times]
    data = IrregularDataset.from_frame(pd.DataFrame(rows, columns=["id", "t", "x"]), id_col="id", time_col="t")
    train, val, test = data.split((0.7, 0.15, 0.15), seed=0)
    model = NeuralCDEModel("forecast", hidden=16, width=32, forecast_fraction=0.2)
    model.fit(train, val, epochs=15, batch_size=16, lr=1e-2, seed=0, device="cpu")
    scores = model.predict(test, n_samples=200).metrics()
    _, targets = forecast_split(test, 0.2)
    y = np.concatenate([targets[i].values.numpy()[:, 0] for i in range(len(targets))])
    # Climatology: N(0, 1/2), the marginal law of sin with a uniform phase.
    climatology = float(np.mean(gaussian_crps(0.0, math.sqrt(0.5), y)))
    assert scores["crps"] < 0.6 * climatology, (scores, climatology)
    future = model.forecast(test.subset([0, 1]), [6.5, 7.0], n_samples=50)
    assert future.samples.shape == (50, 2, 2, 1) and future.valid.all()
    assert future.to_frame()["time"].tolist() == [6.5, 7.0, 6.5, 7.0]
    with pytest.raises(ValueError, match="not after the last observation"):
        model.forecast(test.subset([0]), [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        model.forecast(test.subset([0]), [7.0, 6.5])
