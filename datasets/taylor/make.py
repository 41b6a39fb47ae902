"""Write ``taylor.csv``: half-hourly electricity demand of England and Wales, 5 June - 27 August 2000.

The 4032 values (megawatts) are read from the file ``pmdarima/datasets/taylor.py`` inside a pmdarima
2.1.1 wheel (MIT licence), which copies the ``taylor`` series of R's forecast package. The file is
checked against its SHA-256, and the numbers are taken from the ``np.array([...])`` literal of
``load_taylor`` by parsing the source with :mod:`ast` (the file is never imported or executed). The
docstring's period, "Monday, 5 June, 2000 to Sunday, 27 August, 2000", is checked too: 84 days of 48
half-hours are the 4032 values, so the timestamps run from 2000-06-05 00:00 to 2000-08-27 23:30.

    pip download pmdarima==2.1.1 --no-deps --only-binary=:all: -d /tmp/wheels
    python datasets/taylor/make.py --wheel /tmp/wheels/pmdarima-2.1.1-*.whl

Any pmdarima 2.1.1 wheel works (the file is the same in all of them). The output is byte for byte
reproducible.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import zipfile
from pathlib import Path

import pandas as pd

MEMBER = "pmdarima/datasets/taylor.py"
SHA256 = "3df2f44f654bfe4338ea39350912140c9710fa776270f50a2529b2f5c87a4e19"
N_VALUES = 4032
START = "2000-06-05 00:00"  # Monday 5 June 2000, local (British Summer) time throughout
FREQ = "30min"
PERIOD = "Monday, 5 June, 2000 to Sunday, 27 August, 2000"


def read_member(wheel: Path) -> bytes:
    """The bytes of ``MEMBER`` in ``wheel``, checked against ``SHA256``."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{wheel}:{MEMBER} has SHA-256 {digest}, expected {SHA256} (pmdarima 2.1.1)")
    return data


def parse_values(source: str) -> list[int]:
    """The integers of the ``np.array([...])`` literal in ``load_taylor``, after checking its docstring."""
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load_taylor")
    doc = " ".join((ast.get_docstring(func) or "").split())
    if PERIOD not in doc or "Units: Megawatts" not in doc:
        raise SystemExit(f"{MEMBER}: the docstring does not state the period {PERIOD!r} in megawatts")
    arrays = [
        n for n in ast.walk(func)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "array"
        and n.args and isinstance(n.args[0], ast.List)
    ]
    if len(arrays) != 1:
        raise SystemExit(f"{MEMBER}: expected one np.array([...]) literal, found {len(arrays)}")
    values = ast.literal_eval(arrays[0].args[0])  # a list of number literals only
    if len(values) != N_VALUES or not all(type(v) is int and v > 0 for v in values):
        raise SystemExit(f"{MEMBER}: expected {N_VALUES} positive integers, got {len(values)} values")
    return values


def make_lines(values: list[int]) -> list[str]:
    """The CSV lines, header first."""
    stamps = pd.date_range(START, periods=len(values), freq=FREQ)
    if stamps[-1] != pd.Timestamp("2000-08-27 23:30"):
        raise SystemExit(f"the last timestamp is {stamps[-1]}, expected Sunday 2000-08-27 23:30")
    text = stamps.strftime("%Y-%m-%d %H:%M")
    return ["item_id,timestamp,target", *(f"taylor,{t},{v}" for t, v in zip(text, values, strict=True))]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="a pmdarima-2.1.1 wheel (.whl)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "taylor.csv",
                        help="output CSV (default: taylor.csv next to this script)")
    args = parser.parse_args(argv)
    if not re.search(r"pmdarima-2\.1\.1-.*\.whl$", args.wheel.name):
        raise SystemExit(f"{args.wheel}: not a pmdarima-2.1.1 wheel")
    values = parse_values(read_member(args.wheel).decode("utf-8"))
    lines = make_lines(values)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    print(f"wrote {len(values)} values to {args.out}")


if __name__ == "__main__":
    main()
