"""Write an :class:`~stainvirt.evaluate.runner.Evaluation` as files a person and a program read.

- ``report.json``: every per-image and mean figure, the settings and the model's
  config. Undefined values (nan) are written as ``null``, so the file is strict JSON.
- ``report.md``: a table of mean metrics with one row per method, a verdict and
  the settings, for a person.
- ``worst_best.png``: the worst and best images by the primary metric.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stainvirt import __version__
from stainvirt.evaluate.runner import IDENTITY, MODEL, PSNR_SSIM_SETTINGS, REINHARD, Evaluation
from stainvirt.io.atomic import atomic_write_text
from stainvirt.plotting import image_grid, save_figure

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FIGURE_PNG = "worst_best.png"


class Metric(NamedTuple):
    """How a metric is shown: its label, which way is better, its number format."""

    label: str
    higher_is_better: bool
    fmt: str


METRICS = {
    "psnr": Metric("PSNR (dB)", True, "{:.2f}"),
    "ssim": Metric("SSIM", True, "{:.3f}"),
    "dab_corr": Metric("DAB r", True, "{:.3f}"),
    "hematoxylin_corr": Metric("hematoxylin r", True, "{:.3f}"),
    "eosin_corr": Metric("eosin r", True, "{:.3f}"),
    "dab_dice": Metric("DAB Dice", True, "{:.3f}"),
    "rgb_w1": Metric("RGB W1", False, "{:.2f}"),
    "hematoxylin_w1": Metric("hematoxylin W1", False, "{:.4f}"),
    "eosin_w1": Metric("eosin W1", False, "{:.4f}"),
    "dab_w1": Metric("DAB W1", False, "{:.4f}"),
    "fid": Metric("FID", False, "{:.2f}"),
    "kid": Metric("KID", False, "{:.4f}"),
    "cycle_psnr": Metric("cycle PSNR (dB)", True, "{:.2f}"),
    "cycle_ssim": Metric("cycle SSIM", True, "{:.3f}"),
}
"""Every metric a report can hold, in table column order."""

METHOD_LABELS = {MODEL: "model", IDENTITY: "the identity", REINHARD: "Reinhard"}


def write_report(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the worst/best figure into ``out_dir``.

    Every file is written atomically; existing reports there are replaced.

    Args:
        evaluation: What :func:`~stainvirt.evaluate.runner.evaluate` returned.
        out_dir: Output folder, created if needed.

    Returns:
        ``{"json": path, "markdown": path}`` and ``"figure"`` when there are
        images to show.
    """
    out_dir = Path(out_dir)
    paths = {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MD}
    if evaluation.figure_rows:
        paths["figure"] = write_figure(evaluation, out_dir / FIGURE_PNG)
    text = json.dumps(_strict(report_dict(evaluation)), indent=2, allow_nan=False)
    atomic_write_text(paths["json"], text + "\n")
    atomic_write_text(paths["markdown"], report_markdown(evaluation))
    return paths


def report_dict(evaluation: Evaluation) -> dict[str, Any]:
    """The content of ``report.json`` (nan still nan; ``write_report`` writes it as null)."""
    primary = evaluation.settings["primary_metric"]
    return {
        "stainvirt_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": evaluation.settings,
        "model_config": evaluation.model_config,
        "summary": evaluation.summary(),
        "undefined": evaluation.undefined(),
        "verdict": verdict(evaluation),
        "notes": notes(evaluation),
        "figure": {
            "file": FIGURE_PNG if evaluation.figure_rows else None,
            "ranked_by": f"{MODEL} {primary}",
            "rows": [
                {"label": row.label, "name": row.name, primary: row.score}
                for row in evaluation.figure_rows
            ],
        },
        "images": evaluation.images,
    }


def report_table(evaluation: Evaluation) -> str:
    """A Markdown table of mean metrics: one row per method, the best values per column in bold."""
    summary = evaluation.summary()
    columns = [m for m in METRICS if any(m in values for values in summary.values())]
    header = "| method | " + " | ".join(
        f"{METRICS[m].label} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in columns
    ) + " |"
    lines = [header, "| --- |" + " ---: |" * len(columns)]
    best = {m: _best_methods(summary, m) for m in columns}
    for method, values in summary.items():
        cells = []
        for m in columns:
            value = values.get(m)
            text = "n/a" if value is None or math.isnan(value) else METRICS[m].fmt.format(value)
            cells.append(f"**{text}**" if method in best[m] else text)
        name = METHOD_LABELS[method].removeprefix("the ")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(evaluation: Evaluation) -> str:
    """One line: on which mean metrics the model beats every baseline, and where it does not."""
    baselines = evaluation.methods[1:]
    if not baselines:
        return "no baselines were scored, so there is nothing to compare the model with"
    summary = evaluation.summary()
    compared = [m for m in METRICS if all(_defined(summary[b].get(m)) for b in evaluation.methods)]
    if not compared:
        return "no metric is defined for the model and the baselines alike"
    losses = {b: [m for m in compared if not _beats(summary, m, MODEL, b)] for b in baselines}
    wins = [m for m in compared if not any(m in lost for lost in losses.values())]
    names = _join([METHOD_LABELS[b] for b in baselines])
    line = (f"the model beats {names} on {_labels(wins)}" if wins
            else f"no metric has the model ahead of {names}")
    missed = [f"{METHOD_LABELS[b]} on {_labels(lost)}" for b, lost in losses.items() if lost]
    return line + (f"; it does not beat {', nor '.join(missed)}" if missed else "")


