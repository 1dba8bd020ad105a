"""The float precision a generator translates in: ``stainvirt translate --precision``.

``float16`` runs every layer under Keras's ``mixed_float16`` policy (float16
maths, float32 weights) except the output head, which stays float32 as
:func:`stainvirt.models.build_generator` makes it, so outputs come back
float32. It halves activation memory and uses the tensor cores of recent
GPUs; a CPU computes float16 slowly, so there it is only for checking.
"""

from __future__ import annotations

from typing import Any

from stainvirt.devices import gpu_visible
from stainvirt.errors import StainvirtError

PRECISIONS = ("auto", "float16", "float32")
_POLICIES = {"float16": "mixed_float16", "float32": "float32"}


def resolve_precision(precision: str) -> str:
    """``float16`` or ``float32`` for a ``--precision`` value; ``auto`` is float16 on a GPU.

    Raises:
        StainvirtError: for a value other than auto, float16 or float32.
    """
    if precision not in PRECISIONS:
        raise StainvirtError(
            f"unknown precision {precision!r}; use auto, float16 or float32 (--precision)"
        )
    if precision == "auto":
        return "float16" if gpu_visible() else "float32"
    return precision


def with_precision(generator: Any, precision: str) -> Any:
    """``generator`` computing in ``precision`` (``float16`` or ``float32``).

    A generator that already does is returned as it is; otherwise a copy is
    rebuilt layer by layer with each layer's dtype policy set explicitly
    (Keras's global policy is never touched, so nothing else in the process
    changes) and given the original's weights, which are float32 under both
    policies. Layers that produce the model's outputs stay float32.

    Raises:
        StainvirtError: if float16 is asked of something that is not a
            functional Keras model.
    """
    plan = _policies(generator, precision)
    if plan is None:
        if precision == "float32":
            return generator  # not a Keras model (e.g. a stand-in): leave it be
        raise StainvirtError("--precision float16 needs a functional Keras generator")
    if all(layer.dtype_policy.name == plan[layer.name] for layer in _layers(generator)):
        return generator
    import keras

    # Cloned from the model itself, not rebuilt from a config: a Translator may be
    # handed any functional generator, and a per-layer policy leaves the global one be.
    def rebuild(layer: Any) -> Any:
        config = {**layer.get_config(), "dtype": plan[layer.name]}
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(generator, clone_function=rebuild)
    clone.set_weights(generator.get_weights())
    return clone


def _policies(generator: Any, precision: str) -> dict[str, str] | None:
    """Each non-input layer's dtype policy, by name; None if ``generator`` is not functional."""
    import keras

    heads = getattr(generator, "output_names", None)  # set by functional models only
    if not isinstance(generator, keras.Model) or not heads:
        return None
    return {
        layer.name: "float32" if layer.name in heads else _POLICIES[precision]
        for layer in _layers(generator)
    }


def _layers(generator: Any) -> list[Any]:
    """The layers of a functional model that compute (its inputs are cloned by Keras itself)."""
    import keras

    return [layer for layer in generator.layers if not isinstance(layer, keras.layers.InputLayer)]
