"""``train()``: data set + config -> a run folder, resumable at any point.

The run folder holds ``config.json``, the inference models ``G_AB.keras`` and
``G_BA.keras``, the full training state ``state.weights.h5``, ``history.csv``,
``losses.png`` and ``samples/epoch_NNN.png``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stainvirt.config import CONFIG_FILE, Config, size_multiple
from stainvirt.dataset import load_prepared
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import remove_stale_temps
from stainvirt.training.callbacks import RunCheckpoint, StopGuard, read_history
from stainvirt.training.data import UnpairedSampler, make_dataset
from stainvirt.training.state import STATE_FILE, load_state

log = logging.getLogger("stainvirt")

# Fields that change how, not what, a run computes: they may differ on resume.
EXECUTION_FIELDS = ("jit_compile", "strategy")
SAMPLES_PER_DOMAIN = 2
SAMPLE_SIDE = 128


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    run_dir: Path
    epochs_done: int
    steps_done: int
    stopped: str
    """``finished``, ``time budget``, ``interrupted`` or ``stopped`` (by a callback)."""


def resolve_config(run_dir: Path, cfg: Config | None, overrides: dict | None = None) -> Config:
    """The config to train with: a fresh one, or the run folder's saved one when resuming.

    Args:
        run_dir: the run folder.
        cfg: the requested config; None to take the saved one.
        overrides: fields explicitly changed on the command line (checked on resume).

    Raises:
        StainvirtError: when resuming a folder that holds a different config.
    """
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        if cfg is None:
            raise StainvirtError(
                f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a new run"
            )
        return cfg.replace(**(overrides or {}))
    saved = Config.load(saved_path)
    wanted = (cfg or saved).replace(**(overrides or {}))
    differ = [
        f"{f}: saved {getattr(saved, f)!r}, requested {getattr(wanted, f)!r}"
        for f in saved.to_dict()
        if f not in EXECUTION_FIELDS and getattr(saved, f) != getattr(wanted, f)
    ]
    if differ:
        raise StainvirtError(
            f"{run_dir} holds a run with a different config ({'; '.join(differ)}); "
            "resume it with --resume and no other settings, or choose a new --out"
        )
    return saved.replace(**{f: getattr(wanted, f) for f in EXECUTION_FIELDS})


def make_strategy(name: str):  # -> tf.distribute.Strategy
    """The ``tf.distribute`` strategy for ``auto``, ``default``, ``mirrored`` or ``multiworker``.

    ``auto`` mirrors over all GPUs when there are several and uses one device
    otherwise; ``mirrored`` without GPUs mirrors over the logical CPU devices;
    ``multiworker`` reads the cluster from ``TF_CONFIG``.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise StainvirtError("--strategy multiworker needs TF_CONFIG set on every host")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def sample_tiles(tiles: np.ndarray, cfg: Config) -> np.ndarray:
    """A few centre crops the generators accept, for the per-epoch sample grid."""
    multiple = size_multiple(cfg)
    side = min(SAMPLE_SIDE, *tiles.shape[1:3]) // multiple * multiple
    y0, x0 = (tiles.shape[1] - side) // 2, (tiles.shape[2] - side) // 2
    return tiles[:SAMPLES_PER_DOMAIN, y0 : y0 + side, x0 : x0 + side]


def train(
    data: str | Path,
    run_dir: str | Path,
    cfg: Config | None = None,
    *,
    overrides: dict | None = None,
    max_minutes: float | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Train a CycleGAN on a prepared data set into ``run_dir``; resume if it holds a run.

    Args:
        data: the ``.npz`` from ``stainvirt prepare`` (or the name of its shards).
        run_dir: the run folder (created if needed).
        cfg: configuration for a new run; None resumes the folder's saved one.
        overrides: explicitly requested field changes (on resume they must match).
        max_minutes: stop cleanly after this many minutes, saving everything first.
        callbacks: extra Keras callbacks (a callback that sets ``model.stop_training``
            stops the run cleanly, saved, like the time budget).
        verbose: Keras progress output (``"auto"``: a bar on a terminal, else a line per epoch).

    Returns:
        A :class:`TrainResult`.

    Raises:
        StainvirtError: for a bad data set, config, or run folder, or a NaN loss.
    """
    import keras

    from stainvirt.training.cyclegan import CycleGAN

    run_dir = Path(run_dir)
    cfg = resolve_config(run_dir, cfg, overrides)
    prepared = load_prepared(data)
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.mixed_precision else "float32")
    strategy = make_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise StainvirtError(
            f"--batch-size {cfg.batch_size} does not split over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    sampler = UnpairedSampler(prepared.tiles["trainA"], prepared.tiles["trainB"], cfg)
    with strategy.scope():
        model = CycleGAN(cfg, sampler.steps_per_epoch)
        model.build_optimizers()
        model.compile(jit_compile=cfg.jit_compile)
    epochs_done = 0
    if run_dir.is_dir():
        remove_stale_temps(run_dir)  # left by a killed run
    if (run_dir / STATE_FILE).is_file():
        epochs_done = load_state(run_dir / STATE_FILE, model)
        log.info("resuming %s after %d epochs", run_dir, epochs_done)
    cfg.save(run_dir)
    history = [r for r in read_history(run_dir / "history.csv") if r["epoch"] <= epochs_done]
    guard = StopGuard(max_minutes)
    tests = {d: prepared.tiles[f"test{d}"] if len(prepared.tiles[f"test{d}"]) else
             prepared.tiles[f"train{d}"] for d in "AB"}
    checkpoint = RunCheckpoint(
        run_dir, guard, sample_tiles(tests["A"], cfg), sample_tiles(tests["B"], cfg), history
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    spe = sampler.steps_per_epoch
    stopped = "finished"
    try:
        for first_epoch, last_epoch, steps in _phases(model.steps_done, spe, cfg):
            model.fit(
                make_dataset(sampler, start_step=first_epoch * spe + (spe - steps)),
                epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                callbacks=[guard, checkpoint, *(callbacks or [])], verbose=verbose,
                shuffle=False,
            )
            if model.stop_training:
                stopped = guard.reason or "stopped"
                break
    except KeyboardInterrupt:
        step = model.steps_done
        checkpoint.save(-(-step // spe))
        stopped = "interrupted"
    if guard.diverged:
        raise StainvirtError(
            f"training diverged ({guard.reason}) at step {model.steps_done}; "
            f"{run_dir} keeps the last good checkpoint. Try a lower --lr, or --seed"
        )
    step = model.steps_done
    return TrainResult(run_dir, step // spe, step, stopped)


def _phases(step: int, steps_per_epoch: int, cfg: Config) -> list[tuple[int, int, int]]:
    """``fit`` calls ``(initial_epoch, epochs, steps_per_epoch)`` that finish the run from ``step``.

    A run stopped mid-epoch first completes that epoch's remaining steps.
    """
    epoch, done = divmod(step, steps_per_epoch)
    phases = []
    if done:
        phases.append((epoch, epoch + 1, steps_per_epoch - done))
        epoch += 1
    if epoch < cfg.total_epochs:
        phases.append((epoch, cfg.total_epochs, steps_per_epoch))
    return phases
