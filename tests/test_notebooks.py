"""Every notebook executes headlessly at its reduced size, from a folder outside the
checkout; its assertions check its answers; it uses only the public API (`import sim`);
and the cell before its answer prints the numbers the answer concludes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs():
    assert len(NOTEBOOKS) == 7
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def code_of(path: Path) -> str:
    book = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in book.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_only_the_public_api(path: Path):
    code = code_of(path)
    internal = re.findall(r"^\s*(?:from|import) (?:sim\.\w+|tests\b)[^\n]*", code, re.M)
    assert not internal, f"{path.name}: {internal} (use `import sim`: sim/api.py)"
    assert "import sim" in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHSIM_FAST", "1")
    monkeypatch.setenv("BATCHSIM_VALIDATION_DIR", str(tmp_path / "validation"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # sim comes from the install, not the path
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any error, a failed assertion included
    # the answer ("**Answer.**" after its cell, or a "## Answer" heading before it)
    answer = next(
        i
        for i, c in enumerate(book.cells)
        if c.cell_type == "markdown" and re.search(r"^(\*\*Answer|#+ Answer)", c.source, re.M)
    )
    heading = book.cells[answer].source.lstrip().startswith("#")
    code = [i for i, c in enumerate(book.cells) if c.cell_type == "code"]
    cell = book.cells[
        min(i for i in code if i > answer) if heading else max(i for i in code if i < answer)
    ]
    printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert re.search(r"\d", printed), f"{path.name}: the answer's cell prints no number"
