"""Pictures of a run: the per-epoch sample grid and the loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stainvirt.domain import RGB, Domain
from stainvirt.io.scaling import to_uint8
from stainvirt.plotting import display_rgb, image_grid, save_figure

STAINS = {"A": "H&E", "B": "IHC"}


def save_sample_grid(
    path: str | Path,
    g_ab,
    g_ba,
    tiles_a: np.ndarray,
    tiles_b: np.ndarray,
    title: str,
    domains: dict[str, Domain] | None = None,
) -> None:
    """Rows of (real A, fake B, reconstructed A) and (real B, fake A, reconstructed B).

    Args:
        path: the PNG to write (atomically).
        g_ab: generator A -> B.
        g_ba: generator B -> A.
        tiles_a: domain A tiles (stored pixels), all one size the generators accept.
        tiles_b: domain B tiles, likewise.
        title: figure title (e.g. the epoch).
        domains: ``{"A": Domain, "B": Domain}`` of the tiles (None: both RGB); a
            domain of other than 3 channels is shown as grey (its mean).
    """
    domains = domains or {"A": RGB, "B": RGB}
    names = {d: _name(d, domains[d]) for d in "AB"}
    rows, titles = [], []
    for real, forward, backward, (d, other) in (
        (tiles_a, g_ab, g_ba, "AB"), (tiles_b, g_ba, g_ab, "BA"),
    ):
        net = domains[d].to_net(real)
        fake = forward(net, training=False)
        rec = backward(fake, training=False)
        rows += zip(*([display_rgb(p) for p in to_uint8(x)] for x in (net, fake, rec)),
                    strict=True)
        titles += [(f"real {d} ({names[d]})", f"fake {other} ({names[other]})",
                    f"reconstructed {d}")] * len(real)
    fig = image_grid(rows, titles, row_size=(7.5, 2.5), suptitle=title)
    save_figure(fig, path)


def _name(domain: str, kind: Domain) -> str:
    """What a domain's images are, for panel titles: its stain if RGB, else its kind."""
    if kind.is_rgb:
        return STAINS[domain]
    if kind.channels == 1:
        return "grey"
    return f"mean of {kind.channels} channels"


def save_loss_plot(path: str | Path, rows: Sequence[dict[str, float]]) -> None:
    """Loss curves per epoch from history rows.

    Generators, discriminators, cycle and identity, and the supervised pair
    and structure losses when a run has them.
    """
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    supervised = ["G_AB_pair", "G_BA_pair"]
    structure = ["G_AB_struct", "G_BA_struct"]
    panels = {
        "generators (total)": ["G"],
        "adversarial": ["G_AB_adv", "G_BA_adv", "D_A", "D_B"],
        "cycle and identity": ["cycle_A", "cycle_B", "G_AB_idt", "G_BA_idt"],
        "learning rate": ["lr"],
    }
    if any(row.get(key, 0) for row in rows for key in supervised):
        panels["cycle and identity"] += supervised
    if any(key in row for row in rows for key in structure):
        panels["cycle and identity"] += structure
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
