"""Loading a model saved as one ``.npz`` file by ``model.save(path)``, and that file's layout.

The file is a zip archive of ``.npy`` arrays (NumPy's ``.npz``). It holds plain arrays only, so
loading it never runs code (nothing is unpickled):

    tinycnn_format       format version (int); a newer one than this code knows is refused
    architecture         JSON text: the input shape, dtype, and every layer's type and config
    training             JSON text: the optimizer and loss given to ``compile``, and
                         "iterations", the optimizer's step count (null when not compiled)
    p/<i>/<name>         layer i's parameter ``name`` (e.g. p/0/kernel)
    s/<i>/<name>         layer i's non-trainable state (e.g. a moving mean)
    o/<i>/<name>/<slot>  the optimizer's state for parameter p/<i>/<name> (Adam: m and v; SGD
                         with momentum: velocity), of the parameter's shape and dtype

Format 1 files, written before the optimizer's state was saved (no "iterations", no ``o/``
arrays), load with a fresh optimizer, as they always did.

``model.save`` (``saving.py``) writes the file, atomically (``files.py``); this module reads
and checks it, and ``tinycnn.models.load_model`` rebuilds the model from what it reads. A layer is stored as its class name and its
``get_config()``; loading finds the class by that name among the layer classes the running
program has defined (``LAYERS`` in ``layers/base.py``).

Loading trusts nothing in the file, and reads it in an order that lets it bound every
allocation before making it:

1. The zip's directory alone (nothing decompressed): a file that is not a tinycnn model is
   named for what it is (another zip, a Keras or PyTorch file, a pickle, text), and every
   member must be one of the names above, stored or deflated as ``np.savez`` writes it.
2. The three small entries, each refused if its directory entry says it decompresses to more
   than such an entry can need.
3. The weights: before a member is decompressed, its size in the directory is compared with
   the array it must fill -- known from the architecture (``planned_weight_shapes``) before
   the model is built, and from the built model for the layers tinycnn cannot plan. Then its
   .npy header: object arrays are refused (reading them would unpickle, which can run code),
   and the shape and dtype must account for exactly the bytes stored. Only then are its
   bytes read, never more than that; the zip's CRC check catches flipped bytes.

So an edited config (units=10**12) allocates nothing, and neither does a "zip bomb": a member
of gigabytes of zeros that takes a few kilobytes on disk. Whatever is wrong, the error is a
:class:`ModelFileError` naming the file and the problem.
"""

import codecs
import json
import math
import os
import re
import zipfile

import numpy as np

from .layers.base import UnknownLayerError, from_spec
from .saving import FORMAT_VERSION, model_path


class ModelFileError(ValueError):
    """A file that cannot be loaded as a tinycnn model; the message says why."""


def open_model_file(path, who):
    """``path`` as a str, after checking that a file is there (``who`` names the caller)."""
    path = model_path(path, who)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    if os.path.isdir(path):
        raise ModelFileError(f"{path!r} is a directory, not a model file (.npz).")
    return path


def load_weights_into(path, model):
    """Set the built ``model``'s weights from the model file at ``path`` (``model.load_weights``),
    read and checked as ``load_model`` reads them; the file's optimizer state is left out. The
    file must describe a model of the same layers."""
    path = open_model_file(path, "load_weights")
    if not model.built:
        raise RuntimeError("Build the model (or give it an input shape) before load_weights: it needs its "
                           "own weights to copy into.")
    with open_archive(path) as archive:
        members = {k: v for k, v in model_members(path, archive).items() if not k.startswith("o/")}
        arch, _ = read_header(path, read_entries(path, archive, members))
        saved = [spec["type"] for spec in arch["layers"]]
        if saved != [type(layer).__name__ for layer in model.layers] or tuple(arch["input_shape"]) != model.input_shape:
            raise ModelFileError(f"{path!r} holds the weights of another model: layers {saved} for samples of shape "
                                 f"{tuple(arch['input_shape'])}, where this one has "
                                 f"{[type(layer).__name__ for layer in model.layers]} for {model.input_shape}.")
        arrays = check_weight_sizes(path, model, model.input_shape, np.dtype(arch["dtype"]), archive, members)
        arrays.update(read_weights(path, archive, members, model, None, done=arrays))
    copy_weights(path, model, arrays)


def layer_of(spec, path):
    """The layer a saved spec describes; its class is looked up by name, never loaded from the file."""
    try:
        return from_spec(spec)
    except UnknownLayerError as err:
        raise ModelFileError(f"{path!r} cannot be loaded: {err}") from None


