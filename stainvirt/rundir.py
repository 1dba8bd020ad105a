"""The run folder: one object owns its layout and every file read from or written to it.

A run folder is what ``stainvirt train --out`` writes and what ``translate``
and ``evaluate`` read through ``--model``::

    config.json        the Config that built the networks (translate needs nothing else)
    data.json          the data set that trained the run: path, tile counts, content
                       fingerprint, steps per epoch, each domain's channels and
                       intensity range (earlier data sets, if it changed)
    G_AB.keras         generator A -> B (direction A2B; the paper's G)
    G_BA.keras         generator B -> A (direction B2A; the paper's F)
    state.h5           the full training state: networks, optimizers, image pools, epoch
    history.csv        losses and learning rate, one row per epoch
    losses.png         the same as curves
    samples/epoch_NNN.png   real, fake and reconstructed test tiles after each epoch

No other module spells these names. Every write is atomic (temporary file,
then rename), so a killed run leaves complete files and, at worst, temporary
ones that :meth:`RunDir.remove_stale_temps` clears on the next start.

Naming: ``D_A`` judges domain A (real H&E against ``G_BA``'s fakes) and ``D_B``
judges domain B. The reference implementation names them the other way round
(its ``netD_A`` judges domain B).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from stainvirt.config import Config
from stainvirt.domain import Domain, domains_from
from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import atomic_path, atomic_write_text, remove_stale_temps
from stainvirt.io.slide import Resolution


class Direction(NamedTuple):
    """A translation direction: the generator that performs it and its two stains."""

    generator: str
    source: str
    target: str
    reverse: str


DIRECTIONS = {
    "A2B": Direction("G_AB", "H&E", "IHC", "B2A"),
    "B2A": Direction("G_BA", "IHC", "H&E", "A2B"),
}
"""``--direction`` values and what each means."""


def check_direction(direction: str) -> str:
    """``A2B`` or ``B2A`` (any case), else a clear error."""
    normal = str(direction).upper()
    if normal not in DIRECTIONS:
        raise StainvirtError(
            f"unknown direction {direction!r}; use A2B (H&E -> IHC) or B2A (IHC -> H&E)"
        )
    return normal


# history.csv columns renamed since stainvirt 0.1, so its runs resume.
_LEGACY_COLUMNS = {"idt_A": "G_AB_idt", "idt_B": "G_BA_idt"}


class RunDir:
    """A run folder: where each file lives, and reading and writing it.

    Args:
        path: The folder (it need not exist yet).

    Examples:
        >>> run = RunDir("runs/demo")
        >>> cfg = run.load_config()
        >>> g_ab = run.load_generator("A2B")
    """

    CONFIG = "config.json"
    DATA = "data.json"
    STATE = "state.h5"
    LEGACY_STATE = "state.weights.h5"
    HISTORY = "history.csv"
    LOSSES = "losses.png"
    SAMPLES = "samples"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # Where things are.
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def data_path(self) -> Path:
        return self.path / self.DATA

    @property
    def state_path(self) -> Path:
        legacy = self.path / self.LEGACY_STATE
        if legacy.is_file() and not (self.path / self.STATE).is_file():
            return legacy  # a run started by stainvirt 0.1 goes on under its own name
        return self.path / self.STATE

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def losses_path(self) -> Path:
        return self.path / self.LOSSES

    @property
    def samples_dir(self) -> Path:
        return self.path / self.SAMPLES

    def sample_path(self, epoch: int) -> Path:
        """The sample grid written after ``epoch`` epochs."""
        return self.samples_dir / f"epoch_{epoch:03d}.png"

    def generator_path(self, direction: str) -> Path:
        """``G_AB.keras`` for ``A2B``, ``G_BA.keras`` for ``B2A``."""
        return self.path / f"{DIRECTIONS[check_direction(direction)].generator}.keras"

    def holds_run(self) -> bool:
        """Whether training has started here (the config is written first)."""
        return self.config_path.is_file()

    def has_state(self) -> bool:
        """Whether a training state to resume from has been saved."""
        return self.state_path.is_file()

    # The config.
    def load_config(self) -> Config:
        """The run's config.

        Raises:
            StainvirtError: if the folder or its config is missing or corrupt.
        """
        if not self.path.is_dir():
            raise StainvirtError(
                f"{self.path}: run folder not found; point --model at a folder written by "
                "'stainvirt train' (e.g. runs/NAME)"
            )
        if not self.holds_run():
            raise StainvirtError(
                f"{self.path}: no {self.CONFIG} found; point --model at a run folder written "
                "by 'stainvirt train'"
            )
        try:
            values = json.loads(self.config_path.read_text())
        except (OSError, ValueError) as exc:
            raise StainvirtError(
                f"{self.config_path}: cannot read the config ({exc}); it is corrupt"
            ) from exc
        if not isinstance(values, dict):
            raise StainvirtError(f"{self.config_path}: expected a JSON object of config fields")
        return Config.from_dict(values)

    def save_config(self, cfg: Config) -> Path:
        """Write ``config.json`` atomically."""
        atomic_write_text(self.config_path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
                          + "\n")
        return self.config_path

    # The data set that trained the run.
    def data_record(self) -> dict[str, Any] | None:
        """What ``data.json`` records (None for a run that has none yet)."""
        if not self.data_path.is_file():
            return None
        try:
            return json.loads(self.data_path.read_text())
        except (OSError, ValueError) as exc:
            raise StainvirtError(
                f"{self.data_path}: cannot read the data-set record ({exc}); it is corrupt. "
                "Delete it and resume with --data"
            ) from exc

    def training_resolution(self) -> Resolution | None:
        """The resolution prepare read the run's data set at; None if it set none.

        Prepare's ``--mpp`` or ``--magnification``, for reading slides the same way;
        files without a pixel size are then read at their own resolution, with a warning.
        """
        settings = (self.data_record() or {}).get("prepare_settings") or {}
        mpp, magnification = settings.get("mpp"), settings.get("magnification")
        if mpp is None and magnification is None:
            return None
        return Resolution(mpp, magnification, required=False)

    def domains(self) -> dict[str, Domain]:
        """``{"A": Domain, "B": Domain}`` the run was trained on (RGB for runs that predate them).

        How translation reads and scales its input and writes its output.
        """
        return domains_from(self.data_record())

    def save_data_record(self, record: dict[str, Any]) -> Path:
        """Write ``data.json`` atomically."""
        atomic_write_text(self.data_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return self.data_path

    # Generators.
    def load_generator(self, direction: str) -> Any:
        """The ``keras.Model`` that translates in ``direction``.

        Raises:
            StainvirtError: if the model file is missing or does not load.
        """
        path = self.generator_path(direction)
        if not path.is_file():
            raise StainvirtError(
                f"{path}: model not found; the run has not saved its generators yet "
                "(train it for at least one epoch) or --model points at the wrong folder"
            )
        import keras

        import stainvirt.models  # noqa: F401  (registers the custom layers for loading)

        try:
            return keras.models.load_model(path, compile=False)
        except Exception as exc:  # keras raises many exception types for a bad file
            raise StainvirtError(
                f"{path}: the model does not load ({type(exc).__name__}: {exc}); "
                "the file is damaged or from another program: retrain or copy it again"
            ) from exc

    def save_generator(self, generator: Any, direction: str) -> Path:
        """Write the ``keras.Model`` of ``direction`` atomically."""
        path = self.generator_path(direction)
        with atomic_path(path) as tmp:
            generator.save(tmp)
        return path

    # Training state.
    def save_state(self, model: Any, epoch: int) -> Path:
        """Write the CycleGAN's full training state after ``epoch`` (possibly partial) epochs."""
        from stainvirt.training.state import save_state

        save_state(self.state_path, model, epoch)
        return self.state_path

    def load_state(self, model: Any) -> int:
        """Restore the full training state into ``model``; returns the finished epochs.

        Raises:
            StainvirtError: if the state is unreadable or was written for other
                networks (a variable's name or shape differs).
        """
        from stainvirt.training.state import load_state

        return load_state(self.state_path, model)

    # History.
    def read_history(self) -> list[dict[str, float]]:
        """Rows of ``history.csv`` (empty if there is none)."""
        if not self.history_path.is_file():
            return []
        with self.history_path.open() as f:
            return [
                {_LEGACY_COLUMNS.get(k, k): int(v) if k in ("epoch", "step") else float(v)
                 for k, v in row.items()}
                for row in csv.DictReader(f)
            ]

    def write_history(self, rows: list[dict[str, float]], columns: Sequence[str]) -> None:
        """Write ``history.csv`` atomically, one row per epoch."""
        buffer = io.StringIO()
        # Rows of an earlier version may lack a column: written as nan, not left blank.
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="nan", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.history_path, buffer.getvalue())

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files an interrupted write of this run's files left."""
        names = (self.CONFIG, self.DATA, self.STATE, self.LEGACY_STATE, self.HISTORY, self.LOSSES)
        return remove_stale_temps([
            *(self.path / name for name in names),
            *(self.generator_path(d) for d in DIRECTIONS),
            self.samples_dir / "epoch_*.png",
        ])

    @classmethod
    def latest(cls, parent: str | Path) -> RunDir | None:
        """The run folder under ``parent`` whose config was written last (None if none)."""
        runs = [cls(p) for p in Path(parent).glob("*/") if cls(p).holds_run()]
        return max(runs, key=lambda r: r.config_path.stat().st_mtime, default=None)
