"""Execute every Python block of the documentation, page by page, in one namespace per page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text(encoding="utf-8")))


def test_pages_with_examples_exist() -> None:
    names = {p.name for p in PAGES}
    assert {"solvers.md", "layers.md", "training.md", "datasets.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_doc_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Examples write files (a CSV, a model folder, a plot) into the working directory: keep them out of the repo.
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
        code = compile(block, f"{page.name}[block {i}]", "exec")
        exec(code, namespace)