def compile_as_saved(path, model, training, arrays):
    """Compile ``model`` with the saved optimizer and loss, and give the optimizer its state back."""
    from .losses import get as get_loss
    from .optimizers import OPTIMIZERS
    try:
        optimizer = OPTIMIZERS[training["optimizer"]].from_config(training["optimizer_config"])
        model.compile(optimizer, get_loss(training["loss"]))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path!r} was compiled with an optimizer or loss this tinycnn cannot "
                             f"rebuild ({err!r}); its weights are fine: load them with "
                             "set_weights, or save the model before compile().") from err
    restore_optimizer_state(path, model, training, arrays)


def restore_optimizer_state(path, model, training, arrays):
    """Give the optimizer its step count and its state arrays, each checked against the
    parameter it belongs to. A file saved before tinycnn kept them leaves the optimizer fresh."""
    slots = {}
    for key, a in arrays.items():
        if not key.startswith("o/"):
            continue
        _, i, name, slot = key.split("/")             # the only shape model_members lets through
        layer = model.layers[int(i)]
        param = layer.params[name]                    # read_weights refused any other
        if a.shape != param.shape or a.dtype != param.dtype:
            raise ModelFileError(f"{path!r}: the optimizer state {key!r} is a {a.dtype} array of "
                                 f"shape {a.shape}; its parameter p/{i}/{name} is {param.dtype} "
                                 f"{param.shape}. The file is damaged: save the model again.")
        if not np.isfinite(a).all():
            raise ModelFileError(f"{path!r}: the optimizer state {key!r} holds NaN or infinite "
                                 "values; an optimizer saved by tinycnn never does.")
        slots[f"{layer.name}/{name}/{slot}"] = a
    try:
        model.optimizer.set_state(training.get("iterations", 0), slots)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path!r}: the optimizer's step count in the 'training' entry is "
                             f"damaged ({err})") from None


# -- 1. the zip's directory: what the file is, and which arrays it holds ------------------------

#: A pickle starts with b"\x80" and its protocol number; an .npy array with this magic string.
NPY_MAGIC = b"\x93NUMPY"
#: torch.save's legacy format (before PyTorch 1.6) is a pickle that starts with this magic number.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: An HDF5 file, such as a Keras .h5 model, starts with this signature.
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

#: The names a model file's members may have (the layout above, plus the ".npy" np.savez adds).
MEMBER = re.compile(r"(tinycnn_format|architecture|training"
                    r"|[ps]/(0|[1-9][0-9]*)/[^/]+|o/(0|[1-9][0-9]*)/[^/]+/\w+)\.npy")


