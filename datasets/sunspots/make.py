"""Write ``sunspots.csv``: monthly mean relative sunspot numbers, January 1749 - December 1983.

The 2820 values are read from ``pmdarima/datasets/data/sunspots.txt.gz`` inside a pmdarima 2.1.1 wheel
(MIT licence), a copy of the ``sunspots`` series of R's datasets package. The gzip member is checked
against its SHA-256 and its text parsed as 235 rows of 12 monthly values (one row per year); the
numbers are written exactly as they appear there (one decimal). Timestamps are month starts.

    pip download pmdarima==2.1.1 --no-deps --only-binary=:all: -d /tmp/wheels
    python datasets/sunspots/make.py --wheel /tmp/wheels/pmdarima-2.1.1-*.whl

Any pmdarima 2.1.1 wheel works. The output is byte for byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import zipfile
from pathlib import Path

MEMBER = "pmdarima/datasets/data/sunspots.txt.gz"
SHA256 = "da008320ca46c8fb7d4c08a6dc5ba1282be9209c8b943a7ca5ea5d5409d0b36a"
FIRST_YEAR, LAST_YEAR = 1749, 1983
NUMBER = re.compile(r"^\d+\.\d$")


def read_tokens(wheel: Path) -> list[str]:
    """The 2820 number tokens of ``MEMBER`` in ``wheel``, year by year, checked."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{wheel}:{MEMBER} has SHA-256 {digest}, expected {SHA256} (pmdarima 2.1.1)")
    rows = [line.split() for line in gzip.decompress(data).decode("ascii").splitlines() if line.strip()]
    if len(rows) != LAST_YEAR - FIRST_YEAR + 1 or any(len(r) != 12 for r in rows):
        raise SystemExit(f"{MEMBER}: expected {LAST_YEAR - FIRST_YEAR + 1} rows of 12 values")
    tokens = [v for r in rows for v in r]
    bad = [v for v in tokens if not NUMBER.match(v)]
    if bad:
        raise SystemExit(f"{MEMBER}: unexpected value(s) {bad[:3]}")
    return tokens


def make_lines(tokens: list[str]) -> list[str]:
    """The CSV lines, header first."""
    stamps = [f"{year}-{month:02d}-01" for year in range(FIRST_YEAR, LAST_YEAR + 1) for month in range(1, 13)]
    return ["item_id,timestamp,target", *(f"sunspots,{t},{v}" for t, v in zip(stamps, tokens, strict=True))]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="a pmdarima-2.1.1 wheel (.whl)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sunspots.csv",
                        help="output CSV (default: sunspots.csv next to this script)")
    args = parser.parse_args(argv)
    if not re.search(r"pmdarima-2\.1\.1-.*\.whl$", args.wheel.name):
        raise SystemExit(f"{args.wheel}: not a pmdarima-2.1.1 wheel")
    lines = make_lines(read_tokens(args.wheel))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    print(f"wrote {len(lines) - 1} values to {args.out}")


if __name__ == "__main__":
    main()
