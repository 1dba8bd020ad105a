"""Peak memory and training speed against data set size: tiles in memory or streamed.

Prints figures; not a test. For each data set size (``--tiles``, total tiles of
both domains) a data set is written with the real writer
(``stainvirt.shards.ShardWriter`` + ``Tile``, ``prepare``'s settings for 8-bit
RGB and its default shard size): tiles of ``--tile-size`` px cut at seeded random
positions, randomly flipped, from the bundled ``data/sample/trainA`` (domain A)
and ``data/sample/trainB`` (domain B) images, so they compress like real tissue;
half the tiles per domain, 90% train / 10% test. Generation time and size on
disk are printed.

Each data set is then trained on in a fresh subprocess per mode:

* ``memory``: ``memory_mb=1e9``, every training tile in RAM;
* ``streamed``: ``memory_mb=0``, unpacked once into ``NAME.tiles/`` and read tile by tile;
* ``default``: ``memory_mb=stainvirt.training.tiles.MEMORY_MB`` (2048).

so each peak RSS is that run's own. It is ``VmHWM`` from ``/proc/self/status``,
not ``ru_maxrss``: Linux carries ``ru_maxrss`` over fork and exec, so a child of
this process (which held a shard's ~1 GB buffer while generating) would report
at least the parent's peak.

The unpacked copy is removed before each run. The child times
``open_training_tiles`` twice (the first call unpacks when streamed, the second
reuses the copy; in memory both load everything), then ``train()`` with the
``cpu`` preset for one epoch of ``--steps`` steps. "train s" is ``train()``'s
wall time (setup, its own open, graph tracing, checkpoint included); "steady
img/s" is ``batch_size * steps / seconds`` over the batches after the first 20,
from a Keras callback. "RSS open" is the peak after the two opens (with TF
imported), "peak RSS" the peak of the whole run.

    .venv/bin/python bench/data_scale.py                       # 2,000 and 50,000 tiles
    .venv/bin/python bench/data_scale.py --tiles 2000 --steps 50 --keep /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
WARMUP = 20
MEMORY_LIMIT = 8e9  # skip the in-memory run above this many bytes of training tiles
TEST_SHARE = 0.1


def settings_for(tile_size: int, seed: int) -> dict:
    """The settings ``prepare`` records for two RGB folders without test folders."""
    from stainvirt import __version__
    from stainvirt.domain import RGB
    from stainvirt.tissue import DEFAULT_MIN_TISSUE

    return {
        "tile_size": tile_size, "min_tissue": DEFAULT_MIN_TISSUE, "mpp": None,
        "magnification": None, "tiles_per_slide": None, "test_fraction": TEST_SHARE,
        "seed": seed,
        "inputs": {"trainA": str(SAMPLE / "trainA"), "trainB": str(SAMPLE / "trainB"),
                   "testA": None, "testB": None},
        "paired": False, "image_pairs": 0, "kinds": {"A": "rgb", "B": "rgb"},
        "domains": {d: RGB.to_dict() for d in "AB"}, "stainvirt_version": __version__,
    }


def generate(out: Path, tiles: int, tile_size: int, seed: int = 0) -> list[Path]:
    """Write a data set of ``tiles`` tiles (half per domain) to ``out``; its files."""
    from stainvirt.prepare import DEFAULT_SHARD_MB
    from stainvirt.shards import ShardWriter, Tile

    rng = np.random.default_rng(seed)
    writer = ShardWriter(out, int(DEFAULT_SHARD_MB * 1e6), settings_for(tile_size, seed))
    try:
        for domain, count in (("A", tiles - tiles // 2), ("B", tiles // 2)):
            images = [(p.name, np.asarray(Image.open(p).convert("RGB")))
                      for p in sorted((SAMPLE / f"train{domain}").iterdir())]
            n_train = count - round(TEST_SHARE * count)
            for i in range(count):  # train tiles first, then test, as prepare's jobs go
                name, image = images[rng.integers(len(images))]
                if min(image.shape[:2]) < tile_size:
                    sys.exit(f"{name} is smaller than --tile-size {tile_size}")
                y = int(rng.integers(0, image.shape[0] - tile_size + 1))
                x = int(rng.integers(0, image.shape[1] - tile_size + 1))
                tile = image[y : y + tile_size, x : x + tile_size]
                if rng.random() < 0.5:
                    tile = tile[:, ::-1]
                if rng.random() < 0.5:
                    tile = tile[::-1]
                split = f"{'train' if i < n_train else 'test'}{domain}"
                writer.add(Tile(split, np.ascontiguousarray(tile), name, y, x))
        writer.flush()
        return writer.commit()
    finally:
        writer.discard()


def peak_mb() -> float:
    """This process's peak RSS in MiB (VmHWM: starts afresh at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(data: str, run_dir: str, memory_mb: float, steps: int) -> None:
    """One run in this (fresh) process; prints its figures as one JSON line."""
    import keras

    from stainvirt.config import preset
    from stainvirt.training.tiles import open_training_tiles
    from stainvirt.training.trainer import train

    opens = []
    for _ in range(2):
        start = time.perf_counter()
        tiles = open_training_tiles(data, memory_mb)
        opens.append(time.perf_counter() - start)
        streamed = tiles.streamed
        del tiles
    rss_open = peak_mb()

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.ends.append(time.perf_counter())

    cfg = preset("cpu").replace(epochs=1, epochs_decay=0, steps_per_epoch=steps)
    timer = Timer()
    start = time.perf_counter()
    train(data, run_dir, cfg, verbose=0, memory_mb=memory_mb, callbacks=[timer])
    total = time.perf_counter() - start
    ends = timer.ends
    steady = (cfg.batch_size * (len(ends) - 1 - WARMUP) / (ends[-1] - ends[WARMUP])
              if len(ends) > WARMUP + 1 else float("nan"))
    print(json.dumps({"open": opens[0], "reopen": opens[1], "streamed": streamed,
                      "rss_open": rss_open, "rss": peak_mb(), "steady": steady,
                      "train": total, "batches": len(ends)}))


