"""Tables and figures of the training speed bench (``train_speed.py``), as it prints them.

Rates from a setting's timings, padded markdown tables (they read in a terminal
too, and go into the READMEs as they are), the conv throughput table and the
threads line. Formatting only: the timing lives in ``train_speed.py`` and the
FLOP counting in ``flops.py``.
"""

from __future__ import annotations

import os
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np
from flops import describe_probe

if TYPE_CHECKING:
    from train_speed import Result

    from stainvirt.config import Config

MODES = ("off", "on", "auto")
"""The XLA modes ``train_speed.py`` times, in the order of the README table's columns."""


def images_per_s(cfg: Config, seconds: list[float]) -> float:
    """batch_size * steps / total seconds (nan when nothing was timed)."""
    return cfg.batch_size * len(seconds) / sum(seconds) if seconds else float("nan")


def gflops(res: Result, seconds: list[float]) -> float:
    """Achieved conv GFLOP/s: the step's conv GFLOP over the mean step time."""
    return res.gflop_step * len(seconds) / sum(seconds) if seconds else float("nan")


def fmt(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits; "-" for nan."""
    return "-" if np.isnan(value) else f"{value:.{digits}g}"


def markdown(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table with its columns padded, so it reads in a terminal too."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = [head, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     + " |" for line in lines)


def conv_table(conv: list[dict[str, float]]) -> str:
    """Markdown table of :func:`flops.conv_throughput` results (e.g. at a run's start and end)."""
    when = " / ".join(("start", "end", *(f"#{i}" for i in range(3, len(conv) + 1)))[:len(conv)])
    row = [" / ".join(f"{c[name]:.3g}" for c in conv) for name in conv[0]]
    return f"Conv throughput, {describe_probe()}, GFLOP/s ({when} of the run):\n\n" + markdown(
        list(conv[0]), [row])


def thread_report(worker: Any) -> str:
    """One line on TF's threads and oneDNN, the reference's threads, the CPUs and the load.

    Args:
        worker: the reference's :class:`torch_worker.TorchWorker`, or None without torch.
    """
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    line = (f"TF {tf.__version__}: intra-op threads {intra or f'default ({os.cpu_count()})'}, "
            f"inter-op {inter or 'default'}; oneDNN opts "
            f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}")
    if worker is not None:
        line += f"; torch {worker.version}: {worker.threads} threads, in its own process"
    return line + f"; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"


def print_tables(results: list[Result], torch_ok: bool, conv: list[dict[str, float]]) -> None:
    """Each timed setting in detail; then the README tables (conv throughput; a row per preset)."""
    peak = max(v for c in conv for v in c.values())
    pct = lambda res, seconds: fmt(100 * gflops(res, seconds) / peak, 2)  # noqa: E731
    na = lambda text: text if torch_ok else "n/a"  # noqa: E731
    rows = [[
        r.preset, str(r.cfg.image_size), str(r.cfg.batch_size), "on" if r.jit else "off",
        "/".join(r.modes), f"{r.first_step_s:.1f}",
        fmt(statistics.median(r.ours)) if r.ours else "-", fmt(images_per_s(r.cfg, r.ours)),
        fmt(gflops(r, r.ours)), pct(r, r.ours), na(fmt(images_per_s(r.cfg, r.torch))),
        na(pct(r, r.torch)),
        na(fmt(images_per_s(r.cfg, r.ours) / images_per_s(r.cfg, r.torch))),
        fmt(images_per_s(r.cfg, r.cached)), f"{r.pipeline_s * 1000:.3g}" if r.pipeline_s else "-",
    ] for r in results]
    print("\n" + markdown(["preset", "crop", "batch", "XLA", "modes", "first s", "s/step",
                           "ours img/s", "GFLOP/s", "% conv", "torch img/s", "torch % conv",
                           "ours/torch", "cached img/s", "pipeline ms"], rows))

    print("\n" + conv_table(conv))
    print(f"\nimg/s (achieved conv GFLOP/s as % of the best conv throughput, {peak:.3g} "
          "GFLOP/s; conv FLOPs only, 3x forward per trained pass, 2x per frozen "
          "discriminator pass); ours/torch from the steps interleaved with each setting:\n")
    rows = []
    for name in dict.fromkeys(r.preset for r in results):
        mine = [r for r in results if r.preset == name]
        cfg = mine[0].cfg
        torch_s = [s for r in mine for s in r.torch]
        cells, ratios = [], []
        for mode in MODES:
            r = next((r for r in mine if mode in r.modes), None)
            rate = images_per_s(cfg, r.ours) if r else float("nan")
            label = f"{'on' if r.jit else 'off'}: " if r and mode == "auto" else ""
            cells.append(f"{label}{fmt(rate)} ({pct(r, r.ours)}%)" if r else "-")
            ratios.append(na(fmt(rate / images_per_s(cfg, r.torch))) if r else "-")
        torch_cell = na(f"{fmt(images_per_s(cfg, torch_s))} ({pct(mine[0], torch_s)}%)")
        rows.append([name, f"{cfg.image_size}, {cfg.batch_size}", fmt(mine[0].gflop_step),
                     *cells, torch_cell, *ratios])
    print(markdown(["preset", "crop, batch", "GFLOP/step", "XLA off", "XLA on", "XLA auto",
                    "torch", "off/torch", "on/torch", "auto/torch"], rows))
