"""``train()``: data set + config -> a run folder, resumable and extendable at any point.

The run folder's layout is :class:`stainvirt.rundir.RunDir`'s. A run records the
data set that trained it; resuming continues exactly where it stopped, and
raising ``epochs`` / ``epochs_decay`` extends it from there.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.config import Config, size_multiple
from stainvirt.domain import domains_from
from stainvirt.errors import StainvirtError
from stainvirt.rundir import RunDir
from stainvirt.training.callbacks import RunCheckpoint, StopGuard
from stainvirt.training.data import UnpairedSampler, make_dataset
from stainvirt.training.jit import fit_with_fallback, resolve_jit_compile
from stainvirt.training.threads import configure_threads
from stainvirt.training.tiles import MEMORY_MB, SAMPLES, TrainingTiles, open_training_tiles

log = logging.getLogger("stainvirt")

# Fields that change how, not what, a run computes: they may differ on resume.
EXECUTION_FIELDS = ("jit_compile", "strategy")
# Fields that may change on resume to extend (or shorten) a run's schedule.
SCHEDULE_FIELDS = ("epochs", "epochs_decay")
# Fields the data set decides (its domains' channels), never a request.
DATA_FIELDS = ("channels_a", "channels_b")
SAMPLE_SIDE = 128


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    run_dir: Path
    epochs_done: int
    steps_done: int
    stopped: str
    """``finished``, ``time budget``, ``interrupted`` or ``stopped`` (by a callback)."""


def resolve_config(
    run: RunDir, cfg: Config | None, overrides: dict | None = None, resume: bool = False
) -> tuple[Config, Config | None]:
    """The config to train with, and the saved one when the folder holds a run.

    Args:
        run: the run folder.
        cfg: the requested config; None to take the saved one.
        overrides: fields explicitly changed on the command line.
        resume: the folder must hold a run already.

    Returns:
        ``(config, saved)``; ``saved`` is None for a new run. On resume the
        config is the saved one, with the execution fields of the request and
        the schedule fields given in ``overrides`` (which extend the run).

    Raises:
        StainvirtError: when there is nothing to resume, or the folder holds a run
            whose config differs in more than the schedule and execution fields.
    """
    if not run.holds_run():
        if cfg is None or resume:
            raise StainvirtError(
                f"{run.path}: nothing to resume (no {RunDir.CONFIG}); start a new run"
            )
        return cfg.replace(**(overrides or {})), None
    saved = run.load_config()
    wanted = (cfg or saved).replace(**(overrides or {}))
    differ = [
        f"{f}: saved {getattr(saved, f)!r}, requested {getattr(wanted, f)!r}"
        for f in saved.to_dict()
        if f not in EXECUTION_FIELDS + SCHEDULE_FIELDS + DATA_FIELDS
        and getattr(saved, f) != getattr(wanted, f)
    ]
    if differ:
        raise StainvirtError(
            f"{run.path} holds a run with a different config ({'; '.join(differ)}); on "
            "resume only --epochs and --epochs-decay (to extend it), --jit-compile and "
            "--strategy may change: drop the other settings, or choose a new --out"
        )
    # A preset's own schedule is not a request to change it: only explicit overrides are.
    schedule = {f: v for f, v in (overrides or {}).items() if f in SCHEDULE_FIELDS}
    execution = {f: getattr(wanted, f) for f in EXECUTION_FIELDS}
    return saved.replace(**execution, **schedule), saved


def load_training_data(
    run: RunDir, data: str | Path | None, memory_mb: float = MEMORY_MB
) -> tuple[TrainingTiles, dict[str, Any]]:
    """The data set to train on and the record ``data.json`` will hold.

    Args:
        run: the run folder.
        data: the data set asked for; None for the one the run recorded.
        memory_mb: training tiles up to this size are held in memory, larger
            data sets streamed (:func:`open_training_tiles`).

    Returns:
        ``(data set, record)``; the record still lacks ``steps_per_epoch`` for a
        new run.

    Raises:
        StainvirtError: when there is no data set to use, its domains (channels,
            pixel type or intensity range) are not the run's, or the recorded one
            has changed and ``data`` does not say to go on with it.
    """
    recorded, explicit = run.data_record(), data is not None
    if data is None:
        if recorded is None:
            raise StainvirtError(
                f"{run.path} records no data set; pass --data with the .npz to train on"
            )
        data = recorded["path"]
    path = Path(data).absolute()
    # The unpacked copy of a large data set goes beside it, or in the run if that is read-only.
    beside = path.with_name(f"{path.stem}.tiles")
    cache = beside if os.access(path.parent, os.W_OK) else run.path / "tiles"
    prepared = open_training_tiles(path, memory_mb, cache)
    domains = prepared.domains
    record = {"path": str(path), "fingerprint": prepared.fingerprint,
              "counts": prepared.counts, "prepare_settings": prepared.settings,
              "domains": {d: domain.to_dict() for d, domain in domains.items()}}
    if recorded is None:
        return prepared, record
    trained = domains_from(recorded)
    if trained != domains:
        raise StainvirtError(
            f"{path} holds A: {domains['A'].describe()}, B: {domains['B'].describe()}, but "
            f"{run.path} was trained on A: {trained['A'].describe()}, B: "
            f"{trained['B'].describe()}; a run keeps its domains: resume it on data of that "
            "kind, or choose a new --out"
        )
    record["steps_per_epoch"] = recorded["steps_per_epoch"]
    record["earlier"] = recorded.get("earlier", [])
    if record["fingerprint"] == recorded["fingerprint"]:
        return prepared, record
    was = f"{recorded['path']} ({_counts(recorded['counts'])})"
    if not explicit:
        raise StainvirtError(
            f"{path} has changed since {run.path} was trained on it (was {was}, now "
            f"{_counts(record['counts'])}); pass --data {path} to go on with the new content, "
            "or choose a new --out"
        )
    log.warning(
        "resuming %s on another data set: %s (%s) instead of %s; epochs keep their recorded "
        "%d steps; %s keeps both", run.path, path, _counts(record["counts"]), was,
        recorded["steps_per_epoch"], RunDir.DATA,
    )
    earlier = {k: v for k, v in recorded.items() if k != "earlier"}
    record["earlier"] = [*record["earlier"], earlier]
    return prepared, record


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counts.items())


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
    return tiles[:SAMPLES, y0 : y0 + side, x0 : x0 + side]


def train(
    data: str | Path | None,
    run_dir: str | Path,
    cfg: Config | None = None,
    *,
    overrides: dict | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    memory_mb: float = MEMORY_MB,
) -> TrainResult:
    """Train a CycleGAN on a prepared data set into ``run_dir``; resume if it holds a run.

    Resuming continues exactly where the run stopped. Raising ``epochs`` or
    ``epochs_decay`` in ``overrides`` extends a run, finished or not: training
    goes on from where it is, with the learning rate of the new schedule. The
    networks' channel counts come from the data set's domains, which a run keeps.

    Args:
        data: the ``.npz`` from ``stainvirt prepare`` (or the name of its shards);
            None to resume on the data set the run recorded. Resuming with
            another data set than the recorded one is allowed, with a warning.
        run_dir: the run folder (created if needed).
        cfg: configuration for a new run; None resumes the folder's saved one.
        overrides: explicitly requested field changes (on resume, only the
            schedule and execution fields may differ from the saved config, and
            only these change the schedule).
        resume: refuse to start a new run: ``run_dir`` must hold one.
        max_minutes: stop cleanly after this many minutes, saving everything first.
        callbacks: extra Keras callbacks (a callback that sets ``model.stop_training``
            stops the run cleanly, saved, like the time budget).
        verbose: Keras progress output (``"auto"``: a bar on a terminal, else a line per epoch).
        memory_mb: hold the training tiles in memory up to this many megabytes;
            a larger data set is unpacked once beside itself (``NAME.tiles/``)
            and streamed from there, with the same batches.

    Returns:
        A :class:`TrainResult`.

    Raises:
        StainvirtError: for a bad data set, config, or run folder, or a NaN loss.
    """
    import keras

    run = RunDir(run_dir)
    cfg, saved = resolve_config(run, cfg, overrides, resume)
    prepared, record = load_training_data(run, data, memory_mb)
    domains = prepared.domains
    cfg = cfg.replace(channels_a=domains["A"].channels, channels_b=domains["B"].channels)
    if cfg.lambda_identity > 0 and cfg.channels_a != cfg.channels_b:
        log.info("no identity loss: domains A and B have different channel counts")
    configure_threads(cfg)  # before TensorFlow runs its first op
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.mixed_precision else "float32")
    pairs = None
    if cfg.lambda_paired > 0:
        pairs = prepared.pairs
        if not len(pairs):
            raise StainvirtError(
                f"--lambda-paired {cfg.lambda_paired:g} needs registered pairs, and "
                f"{record['path']} has none: prepare it with --paired (files matched by "
                "name), or set --lambda-paired 0"
            )
    sampler = UnpairedSampler(
        prepared.train["A"], prepared.train["B"], cfg, record.get("steps_per_epoch"), pairs,
    )
    record["steps_per_epoch"] = spe = sampler.steps_per_epoch
    model = _build_model(cfg, spe)
    run.remove_stale_temps()  # left by a killed run
    epochs_done = run.load_state(model) if run.has_state() else 0
    if saved is not None:
        _log_resume(run, saved, cfg, model.steps_done, spe)
    run.save_config(cfg)
    run.save_data_record(record)
    guard = StopGuard(max_minutes)
    tests = prepared.samples
    history = [r for r in run.read_history() if r["epoch"] <= epochs_done]
    checkpoint = RunCheckpoint(
        run, guard, sample_tiles(tests["A"], cfg), sample_tiles(tests["B"], cfg), history, domains
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    stopped = "finished"
    try:
        for first_epoch, last_epoch, steps in _phases(model.steps_done, spe, cfg):
            fit_with_fallback(
                model, cfg, partial(make_dataset, sampler, first_epoch * spe + (spe - steps),
                                    domains),
                epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                callbacks=[guard, checkpoint, *(callbacks or [])], verbose=verbose,
                shuffle=False,
            )
            if model.stop_training:
                stopped = guard.reason or "stopped"
                break
    except KeyboardInterrupt:
        checkpoint.save(-(-model.steps_done // spe))
        stopped = "interrupted"
    if guard.diverged:
        raise StainvirtError(
            f"training diverged ({guard.reason}) at step {model.steps_done}; "
            f"{run.path} keeps the last good checkpoint. Try a lower --lr, or --seed"
        )
    step = model.steps_done
    return TrainResult(run.path, step // spe, step, stopped)


def _build_model(cfg: Config, steps_per_epoch: int):  # -> CycleGAN
    """The CycleGAN with built optimizers, compiled, under the config's distribution strategy."""
    from stainvirt.training.cyclegan import CycleGAN

    strategy = make_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise StainvirtError(
            f"--batch-size {cfg.batch_size} does not split over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    with strategy.scope():
        model = CycleGAN(cfg, steps_per_epoch)
        model.build_optimizers()
        model.compile(jit_compile=resolve_jit_compile(cfg, replicas))
    return model


def _log_resume(run: RunDir, saved: Config, cfg: Config, step: int, spe: int) -> None:
    """Say where a resumed run stands; refuse a schedule that ends before that point."""
    from stainvirt.training.schedule import LinearDecay

    done = step / spe
    if step > cfg.total_epochs * spe:
        raise StainvirtError(
            f"{run.path} has trained {done:g} epochs already, more than the "
            f"{cfg.total_epochs} (--epochs {cfg.epochs} + --epochs-decay {cfg.epochs_decay}) "
            "asked for; ask for at least as many, or choose a new --out"
        )
    changes = [f"{f} {getattr(saved, f)} -> {getattr(cfg, f)}" for f in SCHEDULE_FIELDS
               if getattr(saved, f) != getattr(cfg, f)]
    if not changes:
        if step == cfg.total_epochs * spe:
            log.info("%s has finished its %d epochs; raise --epochs or --epochs-decay to train "
                     "it longer", run.path, cfg.total_epochs)
        elif step:
            log.info("resuming %s at epoch %g of %d", run.path, done, cfg.total_epochs)
        return
    old, new = (float(LinearDecay(c.lr, c.epochs, c.epochs_decay, spe)(step)) for c in (saved, cfg))
    log.info(
        "extending %s from epoch %g: %s, %d epochs in all; learning rate now %.3g (the old "
        "schedule's: %.3g)", run.path, done, ", ".join(changes), cfg.total_epochs, new, old,
    )


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
