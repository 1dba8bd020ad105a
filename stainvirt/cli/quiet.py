"""Keeps TensorFlow's native start-up chatter off the terminal, and only that.

TensorFlow's C++ core writes straight to file descriptor 2, below Python's
``sys.stderr``: the oneDNN notice, absl's "All log messages before
absl::InitializeLog()" line, grappler's "remapper failed" errors. Some of it
comes before ``TF_CPP_MIN_LOG_LEVEL`` is read, and raising that level would
also hide real errors. So the command line points fd 2 at a pipe read by a
small filter process, which drops the lines :func:`is_noise` recognises and
passes everything else through unchanged: our own messages, progress bars,
Python warnings, real errors. A process rather than a thread, so that what a
crashing process writes last still reaches the terminal.

``stainvirt --verbose`` or ``STAINVIRT_VERBOSE=1`` leaves fd 2 alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

# absl / glog line prefix: severity, date, time, thread id, source file and line.
_NATIVE = re.compile(r"[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] (.*)")
_NOISE_MESSAGES = re.compile(
    r"oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized"
    r"|remapper failed"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|failed call to cuInit"
    r"|computation placer already registered"
    r"|could not open file to read NUMA node"
    r"|TF-TRT Warning"
)
_NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions:",
)


def is_noise(line: str) -> bool:
    """Whether a line of native stderr output is start-up chatter a user need not see.

    Informational native lines (``I...``) always are; warnings and errors only
    when they are known to be harmless; fatal lines never.
    """
    line = line.rstrip("\r\n")
    if line.startswith(_NOISE_LINES):
        return True
    native = _NATIVE.match(line)
    if native is None or line.startswith("F"):
        return False
    return line.startswith("I") or bool(_NOISE_MESSAGES.search(native.group(1)))


def filter_stream(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` until end of file, dropping noise lines.

    Whole lines are checked; a partial line that holds a carriage return (a
    progress bar redrawing itself) goes through at once, up to that return.
    """
    pending = b""
    while chunk := os.read(read_fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [line + b"\n" for line in lines if not is_noise(line.decode(errors="replace"))]
        if b"\r" in pending:
            head, _, pending = pending.rpartition(b"\r")
            out.append(head + b"\r")
        if out:
            os.write(write_fd, b"".join(out))
    if pending and not is_noise(pending.decode(errors="replace")):
        os.write(write_fd, pending)


def run_filter() -> None:
    """The filter process: stdin to stdout, noise dropped."""
    # Ctrl-C and SIGTERM are for the command; the filter outlives it to pass on its last words.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    filter_stream(0, 1)


def verbose_requested() -> bool:
    """Whether ``STAINVIRT_VERBOSE`` asks for everything to be shown."""
    return os.environ.get("STAINVIRT_VERBOSE", "").lower() not in ("", "0", "false", "no")


def filter_native_stderr() -> None:
    """Route this process's fd 2 through the noise filter for the rest of its life."""
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    # The filter ends when the last writer closes the pipe, i.e. when this process exits.
    subprocess.Popen(
        [sys.executable, "-c", "from stainvirt.cli.quiet import run_filter; run_filter()"],
        stdin=read_fd, stdout=2,
        close_fds=True, start_new_session=True,  # out of reach of the terminal's Ctrl-C
    )
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)
