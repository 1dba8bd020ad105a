"""The ``stainvirt`` command: a thin layer over the Python API.

Each subcommand lives in its own module with ``register(subparsers)`` and
``run(args) -> int``; heavy imports (TensorFlow) happen inside ``run`` so that
``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from stainvirt import __version__
from stainvirt.cli import quiet
from stainvirt.errors import StainvirtError

COMMANDS = ("prepare", "train", "translate", "evaluate")


class _Parser(argparse.ArgumentParser):
    """Reports usage mistakes as one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = _Parser(
        prog="stainvirt",
        description=(
            "Unpaired virtual staining between H&E (domain A) and IHC (domain B) with "
            "CycleGAN. Typical use: prepare -> train -> translate -> evaluate. "
            "Run 'stainvirt COMMAND --help' for each step."
        ),
    )
    parser.add_argument("--version", action="version", version=f"stainvirt {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="also show TensorFlow's own start-up and diagnostic lines, hidden by default "
             "(or set STAINVIRT_VERBOSE=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"stainvirt.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Args:
        argv: the arguments; None reads them from ``sys.argv``, as the
            ``stainvirt`` command does, and then also keeps TensorFlow's native
            start-up chatter off stderr (see :mod:`stainvirt.cli.quiet`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.quiet)
    if not (args.verbose or quiet.verbose_requested()):
        # Hides TensorFlow's informational C++ lines; errors still pass to the filter.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if argv is None:
            quiet.filter_native_stderr()
    try:
        return int(args.func(args) or 0)
    except StainvirtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class _LineFormatter(logging.Formatter):
    """Info as plain lines, warnings and errors prefixed by their level in lower case."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    logger = logging.getLogger("stainvirt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
