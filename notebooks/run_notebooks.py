"""Execute the walkthrough notebooks headless, in order, and fail if any cell fails.

    python notebooks/run_notebooks.py                 # all of them, in a temporary folder
    python notebooks/run_notebooks.py 02_train.ipynb  # some of them (still in order)
    python notebooks/run_notebooks.py --keep out/nb   # keep the executed copies and outputs
    python notebooks/run_notebooks.py --inplace       # refresh the committed notebooks

How the notebooks find things: each one reads two environment variables,

- ``STAINVIRT_REPO``: the repository root (data/sample is read from there); unset,
  the notebook looks in its working folder and the folders above it;
- ``STAINVIRT_WORK``: where it writes the data set, the run, translations and
  reports; unset, ``runs/notebooks`` in the repository (git-ignored).

By default this script copies the notebooks into a fresh temporary folder, runs
them there (so they cannot rely on the working folder) with both variables
pointing at the repository and at ``work/`` inside that folder, and deletes it
afterwards: nothing in the repository changes. The notebooks run in order in one
work folder, so 02 trains on the data set 01 packed and 03 uses 02's run.

``--inplace`` runs them the way a user in Jupyter does instead (working folder
``notebooks/``, neither variable set, outputs in ``runs/notebooks``, which is
emptied first) and writes each executed notebook that ran through back over
the committed one, outputs included, ready to commit.

The kernel is the Python running this script (``sys.executable``), whatever
kernels Jupyter has installed elsewhere. Exit status 1 if a cell fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERNEL_NAME = "python3"
DEFAULT_CELL_TIMEOUT_S = 900
SIZE_WARNING_BYTES = 1_500_000


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks to run, in the order they must run (by file name)."""
    everything = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return everything
    chosen = []
    for name in names:
        path = HERE / Path(name).name
        if path not in everything:
            known = ", ".join(p.name for p in everything)
            raise SystemExit(f"{name}: no such notebook in {HERE} (known: {known})")
        chosen.append(path)
    return sorted(set(chosen))


def use_this_python(spec_root: Path) -> None:
    """Make the kernel named ``python3`` this interpreter, ahead of any installed kernelspec."""
    spec = spec_root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (ipykernel)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(spec_root), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )


def execute(path: Path, out: Path, cwd: Path, timeout: int, sockets: Path | None = None) -> float:
    """Run the notebook ``path`` with ``cwd`` as its working folder, save it as ``out``.

    ``sockets``: a folder for the kernel's IPC sockets (None: TCP on localhost).

    Returns:
        Seconds it took.

    Raises:
        nbclient.exceptions.CellExecutionError: if a cell fails (``out`` is still
            written, with the error in it).
    """
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    config = Config()
    if sockets is not None:  # talk to the kernel over local sockets, not unencrypted TCP
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(sockets / "kernel")
    client = NotebookClient(
        nb,
        config=config,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,  # no timestamps in the committed notebooks
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        nb.metadata.get("language_info", {}).pop("version", None)  # no noise in diffs
        nbformat.write(nb, out)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the top of this file for how the notebooks find the data and where "
        "they write.",
    )
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="notebook file names (default: every NN_*.ipynb in notebooks/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inplace", action="store_true",
                      help="run as in Jupyter and write the executed notebooks back")
    mode.add_argument("--keep", type=Path, metavar="DIR",
                      help="run in DIR (new or empty) and keep it, executed copies included")
    parser.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT_S, metavar="S",
                        help="seconds one cell may run (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        print("needs nbclient, nbformat and ipykernel: pip install -e '.[test]'", file=sys.stderr)
        return 2

    paths = notebook_paths(args.notebooks)
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        print(f"--keep {args.keep}: the folder is not empty; choose a new one", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="stainvirt-notebooks-")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    use_this_python(folder / "jupyter")
    # Unix sockets need a short absolute path; not on Windows.
    sockets = Path(tempfile.mkdtemp(prefix="svnb-")) if os.name == "posix" else None
    if args.inplace:
        cwd = HERE
        for var in ("STAINVIRT_REPO", "STAINVIRT_WORK"):
            os.environ.pop(var, None)
        shutil.rmtree(REPO / "runs" / "notebooks", ignore_errors=True)
        where = REPO / "runs" / "notebooks"
    else:
        cwd = folder
        os.environ["STAINVIRT_REPO"] = str(REPO)
        os.environ["STAINVIRT_WORK"] = str(folder / "work")
        where = folder / "work"
    print(f"running {len(paths)} notebook(s); their outputs go to {where}", flush=True)

    from nbclient.exceptions import CellExecutionError

    failed = None
    total = 0.0
    try:
        for path in paths:
            out = folder / path.name
            print(f"  {path.name} ...", end=" ", flush=True)
            start = time.perf_counter()
            try:
                seconds = execute(path, out, cwd, args.timeout, sockets)
            except CellExecutionError as exc:
                total += time.perf_counter() - start
                print(f"FAILED after {time.perf_counter() - start:.0f} s", flush=True)
                print(str(exc), file=sys.stderr)
                failed = path.name
                break
            total += seconds
            if args.inplace:  # only a notebook that ran through replaces the committed one
                out = Path(shutil.copyfile(out, path))
            print(f"ok in {seconds:.0f} s ({out.stat().st_size / 1e3:.0f} kB)", flush=True)
    finally:
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"total {total:.0f} s", flush=True)
    if args.inplace:
        size = sum(p.stat().st_size for p in sorted(HERE.glob("[0-9][0-9]_*.ipynb")))
        print(f"committed notebooks: {size / 1e6:.2f} MB in all", flush=True)
        if size > SIZE_WARNING_BYTES:
            print(f"warning: more than {SIZE_WARNING_BYTES / 1e6:.1f} MB; shrink the figures",
                  file=sys.stderr)
    if failed:
        where = f"; the executed copies are in {folder}" if args.keep else ""
        print(f"{failed}: a cell failed (error above){where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
