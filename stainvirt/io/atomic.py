"""Atomic writes: a temporary file beside the target, then one rename.

An interrupted write never leaves a truncated file where a good one was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from stainvirt.errors import StainvirtError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps the target's suffix so libraries that pick a format by
    extension (``.npz``, ``.png``, ``.keras``) write the right thing. On error the
    temporary file is removed and ``target`` is untouched.

    Raises:
        StainvirtError: if the folder cannot be created or written.
    """
    tmp = temp_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_beside(target: str | Path) -> Path:
    """Create an empty temporary file beside ``target``, with the suffix of ``target``.

    Unlike a bare ``mkstemp`` file it gets the permissions a new file normally gets.

    Raises:
        StainvirtError: if the folder cannot be created or written.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{''.join(target.suffixes)}", dir=target.parent
        )
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)
    except OSError as exc:
        raise StainvirtError(
            f"{target}: cannot write there ({exc.strerror}); choose a writable output path"
        ) from exc
    return Path(name)


def writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written there.

    Called before long work, so a bad ``--out`` fails at once, not at the end.

    Raises:
        StainvirtError: if the folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StainvirtError(
            f"{folder}: cannot create the output folder ({exc.strerror}), so cannot write "
            "there; choose a writable --out"
        ) from exc
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StainvirtError(
            f"{folder}: cannot write there ({exc.strerror}); choose a writable --out"
        ) from exc
    return folder


def remove_stale_temps(targets: Iterable[str | Path]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes of ``targets`` left.

    Only the temporary names :func:`atomic_path` makes for these targets are
    touched, never anything else in their folders. A target's name may be a
    glob pattern (``samples/epoch_*.png``).
    """
    stale = []
    for target in map(Path, targets):
        pattern = f".{target.stem}.*.tmp{''.join(target.suffixes)}"
        if target.parent.is_dir():
            stale += [p for p in target.parent.glob(pattern) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)

