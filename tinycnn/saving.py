"""Writing a model to one ``.npz`` file: what ``model.save(path)`` does.

The file's layout, and reading it back (``load_model``), are ``tinycnn/serialization.py``'s.
This module only writes, and imports nothing that builds a model, so that ``model.py`` can call it
and ``serialization.py`` can import both.
"""

import json
import os
import warnings

import numpy as np

from . import checks
from .backend import to_numpy
from .files import atomic_write
from .layers.base import spec_of

#: The version of the file ``save`` writes (its layout: ``tinycnn/serialization.py``).
#: Version 2 added the optimizer's state, so that an older tinycnn says "upgrade" rather than
#: refusing arrays it does not know; version 1 files load with a fresh optimizer.
FORMAT_VERSION = 2


def save_model(model, path):
    """Write ``model``'s architecture, weights and optimizer state to ``path``, atomically.

    Every layer is stored as its class name and ``get_config()`` (``layers.base.spec_of``),
    which refuses, here and now, a layer or activation that could not be rebuilt as it is.
    """
    path = model_path(path, "model.save")
    if os.fspath(path).lower().endswith((".h5", ".hdf5", ".keras")):
        warnings.warn(f"model.save({os.fspath(path)!r}) writes tinycnn's own format, a .npz archive, whatever the "
                      "name: Keras cannot read it, tinycnn.load_model can. Name it .npz to avoid confusion.",
                      stacklevel=4)     # save_model, Sequential.save, its one-call wrapper, the caller
    if not model.built:
        raise RuntimeError("Build or fit the model before saving it: it has no weights yet.")
    architecture = {"class": "Sequential", "name": model.name, "input_shape": list(model.input_shape),
                    "dtype": model.dtype.name, "layers": [spec_of(layer) for layer in model.layers]}
    training, slots = None, {}
    if model.optimizer is not None:
        iterations, slots = optimizer_slots(model)
        training = {"optimizer": type(model.optimizer).__name__.lower(),
                    "optimizer_config": model.optimizer.get_config(), "loss": model.loss.name,
                    "iterations": iterations}
    arrays = {"tinycnn_format": np.array(FORMAT_VERSION),
              "architecture": np.array(json.dumps(architecture)),
              "training": np.array(json.dumps(training))}
    for i, layer in enumerate(model.layers):
        arrays.update({f"p/{i}/{k}": to_numpy(v) for k, v in layer.params.items()})
        arrays.update({f"s/{i}/{k}": to_numpy(v) for k, v in layer.state.items()})
    arrays.update(slots)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def optimizer_slots(model):
    """The optimizer's step count, and its state arrays named ``o/<i>/<param>/<slot>``.

    A slot is named by its layer's index, as the weights are (``p/<i>/<param>``), not by the
    layer's name, which may itself hold a "/". State kept under a name no layer has now (a
    layer renamed since it trained) is left out: the next step would not use it either.
    """
    iterations, state = model.optimizer.get_state()
    owners = {f"{layer.name}/{param}": f"{i}/{param}"
              for i, layer in enumerate(model.layers) for param in layer.params}
    slots = {}
    for key, value in state.items():
        param, _, slot = key.rpartition("/")          # slot names (m, v, velocity) hold no "/"
        if param in owners:
            slots[f"o/{owners[param]}/{slot}"] = value
    return iterations, slots


def model_path(path, who):
    """``path`` as a str, or a TypeError saying what came instead.

    Bytes are refused, not decoded: ``load_model(data)`` with a file's contents in ``data`` is
    the usual way to get here with bytes, and the message gives their length, not all of them.
    """
    if isinstance(path, (bytes, bytearray)):
        raise TypeError(f"{who} takes the path of a model file (a str or pathlib.Path), got "
                        f"{len(path):,} bytes. Pass the path the file has on disk; a path held "
                        "as bytes can be decoded with os.fsdecode(path).")
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{who} takes the path of a model file (a str or pathlib.Path), got "
                        f"{checks.show(path)}.") from None
    if not isinstance(path, str):      # an os.PathLike whose path is bytes
        return model_path(path, who)
    return path
