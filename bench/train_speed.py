"""Training throughput (images/s) of the CycleGAN per preset, XLA off / on / auto, against PyTorch.

Prints figures; not a test. "One image" is one A and one B tile through a whole
CycleGAN step (the reference's meaning), so images/s = batch_size * steps / seconds.

Ours runs the real code path: ``CycleGAN(cfg, steps_per_epoch)``,
``build_optimizers()``, ``compile(jit_compile=...)`` and ``fit`` on
``make_dataset(UnpairedSampler(...))`` fed with random uint8 tiles of the
preset's load size (``--data sample``: the repository's sample tiles). A
callback times each batch; warm-up steps (tracing, XLA compilation) are left out.
XLA modes: ``off`` and ``on`` pass ``jit_compile=False``/``True``; ``auto``
passes what ``stainvirt.training.jit.resolve_jit_compile(cfg)`` decides (skipped
with a note where that module does not exist) and reuses the timings of
``off``/``on`` when that setting is timed anyway.

The reference is the PyTorch CycleGAN (``bench/torch_reference.py``, a copy of
junyanz/pytorch-CycleGAN-and-pix2pix's networks and ``optimize_parameters``,
plus our ``upsample="resize"`` and ``residual_output`` for the cpu preset)
at the same batch size, crop and network sizes; parameter counts are checked.
Only its step is timed, in its own process (its data is made outside the clock,
as its DataLoader workers would). Its steps are interleaved with ours, one
after each of our steps, so both see the same load on a shared machine; compare the ratio, not
the absolute figures. ``--rounds N`` times every mode N times in turn. PyTorch
is optional: without it the bench prints "torch not installed".

Conv efficiency: achieved GFLOP/s (conv FLOPs of a step, 3x forward per trained
pass, 2x per frozen discriminator pass: the rule in ``bench/flops.py``) as a
fraction of the machine's best conv throughput, measured at the run's start and
end on one 3x3 256 -> 256 conv at 64x64 (TF, TF with XLA and torch, alternating).

Starvation: "pipeline ms" is the time per batch of ``make_dataset`` iterated
alone; "cached img/s" is ``fit`` on one batch held in memory (no pipeline work
at all), for the fastest setting. The pipeline starves the step when ours is
clearly below cached. The cached run is skipped by default when the pipeline
costs under 1% of a step (``--cached`` forces it).

Threads: TF's intra-op threads are what ``stainvirt train`` picks for the
(first) preset (``stainvirt.training.threads``: one for small steps such as
cpu's and tiny's, one per CPU otherwise; TF fixes them once per process, so
time presets that differ in separate runs), or ``--threads``; torch has one
per CPU, its default, unless ``--torch-threads`` says otherwise. The reference
runs in a process of its own (``bench/torch_worker.py``): in one process, each
framework's spinning idle threads slowed the other (the cpu preset's reference
step 10-30x).

    python bench/train_speed.py                      # every preset, XLA off/on/auto, + torch
    python bench/train_speed.py --presets paper --no-jit --steps 6
    python bench/train_speed.py --presets tiny,cpu --no-torch --threads 1
    python bench/train_speed.py --presets paper --modes on,auto --rounds 2
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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
sys.path.insert(0, str(ROOT / "bench"))  # flops.py, report.py, torch_worker.py

from flops import conv_throughput, describe_probe, step_flops  # noqa: E402
from report import MODES, gflops, images_per_s, print_tables, thread_report  # noqa: E402

from stainvirt.config import Config, preset  # noqa: E402

# Defaults per preset: (warm-up steps, timed steps). A paper step takes many
# seconds on 2 CPU cores, so it gets fewer.
DEFAULT_STEPS = {"tiny": (3, 40), "cpu": (3, 40), "paper": (1, 3)}
# Steps per turn of each side: a block of quick steps, so that one side's threads,
# still spinning after its turn, slow only the other's first step (left out).
DEFAULT_BLOCK = {"tiny": 10, "cpu": 10, "paper": 1}
TILES_PER_DOMAIN = 8
JIT_MODULE = "stainvirt.training.jit"


@dataclass
class Result:
    """Timings of one ``jit_compile`` setting of one preset; ``modes`` are the columns it fills."""

    preset: str
    cfg: Config
    jit: bool
    modes: list[str]
    gflop_step: float = float("nan")
    first_step_s: float = 0.0
    pipeline_s: float = 0.0
    ours: list[float] = field(default_factory=list)
    torch: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)


def resolve_auto(cfg: Config) -> bool | None:
    """``resolve_jit_compile(cfg)`` with ``jit_compile="auto"``; None when the module is missing."""
    if importlib.util.find_spec(JIT_MODULE) is None:
        return None
    resolve = importlib.import_module(JIT_MODULE).resolve_jit_compile
    return bool(resolve(cfg.replace(jit_compile="auto")))


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


def time_fit(
    model, dataset, warmup: int, steps: int, between=None, drop_after: bool = False
) -> tuple[float, list[float]]:
    """``fit`` for ``warmup + steps`` steps; return the first step's and the timed steps' seconds.

    Each step is timed from the end of the previous batch callback (after
    ``between`` ran) to the end of its own, so it includes ``fit``'s own
    overhead and the wait for the next batch from the pipeline.
    ``between(timed)`` runs after every step (e.g. a block of reference steps
    every few steps); a step right after one where it says it ran something is
    left out when ``drop_after`` is set (the other side's threads still spin).
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
            ran = between is not None and between(batch >= warmup)
            self.after.append(ran and drop_after)
            self.resumes.append(time.perf_counter())

    timer = Timer()
    timer.after = [False]
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0,
              shuffle=False)
    spans = [end - start for start, end in zip(timer.resumes, timer.ends, strict=False)]
    return spans[0], [s for s, drop in zip(spans[warmup:], timer.after[warmup:], strict=False)
                      if not drop]