def notes(evaluation: Evaluation) -> list[str]:
    """The settings and caveats a reader needs next to the table, one sentence each."""
    s, summary = evaluation.settings, evaluation.summary()
    paired, n, n_target = s["mode"] == "paired", s["n_images"], s["n_target_images"]
    out = []
    if paired:
        out.append(f"{n} image(s) from `{s['source']}`, each matched by name with its "
                   f"registered real target in `{s['target']}`.")
    elif n_target:
        out.append(f"{n} image(s) from `{s['source']}`, compared with {n_target} real "
                   f"target-domain image(s) in `{s['target']}`.")
    else:
        out.append(f"{n} image(s) from `{s['source']}`; no --target, so only the "
                   "cycle-reconstruction metrics are reported (distribution distances and "
                   "the baselines need the real target set).")
    if s["psnr_ssim"] == PSNR_SSIM_SETTINGS:
        out.append(f"PSNR/SSIM: {s['psnr_ssim']} (the BCI/MIST settings; tf.image.ssim's 11x11 "
                   f"Gaussian window gives different numbers); identical images score "
                   f"{s['psnr_cap_db']:g} dB.")
    else:
        out.append(f"PSNR/SSIM: {s['psnr_ssim']}, so scores mean the same for 16-bit and "
                   f"float domains; identical images score {s['psnr_cap_db']:g} dB.")
    if "domains" in s:
        out.append(f"Domains: {s['domains']['source']} in, {s['domains']['target']} out.")
    if "stain_metrics" in s:
        out.append(s["stain_metrics"][0].upper() + s["stain_metrics"][1:] + ".")
    if paired and "stains_correlated" in s:
        stains = _join([_stain(x) for x in s["stains_correlated"]])
        line = (f"Stain channels by colour deconvolution ({s['stain_deconvolution']}): r is the "
                f"per-image Pearson correlation of the {stains} optical-density maps")
        if "dab_threshold" in s:
            line += (f"; DAB Dice is the overlap of the DAB-positive areas, DAB optical "
                     f"density > {s['dab_threshold']:g} (rgb2hed units)")
        out.append(line + ".")
        out.append(_undefined_note(evaluation))
    elif n_target and "distance" in s:
        out.append("W1: Wasserstein-1 distance between the pooled pixel histograms of the "
                   "translations and of the real target images, RGB in grey levels (mean of "
                   "R, G, B), stains in optical density; 0 means the same distribution.")
    if "fid_kid" in s:
        out.append(f"FID/KID against the {n_target} real target image(s): {s['fid_kid']}; "
                   f"weights: {s['inception_weights']}. Comparable only with papers that use "
                   "the same Inception weights and preprocessing (Keras's ImageNet InceptionV3 "
                   "is not the 2015 TensorFlow FID graph that pytorch-fid and torch-fidelity "
                   "port, so published numbers differ). FID is biased upwards for small sets "
                   f"(a full-rank covariance needs at least 2048 images; here {n} and "
                   f"{n_target}); KID is unbiased at any size, so trust it on small sets; its "
                   "std over the subsets is kid_std in report.json (0 below 1000 images a "
                   "set, where every subset is the whole set).")
    if not paired:
        out.append(f"Cycle: source -> {s['direction']} -> back, against the source, same "
                   "PSNR/SSIM settings; model only (the identity's round trip is trivially "
                   "perfect). A good round trip shows that the structure is kept, not that "
                   "the stain is right.")
    if s["baselines_requested"] and "identity_baseline" in s:
        out.append(f"Identity baseline: {s['identity_baseline']}.")
    if REINHARD in evaluation.methods:
        on = " (of the identity's RGB image)" if "identity_baseline" in s else ""
        out.append(f"Reinhard: each image's CIE-Lab mean and standard deviation{on} matched "
                   f"to the pooled statistics of the {n_target} target image(s).")
        # Only scores: the summary also holds kid_std, a spread with no better direction.
        worse = [m for m in summary[REINHARD] if m in METRICS
                 and _defined(summary[REINHARD][m]) and _defined(summary[IDENTITY].get(m))
                 and _beats(summary, m, IDENTITY, REINHARD)]
        if worse:
            out.append(f"Reinhard scores worse than the identity on {_labels(worse)}: "
                       "matching each tile's own colour statistics stretches tiles that mix "
                       "glass background and tissue, so it can lose to doing nothing.")
    elif s["baselines_requested"] and not n_target:
        out.append("--baselines without --target: no baseline rows, because the identity "
                   "and Reinhard are scored against the real target set (Reinhard is also "
                   "fitted on it), and the identity's round trip is trivially perfect.")
    elif s["baselines_requested"] and not paired and not evaluation.methods[1:]:
        out.append("--baselines unpaired on this output domain: no baseline rows, because "
                   "there are no distribution distances to score them on and the cycle "
                   "is the model's own.")
    elif not s["baselines_requested"]:
        out.append("Pass --baselines to compare with the identity (no translation)"
                   + (" and a Reinhard colour transfer." if "stain_metrics" not in s else "."))
    if paired and s["direction"] == "A2B" and "domains" not in s:
        out.append("For scale, on the BCI test set (H&E -> HER2 IHC, 1024 px) CycleGAN "
                   "scored 16.20 dB / 0.373 SSIM and a Reinhard transfer about "
                   "15.9 dB / 0.39; numbers are comparable only on the same data.")
    return out


