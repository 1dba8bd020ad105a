"""Training throughput (images/s) of the CycleGAN per preset, with and without XLA, against PyTorch.

Prints figures; not a test. "One image" is one A tile and one B tile through a
whole CycleGAN step (both generators forwards and backwards, both
discriminators, both Adam updates), the reference implementation's meaning, so
images/s = batch_size * steps / seconds.

Ours runs the real code path: ``CycleGAN(cfg, steps_per_epoch)``,
``build_optimizers()``, ``compile(jit_compile=...)`` and ``fit`` on
``make_dataset(UnpairedSampler(...))`` fed with random uint8 tiles of the
preset's load size (``--data sample``: the repository's sample tiles). A
callback times each batch; warm-up steps (tracing, XLA compilation) are left out.

The reference is the PyTorch CycleGAN (``bench/torch_reference.py``, a copy of
junyanz/pytorch-CycleGAN-and-pix2pix's networks and ``optimize_parameters``)
at the same batch size, crop and network sizes. Only its step is timed (its
data is made outside the clock, as its DataLoader workers would). Its steps are
interleaved with ours, one after each of our steps, so both see the same load
on a shared machine; compare the ratio, not the absolute figures. PyTorch is
optional: without it the bench prints "torch not installed".

Starvation: "pipeline ms" is the time per batch of ``make_dataset`` iterated
alone; "cached img/s" is ``fit`` on one batch held in memory (no pipeline work
at all), for the faster XLA setting. The pipeline starves the step when ours is
clearly below cached. The cached run is skipped by default when the pipeline
costs under 1% of a step (``--cached`` forces it).

Threads: TF's intra-op pool defaults to one thread per CPU; torch gets the same
number unless ``--torch-threads`` says otherwise. On a machine shared with other
jobs, PyTorch's OpenMP barriers suffer more than TF's thread pool from losing a
core, so try ``--torch-threads 1`` too and quote the reference's better figure.

    python bench/train_speed.py                      # every preset, XLA off and on, + torch
    python bench/train_speed.py --presets paper --no-jit --steps 6
    python bench/train_speed.py --presets tiny,cpu --no-torch --threads 1
    python bench/train_speed.py --presets paper --torch-threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so `python bench/train_speed.py` runs from a checkout

from stainvirt.config import Config, preset  # noqa: E402

# Defaults per preset: (warm-up steps, timed steps). A paper step takes many
# seconds on 2 CPU cores, so it gets fewer.
DEFAULT_STEPS = {"tiny": (3, 20), "cpu": (3, 10), "paper": (1, 3)}
TILES_PER_DOMAIN = 8


@dataclass
class Result:
    """Timings of one configuration."""

    preset: str
    cfg: Config
    jit: bool
    first_step_s: float = 0.0
    pipeline_s: float = 0.0
    ours: list[float] = field(default_factory=list)
    torch: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)


def images_per_s(cfg: Config, seconds: list[float]) -> float:
    """batch_size * steps / total seconds (nan when nothing was timed)."""
    return cfg.batch_size * len(seconds) / sum(seconds) if seconds else float("nan")


def make_tiles(cfg: Config, source: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Domain A and B uint8 tiles: random ones of the load (or crop) size, or the sample tiles."""
    if source == "sample":
        from stainvirt.io.images import list_images, read_image

        def read(folder: str) -> np.ndarray:
            return np.stack([read_image(p) for p in list_images(ROOT / "data" / "sample" / folder)])

        return read("trainA"), read("trainB")
    side = cfg.load_size or cfg.image_size
    rng = np.random.default_rng(seed)
    shape = (TILES_PER_DOMAIN, side, side, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)


class TorchStepper:
    """Runs and times reference steps on batches from our sampler (converted off the clock)."""

    def __init__(self, cfg: Config, sampler) -> None:
        from torch_reference import CycleGANReference

        self.model = CycleGANReference.from_config(cfg)
        self.sampler = sampler
        self.step = 0

    def __call__(self) -> float:
        from torch_reference import to_tensor

        a, b = self.sampler.batch(self.step)
        self.step += 1
        self.model.set_input(to_tensor(a), to_tensor(b))
        start = time.perf_counter()
        self.model.optimize_parameters()
        return time.perf_counter() - start


def time_fit(model, dataset, warmup: int, steps: int, between=None) -> tuple[float, list[float]]:
    """``fit`` for ``warmup + steps`` steps; return the first step's and the timed steps' seconds.

    Each step is timed from the end of the previous batch callback (after
    ``between`` ran) to the end of its own, so it includes ``fit``'s own
    overhead and the wait for the next batch from the pipeline.
    ``between(timed)`` runs after every step (e.g. one reference step).
    """
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []
            self.resumes: list[float] = []

        def on_train_begin(self, logs=None) -> None:
            self.resumes.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.ends.append(time.perf_counter())
            if between is not None:
                between(batch >= warmup)
            self.resumes.append(time.perf_counter())

    timer = Timer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0,
              shuffle=False)
    spans = [end - start for start, end in zip(timer.resumes, timer.ends, strict=False)]
    return spans[0], spans[warmup:]


