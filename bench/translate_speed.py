"""How fast `stainvirt translate` is, whether tile borders show, and its peak memory.

Prints figures; not a test. A randomly initialised generator of a preset stands
in for a trained one: it measures speed and seams, not quality. Its
``residual_output`` is switched off so that the output comes from the network's
own (instance-normalised, per-tile) features rather than a copy of the input.

    python bench/translate_speed.py                      # ~2 minutes on 2 CPU cores
    python bench/translate_speed.py --image ../shared/data/he/cmu_small_region.svs
    python bench/translate_speed.py --big 20000          # + peak memory on 20,000 x 20,000

Figures:
- throughput (megapixels per second of wall-clock and of CPU time: the CPU time
  stays meaningful on a machine shared with other work) of the bare generator on
  the whole image in one call, on non-overlapping tiles, and of the tiled
  translation (overlap + blending);
- seam ratio: mean absolute gradient across tile borders over that elsewhere
  (1.0: borders invisible), with and without overlap, and for the input;
- with --big: peak resident memory of a translation of a huge TIFF to a
  pyramidal OME-TIFF, in a fresh process.
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

from stainvirt.config import preset  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.io.scaling import to_uint8, to_unit  # noqa: E402
from stainvirt.rundir import DIRECTIONS, RunDir  # noqa: E402
from stainvirt.translate import Tiling, Translator, seam_ratio  # noqa: E402
from stainvirt.translate.writers import write_tiff  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "testA"
SAMPLE_MPP = 0.499  # CMU-1, the slide the sample tiles come from


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="cpu", help="generator preset (default: cpu)")
    p.add_argument("--image", type=Path, help="a large real image (default: sample tiles)")
    p.add_argument("--size", type=int, default=3072, help="side of the sample-built image")
    p.add_argument("--tile-size", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--repeat", type=int, default=1,
                   help="time each pass this many times and keep the fastest (for busy machines)")
    p.add_argument("--big", type=int, default=0, metavar="SIDE",
                   help="also measure peak memory translating a SIDE x SIDE TIFF (e.g. 20000)")
    args = p.parse_args()

    from stainvirt.models import build_generator

    cfg = preset(args.preset, residual_output=False)
    generator = build_generator(cfg, "G_AB")
    tiling = Tiling.for_config(cfg, args.tile_size, args.overlap)
    translator = Translator(generator, tiling, batch_size=args.batch_size)
    print(f"generator: {args.preset} preset, random init, {generator.count_params():,} "
          f"parameters; batch size {translator.batch_size}")

    image = read_image(args.image) if args.image else mirrored(sample_base(), args.size, args.size)
    mp = image.shape[0] * image.shape[1] / 1e6
    print(f"image: {image.shape[0]} x {image.shape[1]} ({mp:.1f} MP) from "
          f"{args.image or SAMPLE} {'' if args.image else '(mirror-tiled)'}")
    warm_up(generator)

    timed = best_of(args.repeat)
    no_overlap = Tiling(args.tile_size, 0, tiling.multiple, tiling.min_side)
    plain = Translator(generator, no_overlap, batch_size=translator.batch_size)
    rows, cols = tiling.plan(image.shape[0]), tiling.plan(image.shape[1])
    computed = len(rows.starts) * rows.length * len(cols.starts) * cols.length / 1e6 / mp
    print(f"{'':42s} {'wall s':>7s} {'MP/s':>6s} {'CPU s':>7s} {'MP/CPU s':>8s}")
    (bare, *t_bare), (hard, *t_plain), (tiled, *t_tiled) = [
        timed(label, mp, fn) for label, fn in (
            ("bare generator, whole image in one call", lambda: generator.predict_on_batch(
                to_unit(image)[None])[0]),
            ("bare generator, non-overlapping tiles", lambda: plain.translate_array(image)),
            (f"tiled, tile {args.tile_size}, overlap {args.overlap}",
             lambda: translator.translate_array(image)),
        )
    ]
    print(f"({tiling.count(*image.shape[:2])} tiles, {computed:.2f}x the pixels computed)")
    for i, clock in enumerate(("wall-clock", "CPU")):
        print(f"tiling overhead ({clock}): {100 * (t_tiled[i] / t_bare[i] - 1):+.0f}% against the "
              f"whole-image call, {100 * (t_tiled[i] / t_plain[i] - 1):+.0f}% against "
              "non-overlapping tiles")

    print(f"seam ratio (1.0 = invisible): {seam_ratio(tiled, tiling):.3f} with overlap "
          f"{args.overlap};  {seam_ratio(hard, no_overlap):.3f} without overlap;  "
          f"{seam_ratio(image, tiling):.3f} for the input at the same borders")
    whole = to_uint8(bare).astype(np.float32)
    print(f"tiled vs whole-image output: mean |difference| "
          f"{np.abs(tiled - whole).mean():.2f} grey levels (overlap {args.overlap}), "
          f"{np.abs(hard - whole).mean():.2f} (no overlap)")
    if args.big:
        peak_memory(cfg, generator, args)


def sample_base() -> np.ndarray:
    """The two test regions of the sample, side by side: one contiguous 512 x 1024 H&E strip."""
    return np.concatenate([read_image(p) for p in list_images(SAMPLE)], axis=1)


def mirrored(base: np.ndarray, height: int, width: int, top: int = 0) -> np.ndarray:
    """Rows ``top:top+height`` of ``base`` mirror-tiled to ``width`` columns (no jumps)."""
    def index(n: int, start: int, count: int) -> np.ndarray:
        i = np.arange(start, start + count) % (2 * n - 2)
        return np.where(i < n, i, 2 * n - 2 - i)

    return base[index(base.shape[0], top, height)][:, index(base.shape[1], 0, width)]


def warm_up(generator: object) -> None:
    # Two shapes make TensorFlow relax the traced shapes, so no timed call retraces.
    for shape in ((1, 64, 64, 3), (1, 96, 128, 3), (2, 64, 96, 3)):
        generator.predict_on_batch(np.zeros(shape, np.float32))


def best_of(repeat: int):
    """A timer that runs a pass ``repeat`` times, prints its fastest, returns (out, wall, cpu)."""
    def timed(label, mp, fn):
        runs = []
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn()
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = min(runs)
        print(f"{label:42s} {wall:7.1f} {mp / wall:6.2f} {cpu:7.1f} {mp / cpu:8.2f}")
        return out, wall, cpu

    return timed


def peak_memory(cfg, generator, args) -> None:
    """Translate a SIDE x SIDE tiled TIFF in a fresh process and print its peak RSS."""
    side = args.big
    with tempfile.TemporaryDirectory(prefix="stainvirt-bench-") as tmp:
        tmp = Path(tmp)
        run = RunDir(tmp)
        run.save_config(cfg)
        for direction in DIRECTIONS:
            run.save_generator(generator, direction)
        base, source = sample_base(), tmp / "big.tif"
        start = time.perf_counter()
        bands = (mirrored(base, min(512, side - y), side, y) for y in range(0, side, 512))
        write_tiff(source, side, side, bands, SAMPLE_MPP)
        print(f"\n{side} x {side} input TIFF ({source.stat().st_size / 1e9:.2f} GB) written in "
              f"{time.perf_counter() - start:.0f} s; translating it in a fresh process ...")
        # The child reports its own high-water mark: getrusage(RUSAGE_CHILDREN) would
        # also count the pages the child shared with this (large) process before exec.
        code = (
            "import re, sys; from pathlib import Path; from stainvirt.translate import Translator; "
            "t = Translator.from_run(sys.argv[1], 'A2B', tile_size=int(sys.argv[4]), "
            "overlap=int(sys.argv[5])); t.translate_file(sys.argv[2], sys.argv[3], 'tiff'); "
            "print(re.search(r'VmHWM:\\s*(\\d+)', Path('/proc/self/status').read_text())[1])"
        )
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", code, str(tmp), str(source), str(tmp / "out"),
             str(args.tile_size), str(args.overlap)],
            check=True, stdout=subprocess.PIPE, text=True,
        )
        seconds = time.perf_counter() - start
        peak = int(child.stdout.split()[-1]) / 2**20  # KiB -> GiB
        print(f"translated {side * side / 1e6:.0f} MP in {seconds:.0f} s "
              f"({side * side / 1e6 / seconds:.2f} MP/s, TIFF reading and writing included); "
              f"peak RSS (VmHWM) of that process: {peak:.2f} GiB")

if __name__ == "__main__":
    main()
