"""Keras's ``models`` module: ``Sequential``, ``load_model`` and ``save_model``, for scripts written
as ``from tensorflow.keras import models``. ``load_model`` lives here because it builds a
``Sequential`` (``model.py``) from what ``serialization.py`` reads and checks.
"""

import numpy as np

from .model import Sequential
from .serialization import (ModelFileError, check_weight_sizes, compile_as_saved, copy_weights,
                            layer_of, model_members, open_archive, open_model_file, read_entries, read_header,
                            read_weights)

__all__ = ["Sequential", "load_model", "save_model"]


def save_model(model, path):
    """The same as ``model.save(path)``, which writes the file (see ``saving.py``)."""
    model.save(path)


def load_model(path):
    """Rebuild a model saved by ``model.save(path)``: its layers, its weights, and, when it was
    compiled, its optimizer (with its state: Adam's moments and step count) and loss. Runs no
    code from the file."""
    path = open_model_file(path, "load_model")
    with open_archive(path) as archive:
        members = model_members(path, archive)
        arch, training = read_header(path, read_entries(path, archive, members))
        model, arrays = rebuild(path, arch, archive, members)
        arrays.update(read_weights(path, archive, members, model, training, done=arrays))
    copy_weights(path, model, arrays)
    if training:
        compile_as_saved(path, model, training, arrays)
    return model


def rebuild(path, arch, archive, members):
    """The model ``arch`` describes, built; and the weights read to check its sizes first."""
    try:
        layers = [layer_of(spec, path) for spec in arch["layers"]]
        model = Sequential(layers, name=arch.get("name", "sequential"))
        arrays = check_weight_sizes(path, model, tuple(arch["input_shape"]), np.dtype(arch["dtype"]),
                                    archive, members)
        model.build(tuple(arch["input_shape"]), arch["dtype"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path!r} has a damaged architecture entry ({err}).") from err
    return model, arrays


