"""`stainvirt translate` as a user runs it: outputs, summary, and one clear line per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
from conftest import REPO, save, tissue_image
from PIL import Image

from stainvirt.cli import main

SMALL_TILES = ["--tile-size", "64", "--overlap", "16"]


@pytest.fixture
def inputs(tmp_path) -> Path:
    save(tmp_path / "in" / "small.png", tissue_image(37, 53))
    tifffile.imwrite(tmp_path / "in" / "slide.tif", tissue_image(150, 97), tile=(32, 32))
    return tmp_path / "in"


def translate(*args: str | Path) -> int:
    return main(["translate", *map(str, args)])


def test_translate_as_a_user_runs_it(run_dir, inputs, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "stainvirt", "translate", "--direction", "A2B", "--model",
         str(run_dir), str(inputs), "--out", str(out), *SMALL_TILES,
         "--figure", str(out / "figure.png")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(out / "small_A2B.png") as png:
        assert png.size == (53, 37)
    assert tifffile.imread(out / "slide_A2B.ome.tif").shape == (150, 97, 3)
    assert "translated 2 image(s)" in proc.stdout and str(out / "small_A2B.png") in proc.stdout
    assert (out / "figure.png").stat().st_size > 0


def test_a_bad_image_fails_the_run_after_the_others(run_dir, inputs, tmp_path, capsys):
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert translate("--direction", "B2A", "--model", run_dir, inputs, "--out", tmp_path / "out",
                     *SMALL_TILES) == 1
    assert (tmp_path / "out" / "small_B2A.png").is_file()
    assert (tmp_path / "out" / "slide_B2A.ome.tif").is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "broken.jpg: not a readable image" in err[0]
    assert err[-1].startswith("error: 1 of 3 image(s) could not be translated")
    assert translate("--direction", "B2A", "--model", run_dir, inputs, "--out", tmp_path / "out",
                     *SMALL_TILES, "--skip-bad", "--format", "png") == 0
    with Image.open(tmp_path / "out" / "slide_B2A.png") as png:
        assert png.size == (97, 150)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--direction": "C2D"}, "unknown direction 'C2D'; use A2B"),
        ({"--model": "{tmp}/no-run"}, "no-run: run folder not found"),
        ({"--overlap": "64"}, "overlap 64 must be at least 0 and smaller than the tile size 64"),
        ({"--out": "{tmp}/a-file/out"}, "cannot create the output folder"),
        ({"--format": "bmp"}, "unknown output format 'bmp'"),
        ({"INPUT": "nothing*.png"}, "nothing*.png: no such file, folder or matching images"),
    ],
)
def test_mistakes_are_one_clear_line(run_dir, inputs, tmp_path, capsys, change, message):
    (tmp_path / "a-file").write_text("a file where a folder should be")
    options = {"INPUT": str(inputs), "--direction": "A2B", "--model": str(run_dir),
               "--out": "{tmp}/out", "--tile-size": "64", "--overlap": "16", **change}
    args = [options.pop("INPUT")] + [x for kv in options.items() for x in kv]
    assert translate(*(arg.format(tmp=tmp_path) for arg in args)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
