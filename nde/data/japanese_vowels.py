"""Loader for the shipped Japanese Vowels speaker-classification data set (UEA/UCI).

640 utterances of two Japanese vowels by 9 male speakers (the classes), each a series of 7-29 frames
of 12 LPC cepstrum coefficients. The CSV (see ``datasets/japanese_vowels/README.md``) is in long format
with columns ``series_id,time,c1,...,c12,label``; ``time`` is the frame index ``0, 1, 2, ...`` and
``label`` the speaker ``1`` .. ``9``. Series ``train_000`` .. ``train_269`` are the UEA training split,
``test_000`` .. ``test_369`` the UEA test split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nde.data._longcsv import read_long_csv
from nde.data.registry import dataset_path

__all__ = ["JAPANESE_VOWELS_CHANNELS", "JAPANESE_VOWELS_COLUMNS", "load_japanese_vowels"]

JAPANESE_VOWELS_CHANNELS: tuple[str, ...] = tuple(f"c{j}" for j in range(1, 13))
JAPANESE_VOWELS_COLUMNS: tuple[str, ...] = ("series_id", "time", *JAPANESE_VOWELS_CHANNELS, "label")


def load_japanese_vowels(path: str | Path | None = None) -> pd.DataFrame:
    """Load the Japanese Vowels data set as a long-format ``DataFrame``.

    Args:
        path: the CSV file, or a folder holding ``japanese_vowels.csv``; default: the shipped file
            found with ``dataset_path("japanese_vowels")``.

    Returns:
        One row per (series, frame), in file order, with columns ``JAPANESE_VOWELS_COLUMNS``:
        ``series_id`` (str), ``time`` (float64 frame index), ``c1`` .. ``c12`` (float64) and ``label``
        (int64 speaker ``1`` .. ``9``). The shipped file has 640 series (9961 rows) of 7-29 frames.
        Other columns of a file of your own are ignored.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: (a ``ValueError``) empty file, a missing column, a missing / non-numeric
            value, times not strictly increasing within a series, a label that is not an integer or
            differs within a series. The message names the file (and series and line).
    """
    path = dataset_path("japanese_vowels") / "japanese_vowels.csv" if path is None else Path(path)
    if path.is_dir():
        path = path / "japanese_vowels.csv"
    return read_long_csv(path, what="japanese_vowels", columns=JAPANESE_VOWELS_COLUMNS, label_col="label")
