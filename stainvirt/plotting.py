"""Saving matplotlib figures as plain RGB PNGs, atomically, without touching pyplot.

Figures are built on ``matplotlib.figure.Figure`` rather than pyplot, so making
one never changes the backend of a notebook or an interactive session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stainvirt.io.atomic import atomic_path


def save_figure(fig, path: str | Path, dpi: int = 72) -> Path:
    """Render ``fig`` at ``dpi`` and write it to ``path`` as an RGB PNG (no alpha)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", optimize=True)
    return path
