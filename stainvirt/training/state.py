"""The full training state in one HDF5 file (``RunDir.state_path``), written atomically.

It holds every variable that decides what training does next: the four
networks, both optimizers (moments, step counter, and so the learning rate),
the image pools, and the number of finished epochs. Variables are matched by
position within their group and checked by name and shape on restore, so
a checkpoint from other networks, or from a Keras version that orders the
optimizer's variables differently, is refused instead of restored into the
wrong variables.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import atomic_path


def _groups(model) -> dict[str, list]:
    """Named groups of the variables to save (the optimizers must be built)."""
    return {
        "G_AB": model.G_AB.weights,
        "G_BA": model.G_BA.weights,
        "D_A": model.D_A.weights,
        "D_B": model.D_B.weights,
        "g_optimizer": model.g_optimizer.variables,
        "d_optimizer": model.d_optimizer.variables,
        "pool_A": model.pool_A.state,
        "pool_B": model.pool_B.state,
    }


def _name(variable) -> str:
    return getattr(variable, "path", None) or variable.name


def save_state(path: str | Path, model, epoch: int) -> None:
    """Write the model's full training state after ``epoch`` finished epochs."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["epoch"] = epoch
        for group, variables in _groups(model).items():
            g = f.create_group(group)
            for i, variable in enumerate(variables):
                d = g.create_dataset(f"{i:04d}", data=np.asarray(variable.numpy()))
                d.attrs["name"] = _name(variable)


def load_state(path: str | Path, model) -> int:
    """Restore the full training state into ``model``; returns the finished epochs.

    Raises:
        StainvirtError: if the file is unreadable or was written for other networks.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            epoch = int(f.attrs["epoch"])
            for group, variables in _groups(model).items():
                stored = f[group]
                if len(stored) != len(variables):
                    raise StainvirtError(
                        f"{path}: {group} holds {len(stored)} variables, this config builds "
                        f"{len(variables)}; the checkpoint was made with another config"
                    )
                values = [_checked(path, group, i, stored[f"{i:04d}"], variable)
                          for i, variable in enumerate(variables)]
                for variable, value in zip(variables, values, strict=True):
                    variable.assign(value)
    except (OSError, KeyError) as exc:
        raise StainvirtError(
            f"{path}: cannot read the training state ({exc}); it is corrupt. Delete it to "
            "start over, or restore it from a backup"
        ) from exc
    return epoch


def _checked(path: Path, group: str, index: int, stored: h5py.Dataset, variable) -> np.ndarray:
    """The stored value for ``variable``, after checking that it was saved from that variable."""
    saved_name, name = str(stored.attrs.get("name", "")), _name(variable)
    if saved_name != name:
        raise StainvirtError(
            f"{path}: variable {index} of {group} is {saved_name!r} in the checkpoint but "
            f"{name!r} here; it was written by another version of stainvirt or Keras, or for "
            "other networks. Resume with the versions that wrote it, or start a new run"
        )
    value = stored[()]
    if value.shape != tuple(variable.shape):
        raise StainvirtError(
            f"{path}: {name} has shape {value.shape} in the checkpoint but "
            f"{tuple(variable.shape)} here; the checkpoint was made with another config"
        )
    return value
