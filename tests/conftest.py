"""Shared fixtures: real image files in temporary folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def tissue_image(height: int, width: int, seed: int = 0, hue: str = "he") -> np.ndarray:
    """A random, stained-looking uint8 RGB image (passes the tissue test)."""
    rng = np.random.default_rng(seed)
    base = np.array([190, 90, 170] if hue == "he" else [150, 110, 80], dtype=np.float32)
    noise = rng.normal(0, 25, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    """Save an array as an image, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as ``stainvirt train`` leaves it: tiny-preset config and both generators."""
    # Imported here so that test modules without a run never load TensorFlow.
    from stainvirt.config import preset
    from stainvirt.models import build_generator
    from stainvirt.rundir import DIRECTIONS, RunDir

    run, cfg = RunDir(tmp_path_factory.mktemp("run")), preset("tiny")
    run.save_config(cfg)
    for direction, spec in DIRECTIONS.items():
        run.save_generator(build_generator(cfg, spec.generator), direction)
    return run.path


@pytest.fixture(scope="session")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample packed into 64 px tiles, as ``stainvirt prepare`` writes it."""
    from stainvirt.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "stain.npz"
    prepare(SAMPLE / "trainA", SAMPLE / "trainB", out, test_a=SAMPLE / "testA",
            test_b=SAMPLE / "testB", tile_size=64, progress=False)
    return out


def start_cli_training(
    data: Path, run: Path, epochs: int = 200, sigint: signal.Handlers = signal.SIG_DFL
) -> subprocess.Popen:
    """``stainvirt train --preset tiny`` in a child process, with SIGINT set to ``sigint``.

    A test runner started in the background hands its children SIGINT ignored;
    ``sigint`` fixes the child's disposition so tests do not depend on that.
    """
    cmd = [sys.executable, "-m", "stainvirt", "train", "--data", str(data), "--out", str(run),
           "--preset", "tiny", "--epochs", str(epochs), "--epochs-decay", "0"]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``path`` exists while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear in time"
        time.sleep(0.2)


@pytest.fixture
def ab_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Folders A (3 images, one in a subfolder) and B (2 images) of 64x64 tissue."""
    a, b = tmp_path / "A", tmp_path / "B"
    save(a / "a0.png", tissue_image(64, 64, 0))
    save(a / "a1.png", tissue_image(64, 96, 1))
    save(a / "sub" / "a2.png", tissue_image(64, 64, 2))
    save(b / "b0.png", tissue_image(64, 64, 3, hue="ihc"))
    save(b / "b1.png", tissue_image(64, 64, 4, hue="ihc"))
    return a, b
