"""``stainvirt train``: train a CycleGAN on a prepared data set into a run folder."""

from __future__ import annotations

import argparse
import dataclasses

from stainvirt.config import PRESETS, Config

DESCRIPTION = """\
Train a CycleGAN (G_AB: A->B, H&E->IHC; G_BA: B->A; discriminators D_A, D_B)
on the .npz written by 'stainvirt prepare'. Losses: LSGAN adversarial,
cycle-consistency L1 and identity L1; Adam with a constant, then linearly
decaying learning rate.

Presets: 'cpu' (default: fits 2 CPU cores, learns a colour mapping in minutes),
'paper' (the reference CycleGAN settings, for a GPU), 'tiny' (smoke tests).
Every config field can be overridden with its own option below.

The run folder (--out) gets config.json, G_AB.keras and G_BA.keras (for
'stainvirt translate'), the full training state (state.weights.h5),
history.csv, losses.png and samples/epoch_NNN.png (real, fake and
reconstructed tiles after each epoch). Everything is written atomically at the
end of each epoch, on Ctrl-C, and when --max-minutes runs out. Running the same
command again (or --resume) continues exactly where it stopped: same epoch,
optimizer state and learning rate.
"""

EPILOG = """\
examples:
  stainvirt train --data data/stain.npz --out runs/demo --max-minutes 5
  stainvirt train --data data/stain.npz --out runs/paper --preset paper --epochs 50
  stainvirt train --out runs/demo --resume          # continue a stopped run
  stainvirt train --data data/stain.npz --out runs/multi --preset paper --strategy mirrored
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a CycleGAN on a prepared .npz",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="FILE.npz", help="prepared data set (default: data/stain.npz)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="starting settings for a new run (default: cpu)"
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out with its saved config (re-running into it does too)",
    )
    p.add_argument(
        "--max-minutes", type=float, metavar="M",
        help="stop cleanly after M minutes, saving models and state first",
    )
    fields = p.add_argument_group(
        "config fields (override the preset; saved in config.json)"
    )
    for f in dataclasses.fields(Config):
        option = "--" + f.name.replace("_", "-")
        kwargs: dict = {"dest": f"field_{f.name}", "default": None, "help": f.metadata["help"]}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            kwargs["metavar"] = "N" if f.type == "int" else "X" if f.type == "float" else "NAME"
        fields.add_argument(option, **kwargs)
    p.set_defaults(func=run)


def overrides_from(args: argparse.Namespace) -> dict:
    """The config fields given explicitly on the command line."""
    values = {f.name: getattr(args, f"field_{f.name}") for f in dataclasses.fields(Config)}
    return {k: v for k, v in values.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    """Run ``stainvirt train``."""
    from pathlib import Path

    from stainvirt.config import CONFIG_FILE, preset
    from stainvirt.errors import StainvirtError
    from stainvirt.training.trainer import train

    run_dir = Path(args.out)
    resuming = args.resume or (run_dir / CONFIG_FILE).is_file()
    if args.resume and not (run_dir / CONFIG_FILE).is_file():
        raise StainvirtError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a new run")
    # On resume the saved config is the base; a preset only when asked for explicitly.
    base = preset(args.preset or "cpu") if args.preset or not resuming else None
    data = args.data or "data/stain.npz"
    result = train(
        data, run_dir, base, overrides=overrides_from(args), max_minutes=args.max_minutes,
        verbose=0 if args.quiet else "auto",
    )
    how = {
        "finished": "finished",
        "time budget": "stopped at the time budget (run the same command to continue)",
        "interrupted": "interrupted and saved (run the same command to continue)",
    }.get(result.stopped, "stopped")
    print(
        f"training {how}: {result.epochs_done} epochs, {result.steps_done} steps; "
        f"models and samples in {run_dir}"
    )
    return 130 if result.stopped == "interrupted" else 0
