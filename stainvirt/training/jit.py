"""XLA for the train step: what ``jit_compile="auto"`` picks, and the fallback when it fails.

``auto`` follows what ``bench/train_speed.py`` measured per kind of device
(2 CPU cores, our step and the PyTorch reference's alternating):

- A CPU where TensorFlow uses oneDNN (its default on x86 CPUs with AVX-512
  VNNI/BF16 or AMX): off. oneDNN's convolutions and their gradients beat
  XLA's, which cost a compile on top (``cpu`` preset 0.089 s/step without XLA
  against 0.129 with it; ``paper`` at 128 px level).
- A CPU without oneDNN (Eigen convolutions: older CPUs, or
  ``TF_ENABLE_ONEDNN_OPTS=0``): on. Eigen's convolution gradients are slow,
  XLA rewrites them as forward convolutions (``paper`` 2x, ``tiny`` 3x faster).
- A GPU: on, as Keras's own ``auto`` does; XLA fuses the many small
  element-wise ops of instance norm and the losses.
- Several replicas (``tf.distribute``): off, as Keras's ``auto``.

When ``auto`` turned XLA on and the step then fails to compile (an op without
an XLA kernel, a TensorFlow built without XLA), :func:`fit_with_fallback`
recompiles without it and trains on, after one warning line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from stainvirt.config import Config
from stainvirt.devices import gpu_visible

log = logging.getLogger("stainvirt")


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU convolutions through oneDNN in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def resolve_jit_compile(cfg: Config, replicas: int = 1) -> bool:
    """Whether to compile the train step with XLA, for ``cfg.jit_compile`` on this machine.

    Args:
        cfg: reads ``jit_compile`` (``auto``, ``on`` or ``off``).
        replicas: replicas the step runs on (``tf.distribute``).
    """
    if cfg.jit_compile != "auto":
        return cfg.jit_compile == "on"
    choice, why = _auto(replicas)
    log.info("XLA %s (--jit-compile auto: %s)", "on" if choice else "off", why)
    return choice


def _auto(replicas: int) -> tuple[bool, str]:
    from tensorflow.python.util import _pywrap_util_port

    if not _pywrap_util_port.IsBuiltWithXLA():
        return False, "this TensorFlow has no XLA"
    if replicas > 1:
        return False, f"{replicas} replicas"
    if gpu_visible():
        return True, "on a GPU"
    if onednn_enabled():
        return False, "oneDNN's convolutions are faster on this CPU"
    return True, "faster than Eigen's convolutions on this CPU"


def fit_with_fallback(model: Any, cfg: Config, data: Callable[[], Any], **fit_args: Any) -> None:
    """``model.fit(data(), **fit_args)``; if XLA that ``auto`` chose fails at once, retry without.

    A step compiled with XLA either compiles whole or does not run, so
    nothing has changed when it fails and the retry starts from the same
    step. Failures after the first step, and failures with XLA asked for
    explicitly (``on``) or off, are raised as they are.

    Args:
        model: the compiled ``CycleGAN``.
        cfg: reads ``jit_compile``.
        data: makes the data pipeline (a fresh one for the retry).
        **fit_args: passed to ``model.fit``.
    """
    import tensorflow as tf

    start = model.steps_done
    try:
        model.fit(data(), **fit_args)
    except tf.errors.OpError as exc:
        if not (cfg.jit_compile == "auto" and model.jit_compile and model.steps_done == start):
            raise
        reason = str(exc).strip().splitlines()[0][:200]
        log.warning("XLA could not compile the train step (%s); training without it "
                    "(--jit-compile off skips trying)", reason)
        model.compile(jit_compile=False)
        model.fit(data(), **fit_args)
