"""Callbacks that make a run safe to watch, stop and resume."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from stainvirt.domain import Domain
from stainvirt.rundir import DIRECTIONS, RunDir
from stainvirt.training.cyclegan import LOSS_NAMES
from stainvirt.training.figures import save_loss_plot, save_sample_grid

STEP_COLUMNS = ("epoch", "step", "lr", "seconds")
HISTORY_COLUMNS = (*STEP_COLUMNS, *LOSS_NAMES)
"""Columns of ``history.csv``; a run with a structure loss adds its two after these."""


class StopGuard(keras.callbacks.Callback):
    """Stops after the current step when the time budget is spent or a loss is not finite.

    Args:
        max_minutes: time budget from the start of training (None: no limit).
    """

    def __init__(self, max_minutes: float | None = None) -> None:
        super().__init__()
        self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        self.reason: str | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad:
            self.reason = f"nan: {', '.join(bad)}"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "time budget"
        if self.reason:
            self.model.stop_training = True

    @property
    def diverged(self) -> bool:
        return bool(self.reason and self.reason.startswith("nan"))


class RunCheckpoint(keras.callbacks.Callback):
    """At each epoch's end: models, history, plots, a sample grid, then the full state.

    The state is written last, so whatever a crash interrupts, the state on disk
    is a complete, earlier one and the run resumes from it.

    Args:
        run: the run folder.
        guard: the run's :class:`StopGuard` (no checkpoint after a NaN).
        sample_a: A tiles (stored pixels) for the sample grid.
        sample_b: B tiles (stored pixels) for the sample grid.
        history: rows of the epochs already done (when resuming).
        domains: ``{"A": Domain, "B": Domain}`` of the tiles (None: both RGB).
    """

    def __init__(
        self,
        run: RunDir,
        guard: StopGuard,
        sample_a: np.ndarray,
        sample_b: np.ndarray,
        history: list[dict[str, float]],
        domains: dict[str, Domain] | None = None,
    ) -> None:
        super().__init__()
        self.run = run
        self.domains = domains
        self.guard = guard
        self.sample_a, self.sample_b = sample_a, sample_b
        self.history = history
        self.epoch_started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.guard.diverged:
            return
        model = self.model
        step = model.steps_done
        row = {
            "epoch": epoch + 1,
            "step": step,
            "lr": round(float(model.g_schedule(max(step - 1, 0))), 10),
            "seconds": round(time.monotonic() - self.epoch_started, 2),
            **{k: round(float((logs or {}).get(k, float("nan"))), 6) for k in model.loss_names},
        }
        # A partly done epoch (stopped early, then resumed) keeps only its latest row.
        self.history = [r for r in self.history if r["epoch"] != epoch + 1] + [row]
        self.save(epoch + 1)

    def save(self, epoch: int) -> None:
        """Write everything for the state after ``epoch`` (possibly partial) epochs."""
        model, run = self.model, self.run
        for direction in DIRECTIONS:
            run.save_generator(model.generator(direction), direction)
        run.write_history(self.history, (*STEP_COLUMNS, *model.loss_names))
        if self.history:
            save_loss_plot(run.losses_path, self.history)
        save_sample_grid(
            run.sample_path(epoch), model.G_AB, model.G_BA,
            self.sample_a, self.sample_b, title=f"epoch {epoch}", domains=self.domains,
        )
        run.save_state(model, epoch)
