"""Convert the UEA/UCR ``JapaneseVowels`` ``.ts`` files to ``japanese_vowels.csv`` (long format).

Input: the two files of the UEA multivariate archive, ``JapaneseVowels_TRAIN.ts`` (270 series) and
``JapaneseVowels_TEST.ts`` (370 series), as shipped inside the ``sktime`` wheel under
``sktime/datasets/data/JapaneseVowels/``. Each ``@data`` line holds one utterance: 12 colon-separated
channels (LPC cepstrum coefficients), each a comma-separated list of the same 7-29 frame values, then
the class label (speaker ``1`` .. ``9``) after the last colon.

Output: one row per (series, frame) with columns ``series_id,time,c1,...,c12,label``: series
``train_000`` .. ``train_269`` from the train file, then ``test_000`` .. ``test_369`` from the test
file, in file order; ``time`` is the frame index ``0, 1, 2, ...``; ``label`` the speaker as an
integer. Values are written as the shortest decimal that reads back to the same float, i.e. exactly
the digits of the source file (at most 6 decimals), so the conversion is lossless. NumPy only::

    python datasets/japanese_vowels/convert_japanese_vowels.py \\
        --train JapaneseVowels_TRAIN.ts --test JapaneseVowels_TEST.ts \\
        --out datasets/japanese_vowels/japanese_vowels.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

N_CHANNELS = 12


def _fmt(v: float) -> str:
    """Shortest round-tripping decimal for ``v``, without a negative zero or a trailing ``.0``."""
    s = repr(float(v))
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


def parse_ts(path: Path) -> list[tuple[np.ndarray, str]]:
    """Read a multivariate ``.ts`` file with class labels and no time stamps.

    Returns one ``(values [n_frames, n_channels], label)`` pair per ``@data`` line, in file order.

    Raises:
        ValueError: the header is not ``@timeStamps false`` / ``@classLabel true``, a line has the
            wrong number of channels, channels differ in length, or a value is missing (``?``/NaN).
    """
    header: dict[str, str] = {}
    series: list[tuple[np.ndarray, str]] = []
    in_data = False
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
                if key.lower() == "data":
                    in_data = True
                continue
            raise ValueError(f"{path}:{lineno}: data before the @data line")
        fields = line.split(":")
        label, channels = fields[-1].strip(), fields[:-1]
        dims = int(header.get("dimensions", len(channels)))
        if len(channels) != dims:
            raise ValueError(f"{path}:{lineno}: {len(channels)} channels, header says {dims}")
        cols = [[float(x) for x in ch.split(",")] for ch in channels]
        if len({len(c) for c in cols}) != 1:
            raise ValueError(f"{path}:{lineno}: channels have different lengths {[len(c) for c in cols]}")
        values = np.asarray(cols, dtype=np.float64).T  # [n_frames, n_channels]
        if not np.isfinite(values).all():
            raise ValueError(f"{path}:{lineno}: missing or non-finite value")
        series.append((values, label))
    if header.get("timestamps", "false").lower() != "false":
        raise ValueError(f"{path}: time-stamped .ts files are not supported")
    if not header.get("classlabel", "").lower().startswith("true"):
        raise ValueError(f"{path}: expected '@classLabel true ...'")
    return series


def to_csv_lines(parts: list[tuple[str, list[tuple[np.ndarray, str]]]]) -> list[str]:
    """CSV lines (header first) for ``[(prefix, series), ...]``; ids are ``<prefix>_<index>``."""
    n_ch = parts[0][1][0][0].shape[1] if parts and parts[0][1] else N_CHANNELS
    lines = ["series_id,time," + ",".join(f"c{j + 1}" for j in range(n_ch)) + ",label"]
    for prefix, series in parts:
        width = max(3, len(str(len(series) - 1)))
        for i, (values, label) in enumerate(series):
            sid = f"{prefix}_{i:0{width}d}"
            lab = int(label)
            for t, row in enumerate(values):
                lines.append(f"{sid},{t}," + ",".join(_fmt(v) for v in row) + f",{lab}")
    return lines


def convert(train: Path, test: Path, out: Path) -> tuple[int, int]:
    """Convert the two ``.ts`` files to ``out``; return ``(number of series, number of rows)``."""
    parts = [("train", parse_ts(train)), ("test", parse_ts(test))]
    lines = to_csv_lines(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    return sum(len(s) for _, s in parts), len(lines) - 1


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="JapaneseVowels_TRAIN.ts")
    parser.add_argument("--test", type=Path, required=True, help="JapaneseVowels_TEST.ts")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "japanese_vowels.csv",
        help="output CSV (default: japanese_vowels.csv next to this script)",
    )
    args = parser.parse_args(argv)
    n_series, n_rows = convert(args.train, args.test, args.out)
    print(f"wrote {n_series} series, {n_rows} rows to {args.out}")


if __name__ == "__main__":
    main()