def report_markdown(evaluation: Evaluation) -> str:
    """The content of ``report.md``."""
    s = evaluation.settings
    lines = [
        f"# stainvirt evaluation: {s['direction']} ({s['translation']}), {s['mode']}",
        "",
        f"Model: `{s['model']}` ({_model_summary(evaluation.model_config)}).",
        "",
        report_table(evaluation),
        "",
        f"**Verdict:** {verdict(evaluation)}.",
        "",
        *[f"- {note}" for note in notes(evaluation)],
    ]
    if evaluation.figure_rows:
        primary = METRICS[s["primary_metric"]].label
        n_worst = sum(row.label.startswith("worst") for row in evaluation.figure_rows)
        n_best = len(evaluation.figure_rows) - n_worst
        lines += [
            "",
            f"## Worst and best images by the model's {primary}",
            "",
            f"Rows: the {n_worst} worst, then the {n_best} best image(s); columns: "
            f"{', '.join(evaluation.figure_titles)}.",
            "",
            f"![worst and best images]({FIGURE_PNG})",
        ]
    lines += ["", f"Per-image values and every setting: [{REPORT_JSON}]({REPORT_JSON})."]
    return "\n".join(lines) + "\n"


def write_figure(evaluation: Evaluation, path: str | Path) -> Path:
    """Draw the worst and best images, one row each, into a PNG (atomically).

    Returns:
        ``path``.
    """
    rows = evaluation.figure_rows
    metric = METRICS[evaluation.settings["primary_metric"]]
    fig = image_grid(
        [row.panels for row in rows],
        [evaluation.figure_titles] * len(rows),
        [f"{row.label}: {row.name}\n{metric.label} {metric.fmt.format(row.score)}" for row in rows],
        row_size=(7.2, 2.6),
        fontsize=8,
    )
    return save_figure(fig, path, dpi=90)


def _undefined_note(evaluation: Evaluation) -> str:
    counts = [
        f"{METHOD_LABELS[method]} {METRICS[m].label} on {k} of {evaluation.settings['n_images']}"
        for method, per_metric in evaluation.undefined().items()
        for m, k in per_metric.items()
    ]
    if not counts:
        return "Undefined correlations (a constant stain map on an image): none."
    return ("Undefined correlations (a constant stain map on an image, e.g. no DAB at all), "
            f"left out of the means: {_join(counts)}.")


def _model_summary(config: dict[str, Any]) -> str:
    keys = ("generator", "ngf", "n_blocks", "image_size", "residual_output")
    return ", ".join(f"{k} {config[k]}" for k in keys if k in config)


def _best_methods(summary: dict[str, dict[str, float]], metric: str) -> set[str]:
    """The methods (ties included) with the best value of ``metric``, if at least two have one."""
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    scores = {m: sign * v[metric] for m, v in summary.items() if _defined(v.get(metric))}
    if len(scores) < 2:
        return set()
    top = max(scores.values())
    return {m for m, score in scores.items() if score == top}


def _beats(summary: dict[str, dict[str, float]], metric: str, a: str, b: str) -> bool:
    """Whether method ``a`` has a strictly better mean ``metric`` than method ``b``."""
    x, y = summary[a][metric], summary[b][metric]
    return x > y if METRICS[metric].higher_is_better else x < y


def _defined(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _labels(metrics: list[str]) -> str:
    return ", ".join(METRICS[m].label for m in metrics)


def _stain(name: str) -> str:
    return "DAB" if name == "dab" else name


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _strict(value: Any) -> Any:
    """``value`` with nan and infinity as None and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
