"""Tests of the shipped real forecasting sets (taylor, sunspots) and of their conversion scripts.

The conversion from the pmdarima wheel runs only when ``PMDARIMA_WHEEL`` names a pmdarima-2.1.1 wheel
(the tests never download); the shipped files are pinned by their SHA-256 either way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from nde.data.registry import available_datasets, dataset_path
from nde.data.timeseries import load_time_series, rolling_test_windows

ROOT = Path(__file__).resolve().parents[3] / "datasets"
SHA256 = {
    "taylor": "a0c3f074a473ac4015ce7b53a20466541aebcc3bef514d538af2f969c8f8d888",
    "sunspots": "12254ed052ab89b294d0e9330d9150fe521bf2efd11c6240cc12c2a84f6be012",
}
WHEEL = os.environ.get("PMDARIMA_WHEEL")


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"make_{name}", ROOT / name / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["taylor", "sunspots"])
def test_shipped_files(name: str) -> None:
    assert name in available_datasets()
    folder = dataset_path(name)
    for file in (f"{name}.csv", "README.md", "make.py"):
        assert (folder / file).is_file(), file
    assert hashlib.sha256((folder / f"{name}.csv").read_bytes()).hexdigest() == SHA256[name]


def test_taylor_series() -> None:
    series = load_time_series("taylor")
    assert series.item_ids == ("taylor",) and series.freq == "30min"
    values = series.values[0]
    assert len(values) == 4032 == 84 * 48
    assert series.starts[0] == pd.Timestamp("2000-06-05") and series.starts[0].day_of_week == 0  # a Monday
    assert series.timestamps(0)[-1] == pd.Timestamp("2000-08-27 23:30")
    # The first values as printed in pmdarima's docstring of load_taylor.
    np.testing.assert_array_equal(values[:10], [22262, 21756, 22247, 22759, 22549, 22313, 22128, 21860, 21751, 21336])
    assert values.min() == 18640 and values.max() == 38777 and not np.isnan(values).any()
    # Demand peaks in the day and dips at night: mean by half-hour of day, 12:00 vs 04:00.
    by_slot = values.reshape(84, 48).mean(0)
    assert by_slot[24] > 1.3 * by_slot[8]
    w = rolling_test_windows(series, 48, 336, 7)
    assert len(w) == 7 and len(w.train[0]) == 3696 and w.forecast_start[0] == pd.Timestamp("2000-08-21")


def test_sunspots_series() -> None:
    series = load_time_series("sunspots")
    assert series.item_ids == ("sunspots",) and series.freq == "MS"
    values = series.values[0]
    assert len(values) == 2820 == 235 * 12
    assert series.starts[0] == pd.Timestamp("1749-01-01")
    assert series.timestamps(0)[-1] == pd.Timestamp("1983-12-01")
    # pmdarima's docstring: array([58. , 62.6, 70. , ..., 55.8, 33.3, 33.4])
    np.testing.assert_array_equal(values[:5], [58.0, 62.6, 70.0, 55.7, 85.0])
    np.testing.assert_array_equal(values[-3:], [55.8, 33.3, 33.4])
    assert values.min() == 0.0 and values.max() == 253.8


def _fake_taylor_source(body: str) -> str:
    doc = ('    """Half-hourly electricity demand\n\n    Half-hourly electricity demand in England and Wales from '
           'Monday, 5 June,\n    2000 to Sunday, 27 August, 2000. Units: Megawatts\n    """\n')
    return f"import numpy as np\n\ndef load_taylor():\n{doc}    rslt = np.array([{body}])\n    return rslt\n"


def test_taylor_parser_reads_literals_only() -> None:
    make = load_script("taylor")
    values = make.parse_values(_fake_taylor_source(", ".join(str(20000 + i) for i in range(4032))))
    assert values[:2] == [20000, 20001] and len(values) == 4032
    # Anything but number literals is refused by ast.literal_eval: the source is never executed.
    with pytest.raises(ValueError, match="malformed"):
        make.parse_values(_fake_taylor_source("__import__('os').getcwd(), 1"))
    with pytest.raises(SystemExit, match="4032 positive integers"):
        make.parse_values(_fake_taylor_source("1, 2, 3"))
    with pytest.raises(SystemExit, match="docstring"):
        make.parse_values(_fake_taylor_source("1").replace("Monday, 5 June", "Tuesday, 6 June"))


@pytest.mark.parametrize("name", ["taylor", "sunspots"])
def test_scripts_check_the_checksum(tmp_path: Path, name: str) -> None:
    make = load_script(name)
    wheel = tmp_path / "pmdarima-2.1.1-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(make.MEMBER, b"not the data")
    with pytest.raises(SystemExit, match="SHA-256"):
        make.main(["--wheel", str(wheel), "--out", str(tmp_path / "out.csv")])
    with pytest.raises(SystemExit, match=r"not a pmdarima-2\.1\.1 wheel"):
        make.main(["--wheel", str(tmp_path / "other.whl"), "--out", str(tmp_path / "out.csv")])


@pytest.mark.skipif(WHEEL is None, reason="set PMDARIMA_WHEEL to a pmdarima-2.1.1 wheel to rebuild the files")
@pytest.mark.parametrize("name", ["taylor", "sunspots"])
def test_scripts_reproduce_the_files(tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.csv"
    subprocess.run([sys.executable, str(ROOT / name / "make.py"), "--wheel", str(WHEEL), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == (dataset_path(name) / f"{name}.csv").read_bytes()