def time_pipeline(dataset, batches: int) -> float:
    """Seconds per batch of the input pipeline alone (after its first batch)."""
    it = iter(dataset)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def run_preset(name: str, jits: list[bool], args, torch_ok: bool) -> list[Result]:
    """Time one preset: each jit setting (torch steps interleaved), the pipeline, the cached run."""
    import keras
    import tensorflow as tf

    from stainvirt.training.cyclegan import CycleGAN
    from stainvirt.training.data import UnpairedSampler, make_dataset

    cfg = preset(name, seed=0)
    warmup, steps = DEFAULT_STEPS.get(name, (3, 10))
    warmup = args.warmup if args.warmup is not None else warmup
    steps = args.steps or steps
    tiles_a, tiles_b = make_tiles(cfg, args.data)
    sampler = UnpairedSampler(tiles_a, tiles_b, cfg)

    def build(jit: bool):
        keras.utils.set_random_seed(cfg.seed)
        model = CycleGAN(cfg, sampler.steps_per_epoch)
        model.build_optimizers()
        model.compile(jit_compile=jit)
        return model

    def interleave(res: Result):
        """One reference step after each of ours, timed into ``res.torch`` once warm."""
        if not torch_ok:
            return None
        stepper = TorchStepper(cfg, sampler)

        def between(timed: bool) -> None:
            seconds = stepper()
            if timed:
                res.torch.append(seconds)

        return between

    results = []
    for jit in jits:
        res = Result(name, cfg, jit)
        res.first_step_s, res.ours = time_fit(build(jit), make_dataset(sampler), warmup, steps,
                                              interleave(res))
        results.append(res)
        print(f"  {name} XLA {'on ' if jit else 'off'}: {images_per_s(cfg, res.ours):.3g} img/s "
              f"(first step {res.first_step_s:.1f} s)", flush=True)

    best = max(results, key=lambda r: images_per_s(cfg, r.ours))
    pipeline = time_pipeline(make_dataset(sampler), max(steps, 20))
    for res in results:
        res.pipeline_s = pipeline
    cheap = best.ours and pipeline < 0.01 * statistics.median(best.ours)
    if args.cached or (args.cached is None and not cheap):
        # The faster setting again, on one in-memory batch: no pipeline work at all.
        a, b = sampler.batch(0)
        to_float = lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0  # noqa: E731
        cached = tf.data.Dataset.from_tensors((to_float(a), to_float(b))).repeat()
        # Interleaved like the run it is compared with (its torch steps count too).
        _, best.cached = time_fit(build(best.jit), cached, warmup, steps, interleave(best))
        print(f"  {name} XLA {'on ' if best.jit else 'off'}, cached batch: "
              f"{images_per_s(cfg, best.cached):.3g} img/s", flush=True)
    return results


def thread_report(torch_ok: bool) -> str:
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    line = (f"TF {tf.__version__}: intra-op threads {intra or f'default ({os.cpu_count()})'}, "
            f"inter-op {inter or 'default'}; oneDNN opts "
            f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}")
    if torch_ok:
        import torch

        line += f"; torch {torch.__version__}: {torch.get_num_threads()} threads"
    return line + f"; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"


def print_table(results: list[Result], torch_ok: bool) -> None:
    def fmt(value: float) -> str:
        return "-" if np.isnan(value) else f"{value:.3g}"

    head = ("preset", "crop", "batch", "XLA", "first s", "s/step", "ours img/s", "torch img/s",
            "ours/torch", "cached img/s", "pipeline ms")
    rows = []
    for r in results:
        ours = images_per_s(r.cfg, r.ours)
        torch_rate = images_per_s(r.cfg, r.torch)
        rows.append((
            r.preset, str(r.cfg.image_size), str(r.cfg.batch_size), "on" if r.jit else "off",
            f"{r.first_step_s:.1f}",
            f"{statistics.median(r.ours):.3g}" if r.ours else "-",
            fmt(ours), fmt(torch_rate) if torch_ok else "n/a",
            fmt(ours / torch_rate) if torch_ok else "n/a",
            fmt(images_per_s(r.cfg, r.cached)),
            f"{r.pipeline_s * 1000:.3g}" if r.pipeline_s else "-",
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("\n" + " | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="tiny,cpu,paper", help="comma-separated preset names")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per configuration (default: tiny 20, cpu 10, paper 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed first steps (default: 3; paper 1)")
    jit = p.add_mutually_exclusive_group()
    jit.add_argument("--jit", dest="jit", action="store_const", const=[True],
                     help="only with XLA (jit_compile=True)")
    jit.add_argument("--no-jit", dest="jit", action="store_const", const=[False],
                     help="only without XLA")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="interleave the PyTorch reference's steps (default: on if installed)")
    p.add_argument("--cached", action=argparse.BooleanOptionalAction, default=None,
                   help="also time fit on one in-memory batch, the starvation check (default: "
                        "only when the pipeline costs over 1%% of a step)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of TF (default: TF's own, one per CPU)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch threads (default: as TF's)")
    p.add_argument("--data", choices=("random", "sample"), default="random",
                   help="random tiles of the load size, or data/sample's tiles")
    args = p.parse_args()
    jits = args.jit or [False, True]

    import tensorflow as tf

    threads = args.threads or os.cpu_count() or 1
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    torch_ok = False
    if args.torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: no reference figures (pip install torch to get them)")
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            torch.set_num_threads(args.torch_threads or threads)
            torch_ok = True
    print(thread_report(torch_ok))

    results = []
    for name in args.presets.split(","):
        results += run_preset(name.strip(), jits, args, torch_ok)
    print_table(results, torch_ok)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")
    if torch_ok:
        print("torch: the reference's networks (transposed-conv ResNet, tanh head) at the preset's "
              "sizes; ratio > 1: ours faster")


if __name__ == "__main__":
    main()
