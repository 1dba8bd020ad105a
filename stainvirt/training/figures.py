"""Pictures of a run: the per-epoch sample grid and the loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stainvirt.io.scaling import to_uint8, to_unit
from stainvirt.plotting import image_grid, save_figure


def save_sample_grid(
    path: str | Path, g_ab, g_ba, tiles_a: np.ndarray, tiles_b: np.ndarray, title: str
) -> None:
    """Rows of (real A, fake B, reconstructed A) and (real B, fake A, reconstructed B).

    Args:
        path: the PNG to write (atomically).
        g_ab: generator A -> B.
        g_ba: generator B -> A.
        tiles_a: uint8 domain A tiles, all one size the generators accept.
        tiles_b: uint8 domain B tiles, likewise.
        title: figure title (e.g. the epoch).
    """
    rows, titles = [], []
    for real, forward, backward, names in (
        (tiles_a, g_ab, g_ba, ("real A (H&E)", "fake B (IHC)", "reconstructed A")),
        (tiles_b, g_ba, g_ab, ("real B (IHC)", "fake A (H&E)", "reconstructed B")),
    ):
        fake = forward(to_unit(real), training=False)
        rec = backward(fake, training=False)
        rows += zip(real, to_uint8(fake), to_uint8(rec), strict=True)
        titles += [names] * len(real)
    fig = image_grid(rows, titles, row_size=(7.5, 2.5), suptitle=title)
    save_figure(fig, path)


def save_loss_plot(path: str | Path, rows: Sequence[dict[str, float]]) -> None:
    """Loss curves per epoch from history rows.

    Generators, discriminators, cycle and identity, and the supervised pair
    losses when a run has them.
    """
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    supervised = ["G_AB_pair", "G_BA_pair"]
    panels = {
        "generators (total)": ["G"],
        "adversarial": ["G_AB_adv", "G_BA_adv", "D_A", "D_B"],
        "cycle and identity": ["cycle_A", "cycle_B", "G_AB_idt", "G_BA_idt"],
        "learning rate": ["lr"],
    }
    if any(row.get(key, 0) for row in rows for key in supervised):
        panels["cycle and identity"] += supervised
    fig = Figure(figsize=(4 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        for key in keys:
            values = [row.get(key, float("nan")) for row in rows]  # nan: not logged then
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    save_figure(fig, path)
