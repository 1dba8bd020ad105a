"""CPU threads for training: every core in each op for large steps, one for small ones.

``bench/train_speed.py`` on 2 CPU cores, steps alternating with the PyTorch
reference's: the ``cpu`` preset (2 crops of 32 px) trains at 42.6 images/s
with one intra-op thread against 30.8 with two. Its convolutions are too
small to split over cores, so splitting them only adds synchronisation,
while TensorFlow's inter-op pool still runs independent ops (the two
generators' branches) on the other core. The ``paper`` preset (256 px) keeps
every core busy inside each convolution and keeps TensorFlow's default.
"""

from __future__ import annotations

import logging

from stainvirt.config import Config
from stainvirt.devices import gpu_visible

log = logging.getLogger("stainvirt")

SMALL_STEP_PIXELS = 64 * 64
"""Steps of at most this many crop pixels (batch x side x side) run ops on one thread."""


def intra_op_threads(cfg: Config) -> int:
    """Threads per op for ``cfg`` on a CPU: 1 for small steps, 0 (TensorFlow's default) else."""
    return 1 if cfg.batch_size * cfg.image_size**2 <= SMALL_STEP_PIXELS else 0


def configure_threads(cfg: Config) -> None:
    """Set TensorFlow's intra-op threads for ``cfg``, unless a GPU trains or they are set.

    TensorFlow fixes its thread pools when it first runs an op; after that (a
    notebook that ran TensorFlow already, several runs in one process) the
    setting stays as it is.
    """
    import tensorflow as tf

    threads = intra_op_threads(cfg)
    if (not threads or gpu_visible()
            or tf.config.threading.get_intra_op_parallelism_threads()):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        log.info("TensorFlow was running before train(): its ops keep every core, where one "
                 "is faster for this small step (call stainvirt.training.threads."
                 "configure_threads(cfg) before any TensorFlow work)")
