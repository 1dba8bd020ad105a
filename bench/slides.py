"""Whole slides: prepare throughput and peak memory, translation speed with and without glass.

Prints figures; not a test.

    python bench/slides.py                              # 20,000 px slide; ~10 minutes on 2 cores
    python bench/slides.py --side 8000 --translate-side 2048          # a quicker look

Figures:
- prepare: `stainvirt prepare` on a SIDE x SIDE px pyramidal OME-TIFF at 0.25
  mpp whose tissue (mirror-tiled bundled H&E) fills a disc over about half of
  it, the rest glass: at `--mpp 0.5` with `--tiles-per-slide 500` and with
  every tissue tile, and at the slide's own resolution. Each runs as a fresh
  process: wall time, tiles/s, and its peak resident memory (the process's own
  high-water mark, from wait4).
- translate: a TRANSLATE_SIDE slide of the same kind through a generator of the
  `cpu` preset (randomly initialised: speed, not quality) at the slide's own
  resolution, skipping glass found on the thumbnail (the default for slides)
  and not (`--no-skip-background`): megapixels per second counting every pixel,
  and counting only the tissue.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.translate.writers import write_tiff  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "testA"
MPP = 0.25


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=20_000, help="prepare's slide side (px)")
    p.add_argument("--translate-side", type=int, default=4096, help="translate's slide side")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="stainvirt-bench-") as tmp:
        tmp = Path(tmp)
        bench_prepare(tmp, args.side)
        bench_translate(tmp, args.translate_side)


def half_glass_slide(path: Path, side: int, seed: int = 0) -> Path:
    """A pyramidal OME-TIFF: tissue in a disc over half the area, noisy glass around it."""
    base = np.concatenate([read_image(f) for f in list_images(SAMPLE)], axis=1)
    radius2 = side * side / (2 * np.pi)  # a disc of half the square's area
    rng = np.random.default_rng(seed)

    def bands():
        for top in range(0, side, 512):
            rows = min(512, side - top)
            y = np.arange(top, top + rows)[:, None] - side / 2
            x = np.arange(side)[None, :] - side / 2
            inside = (y * y + x * x) < radius2
            band = mirrored(base, rows, side, top)
            glass = np.clip(236 + rng.normal(0, 2, (rows, side, 1)), 0, 255).astype(np.uint8)
            yield np.where(inside[..., None], band, glass)

    started = time.perf_counter()
    write_tiff(path, side, side, bands(), MPP)
    print(f"{side} x {side} px slide, half glass, written in {time.perf_counter() - started:.0f} s "
          f"({path.stat().st_size / 1e6:.0f} MB)")
    return path


def mirrored(base: np.ndarray, height: int, width: int, top: int = 0) -> np.ndarray:
    """Rows ``top:top+height`` of ``base`` mirror-tiled to ``width`` columns (no jumps)."""
    def index(n: int, start: int, count: int) -> np.ndarray:
        i = np.arange(start, start + count) % (2 * n - 2)
        return np.where(i < n, i, 2 * n - 2 - i)

    return base[index(base.shape[0], top, height)][:, index(base.shape[1], 0, width)]


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command; its wall seconds, its own peak RSS in GB, and its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - started, usage.ru_maxrss / 1e6, out  # ru_maxrss is in KB


def bench_prepare(tmp: Path, side: int) -> None:
    a, b = tmp / "A", tmp / "B"
    a.mkdir()
    b.mkdir()
    half_glass_slide(a / "slide.ome.tif", side)
    half_glass_slide(b / "small.ome.tif", 1024, seed=1)
    # The small B slide is at 0.25 mpp too, so the native run warns of nothing.
    print("\nprepare --tile-size 256 on it:")
    print(f"{'setting':40s} {'tiles':>7s} {'seconds':>8s} {'tiles/s':>8s} {'peak RSS GB':>12s}")
    for label, extra in (
        ("--mpp 0.5 --tiles-per-slide 500", ["--mpp", "0.5", "--tiles-per-slide", "500"]),
        ("--mpp 0.5, every tissue tile", ["--mpp", "0.5"]),
        ("own 0.25 mpp, every tissue tile", []),
    ):
        out = tmp / "data.npz"
        cmd = [sys.executable, "-m", "stainvirt", "-q", "prepare", "--a", str(a), "--b", str(b),
               "--test-fraction", "0", "--out", str(out), *extra]
        seconds, peak, stdout = run_measured(cmd)
        tiles = int(stdout.split("trainA ")[1].split(",")[0])
        print(f"{label:40s} {tiles:7d} {seconds:8.1f} {tiles / seconds:8.1f} {peak:12.2f}")


def bench_translate(tmp: Path, side: int) -> None:
    from stainvirt.config import preset
    from stainvirt.models import build_generator
    from stainvirt.rundir import DIRECTIONS, RunDir
    from stainvirt.translate import Translator

    slide = half_glass_slide(tmp / "translate.ome.tif", side, seed=2)
    cfg = preset("cpu", residual_output=False)
    run = RunDir(tmp / "run")
    run.save_config(cfg)
    for direction, spec in DIRECTIONS.items():
        run.save_generator(build_generator(cfg, spec.generator), direction)
    print(f"\ntranslate A2B, cpu-preset generator, tile 512, overlap 64, {side} x {side} px:")
    print(f"{'setting':28s} {'seconds':>8s} {'glass MP':>9s} {'MP/s all':>9s} "
          f"{'MP/s tissue':>12s}")
    for label, skip in (("skip glass (default)", None), ("--no-skip-background", False)):
        translator = Translator.from_run(run.path, "A2B", skip_background=skip)
        translator.translate_array(np.zeros((64, 64, 3), np.uint8))  # trace once, untimed
        report = translator.translate_paths([slide], tmp / "out", progress=False)
        tissue = side * side / 2e6  # the disc: half the slide
        print(f"{label:28s} {report.seconds:8.1f} {report.glass_megapixels:9.1f} "
              f"{report.megapixels / report.seconds:9.2f} {tissue / report.seconds:12.2f}")


if __name__ == "__main__":
    main()
