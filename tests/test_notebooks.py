"""The walkthrough notebooks: committed executed and small, public API only, and they still run.

Deselect them all with ``-m "not notebooks"``; the slow one executes all four
notebooks headless (``notebooks/run_notebooks.py``, a few minutes each on 2 cores).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "notebooks" / "run_notebooks.py"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_TOTAL_BYTES = 1_500_000
MAX_IMAGE_BASE64_CHARS = 150_000

pytestmark = pytest.mark.notebooks


def _code_cells(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_four_walkthroughs_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_prepare_data.ipynb", "02_train.ipynb", "03_translate_and_evaluate.ipynb",
        "04_label_free.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_top_to_bottom_without_errors(path):
    cells = _code_cells(path)
    # Executed in one go on a fresh kernel: counts 1..n, as run_notebooks.py --inplace leaves them.
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name} is not committed executed: run notebooks/run_notebooks.py --inplace"
    )
    for i, cell in enumerate(cells):
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name} code cell {i}: {out.get('ename')}"
            assert out.get("name") != "stderr", f"{path.name} code cell {i}: {out.get('text')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_show_no_machine_specific_paths(path):
    text = path.read_text()
    for leak in (str(REPO), "/tmp/", "stainvirt-notebooks-"):
        assert leak not in text, f"{path.name} mentions {leak!r}: refresh it with --inplace"


def test_notebooks_are_small():
    total = sum(p.stat().st_size for p in NOTEBOOKS)
    assert total < MAX_TOTAL_BYTES, f"notebooks take {total / 1e6:.2f} MB; shrink the figures"
    for path in NOTEBOOKS:
        for cell in _code_cells(path):
            for out in cell.outputs:
                for mime, data in out.get("data", {}).items():
                    if mime.startswith("image/"):
                        assert len(data) < MAX_IMAGE_BASE64_CHARS, f"{path.name}: a large image"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_only_the_public_api(path):
    """No private stainvirt names: the notebooks show what a user can call."""
    private = re.compile(r"\bstainvirt(\.\w+)*\._\w|from stainvirt[\w.]* import [^\n]*\b_\w")
    for i, cell in enumerate(_code_cells(path)):
        assert not private.search(cell.source), f"{path.name} code cell {i} uses a private name"


@pytest.mark.slow
def test_notebooks_run_headless(tmp_path):
    result = subprocess.run(
        [sys.executable, str(RUNNER), "--keep", str(tmp_path / "executed")],
        capture_output=True, text=True, timeout=3600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-10_000:]
