"""The PyTorch reference in a process of its own, stepped in turn with ours by ``train_speed.py``.

Torch and TensorFlow in one process hurt each other: each framework's idle
threads spin for a while after its work, and PyTorch's OpenMP barriers stall
when a core is taken (the ``cpu`` preset's reference step ran 10-30x slower
beside TF than alone), and torch's bundled triton crashes once TF is loaded.
So the reference lives in a child process that imports torch alone, and
the bench sends it one batch at a time, between its own steps: the two never
compute at once, both see the same machine load, and each side's step is
timed where it runs. Messages are pickled over the child's stdin and stdout.

    python bench/torch_worker.py --serve     # the child (started by TorchWorker)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class TorchWorker:
    """The reference CycleGAN's step in a child process, on the batches we send it.

    Args:
        threads: torch's intra-op threads in the child.

    Raises:
        ImportError: when torch is not installed (the child says so and exits).
    """

    def __init__(self, threads: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env,
        )
        hello = self._ask("threads", threads)
        if isinstance(hello, str):
            raise ImportError(hello)
        self.version, self.threads = hello
        self.sampler = None
        self.step = 0
        self.counts: dict[str, int] = {}

    def _ask(self, *message: Any) -> Any:
        pickle.dump(message, self._proc.stdin)
        self._proc.stdin.flush()
        answer = pickle.load(self._proc.stdout)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def model(self, cfg: Any, sampler: Any) -> None:
        """Build the reference for ``cfg``; its batches will come from ``sampler``."""
        self.counts = self._ask("model", cfg.to_dict())
        self.sampler, self.step = sampler, 0

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per network of the current reference model (``G_A``, ``D_A``, ...)."""
        return self.counts

    def __call__(self) -> float:
        """One reference step on the sampler's next batch; its seconds, timed in the child."""
        a, b = self.sampler.batch(self.step)[:2]
        self.step += 1
        return self._ask("step", a, b)

    def interleaved(self, sink: list[float], block: int = 1) -> Callable[[bool], bool]:
        """A callback for after each of our steps: every ``block`` calls, ``block`` steps here.

        Their seconds go to ``sink`` when ``timed``, but for the first of a block
        of several (our threads may still spin). Returns whether it stepped.
        """
        calls = 0

        def between(timed: bool) -> bool:
            nonlocal calls
            calls += 1
            if calls % block:
                return False
            seconds = [self() for _ in range(block)]
            if timed:
                sink.extend(seconds[1:] if block > 1 else seconds)
            return True

        return between

    def conv(self, x: np.ndarray, w: np.ndarray) -> Callable[[], float]:
        """A function timing one forward conv of NHWC ``x`` by HWIO ``w`` in the child."""
        self._ask("conv", x, w)
        return lambda: self._ask("conv_once")

    def close(self) -> None:
        if self._proc.poll() is None:
            pickle.dump(("quit",), self._proc.stdin)
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


def serve() -> None:
    """The child's loop: answer each pickled message on stdout until ``quit``."""
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    state: dict[str, Any] = {}

    def answer(value: Any) -> None:
        pickle.dump(value, outbox)
        outbox.flush()

    while True:
        kind, *args = pickle.load(inbox)
        if kind == "quit":
            return
        try:
            answer(handle(kind, args, state))
        except ImportError as exc:
            answer(f"torch not installed ({exc})")
            return
        except Exception as exc:  # noqa: BLE001 (sent to the parent, which raises it)
            answer(RuntimeError(f"torch worker: {type(exc).__name__}: {exc}"))


def handle(kind: str, args: list, state: dict[str, Any]) -> Any:
    """One request of the protocol (see :class:`TorchWorker`)."""
    import torch
    import torch_reference as ref

    if kind == "threads":
        torch.set_num_threads(args[0])
        return torch.__version__, torch.get_num_threads()
    if kind == "model":
        from stainvirt.config import Config

        state["model"] = ref.CycleGANReference.from_config(Config.from_dict(args[0]))
        return state["model"].parameter_counts()
    if kind == "step":
        model = state["model"]
        model.set_input(ref.to_tensor(args[0]), ref.to_tensor(args[1]))
        start = time.perf_counter()
        model.optimize_parameters()
        return time.perf_counter() - start
    if kind == "conv":
        x, w = args
        state["conv"] = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                         torch.from_numpy(w).permute(3, 2, 0, 1).contiguous())
        return None
    if kind == "conv_once":
        start = time.perf_counter()
        with torch.no_grad():
            torch.nn.functional.conv2d(*state["conv"])
        return time.perf_counter() - start
    raise ValueError(f"unknown request {kind!r}")


if __name__ == "__main__":
    serve()
