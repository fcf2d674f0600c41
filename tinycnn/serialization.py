"""Loading a model saved as one ``.npz`` file by ``model.save(path)``, and that file's layout.

The file holds plain arrays only, so loading it never runs code (``allow_pickle=False``):

    tinycnn_format   format version (int); a newer one than this code knows is refused
    architecture     JSON text: the input shape, dtype, and every layer's type and config
    training         JSON text: the optimizer and loss given to ``compile`` (no optimizer state)
    p/<i>/<name>     layer i's parameter ``name`` (e.g. p/0/kernel)
    s/<i>/<name>     layer i's non-trainable state (e.g. a moving mean)

``model.save`` (``saving.py``) writes the file; this module reads it, and imports ``model.py``
to rebuild the model. A layer is stored as its class name and its
``get_config()``; loading finds the class by that name among the layer classes the running program
has defined (``LAYERS`` in ``layers/base.py``).

Writes are atomic: the file is written under a temporary name in the same directory and then
renamed over the target with ``os.replace``, so a crash never leaves half a model behind.

Loading trusts nothing in the file. Every array's header is read first: object arrays are
refused (tinycnn never unpickles), and no array is allocated larger than the bytes that hold
it. The architecture is checked before any layer is built, and the size of every weight the
config asks for is compared with the weight in the file, so an edited config (units=10**12)
cannot allocate terabytes. Whatever is wrong, the error is a :class:`ModelFileError` naming the
file and the problem.
"""

import json
import math
import os
import zipfile

import numpy as np

from .layers.base import UnknownLayerError, from_spec
from .model import Sequential
from .saving import FORMAT_VERSION


class ModelFileError(ValueError):
    """A file that cannot be loaded as a tinycnn model; the message says why."""


def save_model(model, path):
    """The same as ``model.save(path)``, which writes the file (see ``saving.py``)."""
    model.save(path)


def load_model(path):
    """Rebuild a model saved by ``model.save(path)``, weights and all, with no user code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if os.path.isdir(path):
        raise ModelFileError(f"{path!r} is a directory, not a model file (.npz).")
    arrays = read_arrays(path)
    arch, training = read_header(path, arrays)
    try:
        layers = []
        for spec in arch["layers"]:
            layers.append(_layer(spec, path))
        model = Sequential(layers, name=arch.get("name", "sequential"))
        check_weight_sizes(path, model, tuple(arch["input_shape"]), arrays)
        model.build(tuple(arch["input_shape"]), arch["dtype"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path!r} has a damaged architecture entry ({err}).") from err
    copy_weights(path, model, arrays)
    if training:
        from .losses import get as get_loss
        from .optimizers import OPTIMIZERS
        try:
            optimizer = OPTIMIZERS[training["optimizer"]].from_config(training["optimizer_config"])
            model.compile(optimizer, get_loss(training["loss"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
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


# -- checking what a file holds: nothing here trusts the file ---------------------------------

#: A pickle starts with b"\x80" and its protocol number; an .npy array with this magic string.
NPY_MAGIC = b"\x93NUMPY"


def read_arrays(path):
    """Every array in the .npz at ``path``, by name, read without trusting the file.

    Each member's .npy header is read first. Object arrays are refused (reading them would
    unpickle, which can run code), and an array is read only when its header's shape and dtype
    account for exactly the bytes stored, so a damaged header cannot allocate more than the
    file holds. The zip's CRC check catches flipped bytes in the data.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ModelFileError(f"{path!r} is not a tinycnn model file: {_what_it_is(path)}") from err
    except Exception as err:   # a zip directory with damaged fields (zipfile: NotImplementedError ...)
        raise ModelFileError(f"{path!r} is truncated or corrupt: its zip directory cannot be read "
                             f"({type(err).__name__}: {err}). Save the model again.") from err
    arrays = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            try:
                arrays[name] = _read_member(archive, info)
            except ModelFileError as err:
                raise ModelFileError(f"{path!r}: the array {name!r} {err}") from None
            except Exception as err:   # any failure to parse these bytes means they are damaged
                raise ModelFileError(f"{path!r} is truncated or corrupt: the array {name!r} cannot be "
                                     f"read ({type(err).__name__}: {err}). Save the model again.") from err
    return arrays


def _read_member(archive, info):
    """One .npy member of the archive: header first, then exactly the bytes it accounts for."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ModelFileError(f"uses .npy format {version}, which tinycnn does not write.")
        if dtype.hasobject:
            raise ModelFileError("is an object array, which tinycnn never loads (reading it would "
                                 "unpickle, which can run code). This is not a tinycnn model.")
        if dtype.kind not in "biufU":
            raise ModelFileError(f"has dtype {dtype}, which a tinycnn model never holds.")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise ModelFileError(f"has a header (shape {shape}, {dtype}) that does not match the "
                                 f"{info.file_size - f.tell()} bytes stored: the file is corrupt. "
                                 "Save the model again.")
        data = f.read(nbytes + 1)           # reading to the end makes zipfile check the CRC
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _what_it_is(path):
    """A short diagnosis of a file that is not a zip archive, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(NPY_MAGIC):
        return "it is a single .npy array; a model is an .npz archive written by model.save()."
    if head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":
        return ("it is a Python pickle, which tinycnn never loads (unpickling can run code). "
                "Save the model with model.save().")
    if not head:
        return "it is empty. Save the model again."
    if head.startswith(b"PK"):
        return "it is a truncated or corrupt .npz (zip) archive. Save the model again."
    try:
        head.decode("utf-8")
        return "it is a text file, not an .npz archive written by model.save()."
    except UnicodeDecodeError:
        return "it is not an .npz archive: truncated or corrupt, or another kind of file. Save the model again."


