"""``stainvirt train``: train a CycleGAN on a prepared data set into a run folder."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
from collections.abc import Iterator

from stainvirt.config import PRESETS, Config
from stainvirt.training.tiles import MEMORY_MB

DESCRIPTION = """\
Train a CycleGAN (G_AB: A->B, H&E->IHC; G_BA: B->A; discriminators D_A, D_B)
on the .npz written by 'stainvirt prepare'. Losses: LSGAN adversarial,
cycle-consistency L1 and identity L1; Adam with a constant, then linearly
decaying learning rate.

Presets: 'cpu' (default: fits 2 CPU cores, learns a colour mapping in minutes),
'context' (unpaired, with 96 px crops and a U-Net that see the tissue around a
cell), 'counterstain' (context with generators that start from the input's
hematoxylin alone, so an H&E starts as an IHC with no marker, and a stronger identity
loss: for a marker on a hematoxylin counterstain that leaves most tissue unstained;
the demo's),
'paired' (the cpu recipe plus supervision from registered pairs: a data set
prepared with --paired), 'paired-context' (paired, with 96 px crops and a
U-Net that see the tissue around a cell: for a marker that stains one
compartment and not another, as cytokeratin does), 'paper' (the reference CycleGAN
settings, for a GPU), 'tiny' (smoke tests). Every config field can be
overridden with its own option.

Registered pairs (adjacent sections, BCI/MIST-style data): --lambda-paired W
adds, per direction, W times an L1 loss between the translation of one side of
a pair and the other side, taken over a Gaussian pyramid of --paired-levels
levels. Adjacent sections are never aligned to the pixel: each level halves the
resolution and so the misregistration, the coarse levels say where the stain
goes, and the adversarial and cycle losses keep the result sharp.

Structure consistency: --lambda-structure W adds, per generator, W times one
minus the local correlation (SSIM's structure term) of the grey levels of its
input and output. Brightness, contrast and colour may change; structure may
not move or vanish: nuclei stay where they are, and a label-free domain
(phase, autofluorescence, X-ray CT) keeps its anatomy. Between H&E and an IHC
with a hematoxylin counterstain, --structure-channel hematoxylin compares the
hematoxylin optical density instead, so the eosin may go but no nucleus may.

Label-free domains: the channel count, pixel type and intensity range of each
domain come from the data set (prepare records them); a run keeps them, and
resuming on data of another kind is refused. Between domains of different
channel counts there is no identity loss.

The run folder (--out) gets config.json, data.json (which data set trained it:
path, tile counts, content fingerprint, domains), G_AB.keras and G_BA.keras (for
'stainvirt translate'), the full training state (state.h5), history.csv,
losses.png and samples/epoch_NNN.png (real, fake and reconstructed tiles after
each epoch). Everything is written atomically at the end of each epoch, on
Ctrl-C or SIGTERM, and when --max-minutes runs out.

Resuming: running the same command again (or --resume) continues exactly where
the run stopped: same epoch, optimizer state and learning rate, on the data set
it recorded (--data is then optional; a different one is used only when given
explicitly, with a warning).

Extending: resume with a larger --epochs or --epochs-decay to train longer,
also after the run finished. Training goes on from where it is with the new
schedule: while the run is still in its constant-learning-rate phase, the
result is exactly what a run planned that long from the start gives; once the
decay has begun, the learning rate continues on the new, longer decay line (one
line says where). Other config fields are refused on resume, except
--jit-compile and --strategy.
"""

EPILOG = """\
examples:
  stainvirt train --data data/stain.npz --out runs/demo --max-minutes 5
  stainvirt train --data data/stain.npz --out runs/paper --preset paper --epochs 50
  stainvirt train --out runs/demo --resume                 # continue a stopped run
  stainvirt train --out runs/demo --resume --epochs 40     # train a (finished) run longer
  stainvirt train --data data/stain.npz --out runs/multi --preset paper --strategy mirrored
"""

DEFAULT_DATA = "data/stain.npz"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a CycleGAN on a prepared .npz",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", metavar="FILE.npz",
        help=f"prepared data set (default: the one a resumed run recorded; {DEFAULT_DATA} for "
             "a new run)",
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="starting settings for a new run (default: cpu)"
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue (or, with a larger --epochs, extend) the run in --out with its saved "
             "config; re-running into it does too",
    )
    p.add_argument(
        "--max-minutes", type=float, metavar="M",
        help="stop cleanly after M minutes, saving models and state first",
    )
    p.add_argument(
        "--memory-mb", type=float, default=MEMORY_MB, metavar="MB",
        help=f"hold the training tiles in memory up to this many MB (default {MEMORY_MB}); a "
             "larger data set is unpacked once beside itself (NAME.tiles/) and streamed from "
             "there, tile by tile, with the same batches",
    )
    fields = p.add_argument_group(
        "config fields (override the preset; saved in config.json)"
    )
    for f in option_fields():
        option = "--" + f.name.replace("_", "-")
        kwargs: dict = {"dest": f"field_{f.name}", "default": None, "help": f.metadata["help"]}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            kwargs["metavar"] = "N" if f.type == "int" else "X" if f.type == "float" else "NAME"
            if f.metadata["choices"]:
                kwargs["choices"] = f.metadata["choices"]
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        fields.add_argument(option, **kwargs)
    p.set_defaults(func=run)


def option_fields() -> list[dataclasses.Field]:
    """The config fields with an option: all but those set from the data (channels)."""
    return [f for f in dataclasses.fields(Config) if f.metadata.get("cli", True)]


def overrides_from(args: argparse.Namespace) -> dict:
    """The config fields given explicitly on the command line."""
    values = {f.name: getattr(args, f"field_{f.name}") for f in option_fields()}
    return {k: v for k, v in values.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    """Run ``stainvirt train``."""
    from stainvirt.config import preset
    from stainvirt.rundir import RunDir
    from stainvirt.training.trainer import train

    run_dir = RunDir(args.out)
    resuming = args.resume or run_dir.holds_run()
    # On resume the saved config is the base; a preset only when asked for explicitly.
    base = preset(args.preset or "cpu") if args.preset or not resuming else None
    data = args.data or (None if resuming else DEFAULT_DATA)
    with _stop_signals_interrupt():
        result = train(
            data, run_dir.path, base, overrides=overrides_from(args), resume=args.resume,
            max_minutes=args.max_minutes, verbose=0 if args.quiet else "auto",
            memory_mb=args.memory_mb,
        )
    how = {
        "finished": "finished",
        "time budget": "stopped at the time budget (run the same command to continue)",
        "interrupted": "interrupted and saved (run the same command to continue)",
    }.get(result.stopped, "stopped")
    print(f"training {how}: {result.epochs_done} epochs, {result.steps_done} steps; "
          f"models in {run_dir.path}")
    print(f"  samples: {run_dir.samples_dir}/  losses: {run_dir.losses_path}")
    return 130 if result.stopped == "interrupted" else 0


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a scheduler's stop) both save the run and exit.

    SIGINT is handled even where the process inherited it ignored (started in the
    background by a shell or a test runner), so ``kill -INT`` always saves.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
