"""What TensorFlow computes on: the one place that asks whether a GPU is there."""

from __future__ import annotations


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU.

    Asks for physical devices, which does not start TensorFlow's runtime, so
    thread settings made afterwards still apply.
    """
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