def read_header(path, arrays):
    """Check the format version and parse the two JSON entries; returns (architecture, training)."""
    if "tinycnn_format" not in arrays or "architecture" not in arrays:
        raise ModelFileError(f"{path!r} is an .npz file but not a tinycnn model "
                             "(it has no 'tinycnn_format' entry).")
    version = arrays["tinycnn_format"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ModelFileError(f"{path!r} has an unreadable format version (a {version.dtype} array "
                             f"of shape {version.shape}, not one integer).")
    version = int(version)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path!r} was saved in model format {version}, newer than this "
                             f"tinycnn ({FORMAT_VERSION}) can read. Upgrade tinycnn.")
    if version < 1:
        raise ModelFileError(f"{path!r} has the format version {version}, which no tinycnn writes.")
    arch = _json_entry(path, arrays, "architecture")
    training = _json_entry(path, arrays, "training") if "training" in arrays else None
    problem = _architecture_problem(arch)
    if problem is None and training is not None and not isinstance(training, dict):
        problem = "the 'training' entry is not a JSON object"
    if problem:
        raise ModelFileError(f"{path!r} has a damaged architecture entry: {problem}.")
    return arch, training


def _json_entry(path, arrays, key):
    value = arrays[key]
    if value.shape != () or value.dtype.kind != "U":
        raise ModelFileError(f"{path!r}: the {key!r} entry should be one string of JSON, got a "
                             f"{value.dtype} array of shape {value.shape}.")
    try:
        return json.loads(str(value))
    except ValueError as err:
        raise ModelFileError(f"{path!r}: the {key!r} entry is not valid JSON ({err}).") from err


def _architecture_problem(arch):
    """What is wrong with a parsed architecture, or None."""
    if not isinstance(arch, dict):
        return "it is not a JSON object"
    if not isinstance(arch.get("layers"), list) or not arch["layers"]:
        return "'layers' is not a non-empty list"
    for i, spec in enumerate(arch["layers"]):
        if not (isinstance(spec, dict) and isinstance(spec.get("type"), str)
                and isinstance(spec.get("config"), dict)):
            return f"layer {i} is not {{'type': ..., 'config': {{...}}}}"
    shape = arch.get("input_shape")
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 1 for d in shape)):
        return f"'input_shape' is {shape!r}, not a list of sizes >= 1"
    if arch.get("dtype") not in ("float32", "float64"):
        return f"'dtype' is {arch.get('dtype')!r}, not 'float32' or 'float64'"
    if not isinstance(arch.get("name", "sequential"), str):
        return "'name' is not a string"
    return None


def planned_weight_shapes(layer, input_shape):
    """The shapes of the arrays ``layer.build(input_shape)`` would create, without creating them.

    Only layers with weights need an entry; a layer type missing here is built and then checked.
    """
    from .layers import BatchNormalization, Conv2D, Dense

    if isinstance(layer, Dense) and len(input_shape) == 1:
        return {"kernel": (input_shape[0], layer.units), "bias": (layer.units,)}
    if isinstance(layer, Conv2D) and len(input_shape) == 3:
        return {"kernel": (*layer.kernel_size, input_shape[2], layer.filters), "bias": (layer.filters,)}
    if isinstance(layer, BatchNormalization) and input_shape:
        c = (input_shape[-1],)
        return {"gamma": c, "beta": c, "moving_mean": c, "moving_variance": c}
    return {}


def check_weight_sizes(path, model, input_shape, arrays):
    """Before anything is allocated: every weight the architecture asks for must be the weight
    stored in the file, shape for shape. A config edited to units=10**12 stops here."""
    shape = input_shape
    for i, layer in enumerate(model.layers):
        stored = {key.split("/", 2)[2]: a.shape for key, a in arrays.items()
                  if key.startswith((f"p/{i}/", f"s/{i}/"))}
        for name, planned in planned_weight_shapes(layer, shape).items():
            if name not in stored:
                raise ModelFileError(f"{path!r} is missing the weight {name!r} of layer {i} "
                                     f"({type(layer).__name__}).")
            if tuple(stored[name]) != planned:
                raise ModelFileError(
                    f"{path!r}: layer {i} ({type(layer).__name__}, {layer.get_config()}) needs a "
                    f"{name!r} of shape {planned} ({math.prod(planned):,} values), but the file "
                    f"holds {tuple(stored[name])}. The architecture and the weights do not match.")
        shape = layer.output_shape(shape)


def copy_weights(path, model, arrays):
    """Copy every stored weight into the built model; refuse missing, extra, retyped or
    non-finite arrays."""
    expected = set()
    for i, layer in enumerate(model.layers):
        for prefix, store in (("p", layer.params), ("s", layer.state)):
            for name in store:
                key = f"{prefix}/{i}/{name}"
                expected.add(key)
                if key not in arrays:
                    raise ModelFileError(f"{path!r} is missing the weight {key!r}.")
                a = arrays[key]
                if a.shape != store[name].shape or a.dtype != store[name].dtype:
                    raise ModelFileError(f"{path!r}: {key!r} is a {a.dtype} array of shape {a.shape}; "
                                         f"the model needs {store[name].dtype} {store[name].shape}.")
                if not np.isfinite(a).all():
                    raise ModelFileError(f"{path!r}: {key!r} holds NaN or infinite values; "
                                         "a model saved by tinycnn never does.")
                if name == "moving_variance" and (a < 0).any():
                    raise ModelFileError(f"{path!r}: {key!r} holds a negative variance.")
                store[name][...] = a
    extra = sorted(k for k in arrays if k not in expected and k not in ("tinycnn_format", "architecture",
                                                                        "training"))
    if extra:
        raise ModelFileError(f"{path!r} holds arrays that are not weights of its architecture: {extra}.")
