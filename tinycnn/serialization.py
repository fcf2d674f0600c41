"""Loading a model saved as one ``.npz`` file by ``model.save(path)``, and that file's layout.

The file holds plain arrays only, so loading it never runs code (``allow_pickle=False``):

    tinycnn_format   format version (int); a newer one than this code knows is refused
    architecture     JSON text: the input shape, dtype, and every layer's type and config
    training         JSON text: the optimizer and loss given to ``compile`` (no optimizer state)
    p/<i>/<name>     layer i's parameter ``name`` (e.g. p/0/kernel)
    s/<i>/<name>     layer i's non-trainable state (e.g. a moving mean)

``Sequential.save`` (in ``model.py``) writes the file; this module reads it, so it imports
``model.py`` and not the other way round. A layer is stored as its class name and its
``get_config()``; loading finds the class by that name among the layer classes the running program
has defined (``LAYERS`` in ``layers/base.py``).

Writes are atomic: the file is written under a temporary name in the same directory and then
renamed over the target with ``os.replace``, so a crash never leaves half a model behind.
"""

import json
import os
import zipfile

import numpy as np

from .layers.base import UnknownLayerError, from_spec
from .model import FORMAT_VERSION, Sequential


class ModelFileError(ValueError):
    """A file that cannot be loaded as a tinycnn model; the message says why."""


def save_model(model, path):
    """The same as ``model.save(path)``, which writes the file (see ``Sequential.save``)."""
    model.save(path)


def load_model(path):
    """Rebuild a model saved by ``model.save(path)``, weights and all, with no user code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ModelFileError(f"{path!r} is not a readable .npz file: it is truncated or corrupt "
                             f"({err}). Save the model again.") from err
    if "tinycnn_format" not in arrays or "architecture" not in arrays:
        raise ModelFileError(f"{path!r} is an .npz file but not a tinycnn model "
                             "(it has no 'tinycnn_format' entry).")
    try:
        version = int(arrays["tinycnn_format"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path!r} has an unreadable format version ({err}).") from err
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path!r} was saved in model format {version}, newer than this "
                             f"tinycnn ({FORMAT_VERSION}) can read. Upgrade tinycnn.")
    try:
        arch = json.loads(str(arrays["architecture"]))
        training = json.loads(str(arrays.get("training", np.array("null"))))
        layers = []
        for spec in arch["layers"]:
            layers.append(_layer(spec, path))
        model = Sequential(layers, name=arch.get("name", "sequential"))
        model.build(tuple(arch["input_shape"]), arch["dtype"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path!r} has a damaged architecture entry ({err!r}).") from err
    for i, layer in enumerate(model.layers):
        for prefix, store in (("p", layer.params), ("s", layer.state)):
            for name in store:
                key = f"{prefix}/{i}/{name}"
                if key not in arrays or arrays[key].shape != store[name].shape:
                    raise ModelFileError(f"{path!r} is missing or has a wrongly shaped {key!r}.")
                store[name][...] = arrays[key]
    if training:
        from .losses import get as get_loss
        from .optimizers import OPTIMIZERS
        try:
            optimizer = OPTIMIZERS[training["optimizer"]].from_config(training["optimizer_config"])
            model.compile(optimizer, get_loss(training["loss"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{path!r} was compiled with an optimizer or loss this tinycnn cannot "
                                 f"rebuild ({err!r}); its weights are fine: load them with "
                                 "set_weights, or save the model before compile().") from err
    return model


def _layer(spec, path):
    """The layer a saved spec describes; its class is looked up by name, never loaded from the file."""
    try:
        return from_spec(spec)
    except UnknownLayerError as err:
        raise ModelFileError(f"{path!r} cannot be loaded: {err}") from None