def open_archive(path):
    """The file as a zip archive, or a ModelFileError saying what kind of file it is instead."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ModelFileError(f"{path!r} is not a tinycnn model file: {_what_it_is(path)}") from err
    except Exception as err:   # a zip directory with damaged fields (zipfile: NotImplementedError ...)
        raise ModelFileError(f"{path!r} is truncated or corrupt: its zip directory cannot be read "
                             f"({type(err).__name__}: {err}). Save the model again.") from err


def model_members(path, archive):
    """The archive's members by array name, checked on the zip's directory alone.

    Nothing is decompressed yet: a member the layout does not have is refused by its name, and
    one compressed other than as np.savez does (stored, or deflated by savez_compressed) too,
    since bzip2 and lzma would decompress a whole chunk at once, however large.
    """
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if "tinycnn_format.npy" not in names:
        raise ModelFileError(f"{path!r} is not a tinycnn model file: {_what_zip_it_is(names)}")
    members = {}
    for info in infos:
        if not MEMBER.fullmatch(info.filename):
            raise ModelFileError(f"{path!r} holds {_short(info.filename)}, which is not an array of a "
                                 "tinycnn model: the file was not written by model.save(), or was "
                                 "changed since. Save the model again.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{path!r}: {_short(info.filename)} is compressed with zip method "
                                 f"{info.compress_type}, which np.savez never uses. Save the model again.")
        name = info.filename.removesuffix(".npy")
        if name in members:
            raise ModelFileError(f"{path!r} holds two arrays named {name!r}: the file is corrupt. "
                                 "Save the model again.")
        members[name] = info
    return members


def _short(name):
    """A member name for a message: quoted, and cut short if long."""
    return repr(name if len(name) <= 40 else name[:37] + "...")


def _listed(names, n):
    """The first ``n`` names for a message, and how many more there are."""
    more = f" and {len(names) - n:,} more" if len(names) > n else ""
    return ", ".join(map(_short, names[:n])) + more


def _what_zip_it_is(names):
    """A short diagnosis of a zip archive with no ``tinycnn_format`` entry, from its member names."""
    if {"config.json", "metadata.json"} <= set(names):
        return ("it is a Keras 3 model (.keras: config.json, metadata.json, model.weights.h5). "
                "tinycnn cannot read Keras files; save tinycnn models with model.save().")
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return ("it is a PyTorch file (torch.save), which holds a pickle: tinycnn never loads "
                "pickles (unpickling can run code) and cannot read PyTorch weights.")
    if not names:
        return "it is an empty zip archive."
    listed = _listed(names, 3)
    if all(name.endswith(".npy") for name in names):
        return f"it is an .npz file of other arrays ({listed}), with no 'tinycnn_format' entry."
    return f"it is a zip archive holding {listed}, not a file written by model.save()."


def _what_it_is(path):
    """A short diagnosis of a file that is not a zip archive, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "it is empty. Save the model again."
    if head.startswith(NPY_MAGIC):
        return "it is a single .npy array; a model is an .npz archive written by model.save()."
    if head.startswith(TORCH_LEGACY_MAGIC):
        return ("it is a PyTorch file (torch.save's legacy format, a pickle): tinycnn never loads "
                "pickles (unpickling can run code) and cannot read PyTorch weights.")
    if head[:1] == b"\x80" and head[1:2] and head[1:2] in b"\x02\x03\x04\x05":
        return ("it is a Python pickle, which tinycnn never loads (unpickling can run code). "
                "Save the model with model.save().")
    if head.startswith(HDF5_MAGIC):
        return ("it is an HDF5 file, such as a Keras .h5 model: tinycnn cannot read Keras files. "
                "Save tinycnn models with model.save().")
    if head.startswith(b"PK"):
        return "it is a truncated or corrupt .npz (zip) archive. Save the model again."
    kind = _text_kind(head)
    if kind is not None:
        return f"it is a text file{kind}, not the .npz archive that model.save() writes."
    return "it is not an .npz archive: truncated or corrupt, or another kind of file. Save the model again."


def _text_kind(head):
    """" (JSON)", " (CSV)" or "" when the first bytes of a file read as text; None otherwise."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)   # a character cut short is fine
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    text = text.lstrip("\ufeff \t\r\n")
    if text[:1] in ("{", "["):
        return " (JSON)"
    lines = text.splitlines()[:2]
    if len(lines) == 2 and lines[0].count(",") == lines[1].count(",") > 0:
        return " (CSV)"
    return ""


# -- 2. reading a member: its size bounded before it is decompressed ------------------------------

#: The longest .npy header NumPy reads (``read_array_header_1_0``'s ``max_header_size``), and
#: the bytes before it (magic string, version, header length).
NPY_HEADER, NPY_PRELUDE = 10_000, 12
#: The data of the JSON entries: 4 million characters (NumPy stores a str as 4 bytes a
#: character), far more than the architecture of any network of thousands of layers needs.
TEXT_MAX = 16 * 2**20
#: The small entries, and the most data each can hold (the format version: one int64).
ENTRIES = {"tinycnn_format": 8, "architecture": TEXT_MAX, "training": TEXT_MAX}


def read_entries(path, archive, members):
    """The small entries the file has (format version, architecture, training), each bounded."""
    return {name: read_array(path, archive, members[name], nbytes, f"the {name!r} entry")
            for name, nbytes in ENTRIES.items() if name in members}


def read_array(path, archive, info, nbytes, what):
    """The array in member ``info``, which must hold at most ``nbytes`` of data for ``what``.

    The zip's directory says how many bytes the member decompresses to; a member larger than
    the array it must hold plus the longest header is refused before any of it is decompressed.
    """
    name = info.filename.removesuffix(".npy")
    limit = nbytes + NPY_PRELUDE + NPY_HEADER
    if info.file_size > limit:
        raise ModelFileError(f"{path!r}: the array {name!r} would decompress to {info.file_size:,} "
                             f"bytes, but {what} needs at most {limit:,} (its data and an .npy "
                             "header). It was not decompressed: the file is damaged or was not "
                             "written by model.save().")
    try:
        return _read_member(archive, info)
    except ModelFileError as err:
        raise ModelFileError(f"{path!r}: the array {name!r} {err}") from None
    except Exception as err:   # any failure to parse these bytes means they are damaged
        raise ModelFileError(f"{path!r} is truncated or corrupt: the array {name!r} cannot be "
                             f"read ({type(err).__name__}: {err}). Save the model again.") from err


def _read_member(archive, info):
    """One .npy member of the archive: header first, then exactly the bytes it accounts for."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=NPY_HEADER)
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


