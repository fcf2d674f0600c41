"""Writing a model to one ``.npz`` file: what ``model.save(path)`` does.

The file's layout, and reading it back (``load_model``), are ``tinycnn/serialization.py``'s.
This module only writes, and imports nothing that builds a model, so that ``model.py`` can call it
and ``serialization.py`` can import both.
"""

import json
import os

import numpy as np

from .backend import to_numpy
from .files import atomic_write
from .layers.base import spec_of

#: The version of the file ``save`` writes (its layout: ``tinycnn/serialization.py``).
FORMAT_VERSION = 1


def save_model(model, path):
    """Write ``model``'s architecture and weights to ``path``, atomically.

    Every layer is stored as its class name and ``get_config()`` (``layers.base.spec_of``),
    which refuses, here and now, a layer or activation that could not be rebuilt as it is.
    """
    if not model.built:
        raise RuntimeError("Build or fit the model before saving it: it has no weights yet.")
    architecture = {"class": "Sequential", "name": model.name, "input_shape": list(model.input_shape),
                    "dtype": model.dtype.name, "layers": [spec_of(layer) for layer in model.layers]}
    training = None
    if model.optimizer is not None:
        training = {"optimizer": type(model.optimizer).__name__.lower(),
                    "optimizer_config": model.optimizer.get_config(), "loss": model.loss.name}
    arrays = {"tinycnn_format": np.array(FORMAT_VERSION),
              "architecture": np.array(json.dumps(architecture)),
              "training": np.array(json.dumps(training))}
    for i, layer in enumerate(model.layers):
        arrays.update({f"p/{i}/{k}": to_numpy(v) for k, v in layer.params.items()})
        arrays.update({f"s/{i}/{k}": to_numpy(v) for k, v in layer.state.items()})
    atomic_write(os.fspath(path), lambda f: np.savez(f, **arrays))