def time_pipeline(dataset, batches: int) -> float:
    """Seconds per batch of the input pipeline alone (after its first batch)."""
    it = iter(dataset)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def check_parameters(model, worker) -> None:
    """Print ours and the reference's parameter counts per network (they must match)."""
    ours = [getattr(model, net).count_params() for net in ("G_AB", "D_A")]
    line = "  parameters: ours G {:,}, D {:,}".format(*ours)
    if worker is not None:
        ref = [worker.parameter_counts()[net] for net in ("G_A", "D_A")]
        line += "; torch G {:,}, D {:,} ".format(*ref) + (
            "(match)" if ref == ours else "(MISMATCH: not the same networks)")
    print(line, flush=True)


def run_preset(name: str, modes: list[str], args, worker) -> list[Result]:
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
    gflop_step = step_flops(cfg)["step"] / 1e9
    print(f"{name}: {cfg.image_size} px crops, batch {cfg.batch_size}, "
          f"{gflop_step:.3g} conv GFLOP per step", flush=True)

    results: dict[bool, Result] = {}
    for mode in modes:
        jit = {"off": False, "on": True}.get(mode)
        if mode == "auto":
            jit = resolve_auto(cfg)
            if jit is None:
                print(f"  XLA auto: skipped ({JIT_MODULE} does not exist here)", flush=True)
                continue
            print(f"  XLA auto: resolve_jit_compile -> {'on' if jit else 'off'}", flush=True)
        if jit not in results:
            results[jit] = Result(name, cfg, jit, [], gflop_step)
        results[jit].modes.append(mode)

    def build(jit: bool):
        keras.utils.set_random_seed(cfg.seed)
        model = CycleGAN(cfg, sampler.steps_per_epoch)
        model.build_optimizers()
        model.compile(jit_compile=jit)
        return model

    if worker is not None:
        worker.model(cfg, sampler)

    block = args.block or DEFAULT_BLOCK.get(name, 1)

    def interleave(res: Result):
        """``block`` reference steps after each ``block`` of ours, timed into ``res.torch``."""
        return worker.interleaved(res.torch, block) if worker else None

    models = {}
    for round_ in range(args.rounds):
        for jit, res in results.items():
            if jit not in models:
                models[jit] = build(jit)
                if len(models) == 1:
                    check_parameters(models[jit], worker)
            # Later rounds reuse the compiled step: one untimed step for the new iterator.
            first, spans = time_fit(models[jit], make_dataset(sampler),
                                    warmup if round_ == 0 else min(warmup, 1), steps,
                                    interleave(res), drop_after=block > 1)
            res.first_step_s = first if round_ == 0 else res.first_step_s
            res.ours += spans
            print(f"  {name} XLA {'on ' if jit else 'off'} ({'/'.join(res.modes)})"
                  f"{f', round {round_ + 1}' if args.rounds > 1 else ''}: "
                  f"{images_per_s(cfg, spans):.3g} img/s, {gflops(res, spans):.3g} GFLOP/s"
                  f"{f' (first step {first:.1f} s)' if round_ == 0 else ''}", flush=True)
    if not results:
        return []

    best = max(results.values(), key=lambda r: images_per_s(cfg, r.ours))
    pipeline = time_pipeline(make_dataset(sampler), max(steps, 20))
    for res in results.values():
        res.pipeline_s = pipeline
    cheap = best.ours and pipeline < 0.01 * statistics.median(best.ours)
    if args.cached or (args.cached is None and not cheap):
        # The faster setting again, on one in-memory batch: no pipeline work at all.
        a, b = sampler.batch(0)
        to_float = lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0  # noqa: E731
        cached = tf.data.Dataset.from_tensors((to_float(a), to_float(b))).repeat()
        # Interleaved like the run it is compared with (its torch steps count too).
        _, best.cached = time_fit(build(best.jit), cached, warmup, steps, interleave(best),
                                  drop_after=block > 1)
        print(f"  {name} XLA {'on ' if best.jit else 'off'}, cached batch: "
              f"{images_per_s(cfg, best.cached):.3g} img/s", flush=True)
    return list(results.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="tiny,cpu,paper", help="comma-separated preset names")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per setting and round (default: tiny 20, cpu 10, paper 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed first steps (default: 3; paper 1); later rounds: 1")
    p.add_argument("--rounds", type=int, default=1,
                   help="time the XLA settings in turn this many times (default: 1)")
    jit = p.add_mutually_exclusive_group()
    jit.add_argument("--modes", default="off,on,auto",
                     help="XLA modes to time, of off,on,auto (default: all three)")
    jit.add_argument("--jit", dest="modes", action="store_const", const="on",
                     help="only with XLA (jit_compile=True)")
    jit.add_argument("--no-jit", dest="modes", action="store_const", const="off",
                     help="only without XLA")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="interleave the PyTorch reference's steps (default: on if installed)")
    p.add_argument("--cached", action=argparse.BooleanOptionalAction, default=None,
                   help="also time fit on one in-memory batch, the starvation check (default: "
                        "only when the pipeline costs over 1%% of a step)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of TF (default: stainvirt train's for the first preset)")
    p.add_argument("--block", type=int, default=0,
                   help="steps per turn of each side (default: tiny and cpu 10, paper 1); the "
                        "first step of each turn is left out when above 1")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch threads (default: one per CPU, torch's own)")
    p.add_argument("--data", choices=("random", "sample"), default="random",
                   help="random tiles of the load size, or data/sample's tiles")
    p.add_argument("--conv-reps", type=int, default=8,
                   help="timed calls of the conv throughput probe per framework (default: 8)")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or args.rounds < 1:
        p.error(f"--modes takes a comma-separated subset of {','.join(MODES)}; --rounds >= 1")

    import tensorflow as tf

    from stainvirt.training.threads import intra_op_threads

    presets = [name.strip() for name in args.presets.split(",")]
    picks = {name: intra_op_threads(preset(name)) for name in presets}
    threads = args.threads or picks[presets[0]]
    if not args.threads and len(set(picks.values())) > 1:
        print(f"note: stainvirt train picks different threads for {', '.join(presets)}; "
              f"this run uses {presets[0]}'s for all: time them separately")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    worker = None
    if args.torch:
        from torch_worker import TorchWorker

        try:
            worker = TorchWorker(args.torch_threads or os.cpu_count() or 1)
        except ImportError as exc:
            print(f"{exc}: no reference figures (pip install torch to get them)")
    torch_ok = worker is not None
    print(thread_report(worker))
    print("FLOPs: conv layers only, 2 per MAC; a trained network pass counts 3x its forward, "
          "a discriminator frozen under the generators' loss 2x (bench/flops.py)")

    conv = [conv_throughput(worker, args.conv_reps)]
    print(f"conv throughput, {describe_probe()}: "
          + ", ".join(f"{k} {v:.3g} GFLOP/s" for k, v in conv[0].items()), flush=True)
    results = []
    for name in presets:
        results += run_preset(name, modes, args, worker)
    conv.append(conv_throughput(worker, args.conv_reps))
    if worker is not None:
        worker.close()
    print("conv throughput at the end: "
          + ", ".join(f"{k} {v:.3g} GFLOP/s" for k, v in conv[1].items()))
    if not results:
        return
    print_tables(results, torch_ok, conv)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")
    if torch_ok:
        print("torch: the reference's networks at the preset's sizes, with the preset's upsampling "
              "and output head; ratio > 1: ours faster")


if __name__ == "__main__":
    main()