def disk_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def run_child(data: Path, run_dir: Path, memory_mb: float, steps: int) -> dict:
    shutil.rmtree(data.with_name(f"{data.stem}.tiles"), ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", str(data), str(run_dir), repr(memory_mb),
           str(steps)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="2000,50000", help="data set sizes, comma-separated")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="write here and keep (default: a temp dir)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        data, run_dir, memory_mb, steps = args.child
        child(data, run_dir, float(memory_mb), int(steps))
        return

    from stainvirt.training.tiles import MEMORY_MB

    sizes = [int(n) for n in args.tiles.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="data_scale-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    rows = []
    try:
        for n in sizes:
            out = work / f"scale{n}_{args.tile_size}px.npz"
            start = time.perf_counter()
            files = generate(out, n, args.tile_size)
            seconds = time.perf_counter() - start
            raw_mb = n * args.tile_size**2 * 3 / 1e6
            print(f"{n:,} tiles of {args.tile_size} px: generated in {seconds:.1f} s, "
                  f"{len(files)} file(s), {disk_mb(files):.0f} MB on disk "
                  f"({raw_mb:.0f} MB of pixels)", flush=True)
            train_bytes = raw_mb * 1e6 * (1 - TEST_SHARE)
            for mode, memory_mb in (("memory", 1e9), ("streamed", 0.0), ("default", MEMORY_MB)):
                if mode == "memory" and train_bytes > MEMORY_LIMIT:
                    print(f"  {mode}: skipped ({train_bytes / 1e9:.1f} GB of training tiles)")
                    continue
                run_dir = work / f"run{n}_{mode}"
                shutil.rmtree(run_dir, ignore_errors=True)
                result = run_child(out, run_dir, memory_mb, args.steps)
                print(f"  {mode}: {json.dumps(result)}", flush=True)
                rows.append((n, disk_mb(files), mode, result))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    cores = len(os.sched_getaffinity(0))
    load_end = os.getloadavg()
    print(f"\nmachine: {cores} cores available ({os.cpu_count()} in all); load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)} at start, "
          f"{' '.join(f'{x:.2f}' for x in load_end)} at end; {args.tile_size} px tiles, "
          f"cpu preset, {args.steps} steps\n")
    print("| tiles | on disk MB | mode | streamed | open s (first) | reopen s | "
          "RSS open MB | peak RSS MB | steady img/s | train s |")
    print("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, size, mode, r in rows:
        print(f"| {n:,} | {size:,.0f} | {mode} | {'yes' if r['streamed'] else 'no'} | "
              f"{r['open']:.1f} | {r['reopen']:.2f} | {r['rss_open']:,.0f} | {r['rss']:,.0f} | "
              f"{r['steady']:.1f} | {r['train']:.1f} |")


if __name__ == "__main__":
    main()