# -- 3. the architecture, then the weights it asks for ------------------------------------------

def read_header(path, entries):
    """Check the format version and parse the two JSON entries; returns (architecture, training)."""
    if "architecture" not in entries:
        raise ModelFileError(f"{path!r} is an .npz file but not a tinycnn model "
                             "(it has no 'architecture' entry).")
    version = entries["tinycnn_format"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ModelFileError(f"{path!r} has an unreadable format version (a {version.dtype} array "
                             f"of shape {version.shape}, not one integer).")
    version = int(version)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path!r} was saved in model format {version}, newer than this "
                             f"tinycnn ({FORMAT_VERSION}) can read. Upgrade tinycnn.")
    if version < 1:
        raise ModelFileError(f"{path!r} has the format version {version}, which no tinycnn writes.")
    arch = _json_entry(path, entries, "architecture")
    training = _json_entry(path, entries, "training") if "training" in entries else None
    problem = _architecture_problem(arch)
    if problem is None and training is not None and not isinstance(training, dict):
        problem = "the 'training' entry is not a JSON object"
    if problem:
        raise ModelFileError(f"{path!r} has a damaged architecture entry: {problem}.")
    return arch, training


def _json_entry(path, entries, key):
    value = entries[key]
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


def check_weight_sizes(path, model, input_shape, dtype, archive, members):
    """Before the model is built, read every weight the architecture plans and compare it with
    the plan, shape for shape: a config edited to units=10**12 stops here, having allocated
    nothing, and no member is decompressed past the size of the weight it must be. Returns the
    arrays read."""
    arrays, shape = {}, input_shape
    for i, layer in enumerate(model.layers):
        for name, planned in planned_weight_shapes(layer, shape).items():
            key = next((k for k in (f"p/{i}/{name}", f"s/{i}/{name}") if k in members), None)
            if key is None:
                raise ModelFileError(f"{path!r} is missing the weight {name!r} of layer {i} "
                                     f"({type(layer).__name__}).")
            what = f"layer {i}'s {name!r} ({type(layer).__name__}, shape {planned}, {dtype})"
            arrays[key] = read_array(path, archive, members[key], math.prod(planned) * dtype.itemsize, what)
            if arrays[key].shape != planned:
                raise ModelFileError(
                    f"{path!r}: layer {i} ({type(layer).__name__}, {layer.get_config()}) needs a "
                    f"{name!r} of shape {planned} ({math.prod(planned):,} values), but the file "
                    f"holds {arrays[key].shape}. The architecture and the weights do not match.")
        shape = layer.output_shape(shape)
    return arrays


def read_weights(path, archive, members, model, training, done):
    """Every weight and optimizer-state member not in ``done``, each no larger than the array
    of the built model it must fill; a member that fills none is refused before any is read."""
    names = [name for name in members if name not in ENTRIES and name not in done]
    targets = {name: _target(model, name, training) for name in names}
    extra = sorted(name for name, target in targets.items() if target is None)
    if extra:
        raise ModelFileError(f"{path!r} holds arrays that are not weights of its architecture: "
                             f"[{_listed(extra, 5)}].")
    return {name: read_array(path, archive, members[name], target.nbytes, _what(name, target))
            for name, target in targets.items()}


def _what(name, target):
    """The array a member must hold, for a message."""
    kind, i, param = name.split("/")[:3]
    owner = f"the optimizer state of 'p/{i}/{param}'" if kind == "o" else "the weight"
    return f"{owner} ({target.dtype}, shape {target.shape})"


def _target(model, name, training):
    """The built array that member ``name`` must fill, or must match (an optimizer slot matches
    its parameter); None when the model has no such array."""
    kind, i, param = name.split("/")[:3]
    if int(i) >= len(model.layers) or (kind == "o" and not training):
        return None
    layer = model.layers[int(i)]
    return (layer.state if kind == "s" else layer.params).get(param)


def copy_weights(path, model, arrays):
    """Copy every stored weight into the built model; refuse missing, retyped or non-finite
    arrays."""
    for i, layer in enumerate(model.layers):
        for prefix, store in (("p", layer.params), ("s", layer.state)):
            for name in store:
                key = f"{prefix}/{i}/{name}"
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
