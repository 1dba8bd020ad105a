"""Shared fixtures: real image files in temporary folders."""

from __future__ import annotations

import os
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
