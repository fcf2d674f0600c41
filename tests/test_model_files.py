"""Every file that is not a valid tinycnn model raises ModelFileError, naming the file and what is
wrong; never a raw NumPy or Python error, and never NumPy's advice to pass allow_pickle.

The named cases first, then property-based tests (hypothesis) that damage a real saved model by
truncating it, flipping bytes, removing, swapping, retyping or reshaping arrays, and editing its
JSON: every outcome must be a working model or a ModelFileError.
"""

import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinycnn import Sequential, load_model
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, MaxPool2D
from tinycnn.serialization import ModelFileError

X = np.random.default_rng(0).random((4, 6, 6, 1), dtype=np.float32)


def small_model():
    model = Sequential([Conv2D(2, 3, activation="relu"), BatchNormalization(), MaxPool2D(2),
                        Flatten(), Dense(3, activation="softmax")], input_shape=(6, 6, 1), seed=0)
    model.compile("adam")
    model.fit(X, np.arange(4) % 3, epochs=1, batch_size=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def saved():
    """(the bytes of a real saved model, its arrays by name)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.npz")
        small_model().save(path)
        with open(path, "rb") as f:
            data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return data, arrays


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load_bytes(data, name="m.npz"):
    """load_model on these bytes: returns the model, or the ModelFileError's message."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            return load_model(path)
        except ModelFileError as err:
            message = str(err)
            assert path in message or repr(path) in message, message        # names the file
            assert "allow_pickle" not in message, message                    # never suggests it
            return message


def with_architecture(arrays, edit):
    arch = json.loads(str(arrays["architecture"]))
    edit(arch)
    return {**arrays, "architecture": np.array(json.dumps(arch))}


def test_a_text_file():
    assert "text file" in load_bytes(b"layers: conv, dense\n")


def test_a_pickle_is_never_loaded():
    message = load_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert "pickle" in message and "never loads" in message


def test_an_npz_of_object_arrays(saved):
    _, arrays = saved
    message = load_bytes(npz_bytes({**arrays, "p/0/kernel": np.array([{"a": 1}], dtype=object)}))
    assert "'p/0/kernel' is an object array, which tinycnn never loads" in message
    assert "truncated" not in message


def test_a_single_npy_file():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    assert "single .npy array" in load_bytes(buffer.getvalue(), "m.npy")


def test_an_empty_file_and_a_directory(tmp_path):
    assert "empty" in load_bytes(b"")
    with pytest.raises(ModelFileError, match="directory"):
        load_model(tmp_path)


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a["layers"][4]["config"].update(units=10**12), "needs a 'kernel' of shape (8, 1000000000000)"),
    (lambda a: a["layers"][0]["config"].update(filters=10**9), "needs a 'kernel' of shape (3, 3, 1, 1000000000)"),
    (lambda a: a.update(input_shape=[10**6, 10**6, 1]), "needs a 'kernel' of shape"),
    (lambda a: a["layers"][0]["config"].update(kernel_size=[2, 2]), "needs a 'kernel' of shape (2, 2, 1, 2)"),
])
def test_sizes_are_checked_before_anything_is_allocated(saved, edit, expected):
    _, arrays = saved
    message = load_bytes(npz_bytes(with_architecture(arrays, edit)))
    assert isinstance(message, str) and expected in message, message


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a["layers"][4]["config"].update(units="3"), "units must be a whole number"),
    (lambda a: a["layers"][0]["config"].update(padding="full"), "padding"),
    (lambda a: a.update(dtype="int8"), "'dtype' is 'int8'"),
    (lambda a: a.update(input_shape=[6, -6, 1]), "'input_shape' is [6, -6, 1]"),
    (lambda a: a.update(layers=[]), "'layers'"),
    (lambda a: a["layers"][1].pop("config"), "layer 1"),
    (lambda a: a["layers"][4]["config"].update(colour="red"), "colour"),
])
def test_edited_architectures(saved, edit, expected):
    _, arrays = saved
    message = load_bytes(npz_bytes(with_architecture(arrays, edit)))
    assert isinstance(message, str) and expected in message, message


def test_retyped_missing_extra_and_non_finite_weights(saved):
    _, arrays = saved
    assert "'p/4/bias' is a int64 array" in load_bytes(npz_bytes({**arrays, "p/4/bias": np.arange(3)}))
    assert "missing the weight 'bias' of layer 0" in load_bytes(
        npz_bytes({k: v for k, v in arrays.items() if k != "p/0/bias"}))
    assert "not weights of its architecture: ['p/9/kernel']" in load_bytes(
        npz_bytes({**arrays, "p/9/kernel": np.zeros(2, np.float32)}))
    nan = arrays["s/1/moving_mean"].copy()
    nan[0] = np.nan
    assert "NaN or infinite" in load_bytes(npz_bytes({**arrays, "s/1/moving_mean": nan}))
    assert "negative variance" in load_bytes(npz_bytes({**arrays, "s/1/moving_variance": -arrays["s/1/moving_variance"]}))
    assert "format version" in load_bytes(npz_bytes({**arrays, "tinycnn_format": np.array("1")}))
    assert "not valid JSON" in load_bytes(npz_bytes({**arrays, "architecture": np.array("{layers")}))


def test_a_header_that_claims_more_than_the_file_holds(saved):
    """An .npy header edited to claim a huge shape (with a valid CRC) must not allocate it."""
    _, arrays = saved
    npy = io.BytesIO()
    np.save(npy, np.zeros(4, np.float32))
    old, new = b"'shape': (4,), }", b"'shape': (10000000000000,), }"
    npy = npy.getvalue()
    at = npy.index(old)
    npy = npy[:at] + new + npy[at + len(new):]          # eat into the header's space padding
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tinycnn_format.npy", npz_member(arrays["tinycnn_format"]))
        archive.writestr("architecture.npy", npy)
    message = load_bytes(buffer.getvalue())
    assert "(10000000000000,)" in message and "does not match" in message, message


def npz_member(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# -- a zip bomb: what a member decompresses to is bounded before it is decompressed ---------------

BOMB_BYTES = 64 * 2**20       # 64 MiB of zeros: about 64 KB on disk


def with_bomb(raw, name):
    """The saved model ``raw``, with member ``name`` (replaced or added) holding a valid .npy
    header and BOMB_BYTES of zeros, deflated: a small file that decompresses to a large one."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (BOMB_BYTES // 4,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info.filename, src.read(info))
        with dst.open(name, "w", force_zip64=True) as f:
            f.write(header.getvalue())
            zeros = bytes(2**22)
            for _ in range(BOMB_BYTES // len(zeros)):
                f.write(zeros)
    return buffer.getvalue()


@pytest.mark.parametrize("name, expected", [
    ("bomb.npy", "'bomb.npy', which is not an array of a tinycnn model"),      # a name the format lacks
    ("architecture.npy", "but the 'architecture' entry needs at most"),          # a JSON entry
    ("p/4/kernel.npy", "but layer 4's 'kernel' (Dense, shape (8, 3), float32) needs at most 10,108"),
    ("o/4/kernel/m.npy", "but the optimizer state of 'p/4/kernel' (float32, shape (8, 3)) needs at most 10,108"),
])
def test_a_zip_bomb_is_refused_before_it_is_decompressed(saved, monkeypatch, name, expected):
    bomb = with_bomb(saved[0], name)
    assert len(bomb) < BOMB_BYTES // 500
    opened = []
    open_member = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, member, *a, **k: opened.append(getattr(member, "filename", member))
                        or open_member(self, member, *a, **k))
    message = load_bytes(bomb)
    assert isinstance(message, str) and expected in message, message
    assert name.removesuffix(".npy") in message and name not in opened     # named, never decompressed
    if name != "bomb.npy":
        assert f"would decompress to {BOMB_BYTES + 128:,} bytes" in message


def test_members_compressed_as_np_savez_never_does(saved):
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(saved[0])) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert "zip method 12, which np.savez never uses" in load_bytes(buffer.getvalue())


# -- a file that is not a tinycnn model is named for what it is, in a few words -------------------

def zip_of(*names):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"{}")
    return buffer.getvalue()


@pytest.mark.parametrize("data, expected", [
    (zip_of("notes.txt", "data.csv", "img/0.png", "img/1.png"),
     "a zip archive holding 'notes.txt', 'data.csv', 'img/0.png' and 1 more, not a file written by model.save()"),
    (zip_of("config.json", "metadata.json", "model.weights.h5"),
     "a Keras 3 model (.keras: config.json, metadata.json, model.weights.h5). tinycnn cannot read Keras files"),
    (zip_of("archive/data.pkl", "archive/version", "archive/data/0"),            # torch.save since 1.6
     "a PyTorch file (torch.save), which holds a pickle: tinycnn never loads pickles (unpickling can run code)"),
    (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + pickle.dumps({"w": 1}, protocol=2),  # torch.save before 1.6
     "a PyTorch file (torch.save's legacy format, a pickle): tinycnn never loads pickles"),
    (pickle.dumps({"weights": [1, 2, 3]}), "a Python pickle, which tinycnn never loads (unpickling can run code)"),
    (b"\x89HDF\r\n\x1a\n" + bytes(200), "an HDF5 file, such as a Keras .h5 model: tinycnn cannot read Keras files"),
    (json.dumps({"layers": ["conv"] * 5000}).encode(), "a text file (JSON)"),
    (b"x,y,label\n1,2,0\n3,4,1\n" * 1000, "a text file (CSV)"),
    (npz_bytes({"weights": np.zeros((1000, 1000), np.float32)}), "an .npz file of other arrays ('weights.npy')"),
])
def test_what_a_file_that_is_not_a_model_is(data, expected):
    message = load_bytes(data)
    assert isinstance(message, str) and expected in message, message
    assert "truncated or corrupt" not in message and len(message) < 400, message


def test_the_contents_of_a_file_instead_of_its_path(saved):
    raw, _ = saved
    with pytest.raises(TypeError, match=rf"load_model takes the path of a model file \(a str or "
                                        rf"pathlib.Path\), got {len(raw):,} bytes\.") as err:
        load_model(raw)
    assert len(str(err.value)) < 300
    with pytest.raises(TypeError, match=r"got 3 \(a int\)"):
        load_model(3)


# -- property-based: damage a real saved model in every way, expect a model or ModelFileError --

def assert_model_or_error(outcome):
    if isinstance(outcome, str):
        return
    probs = outcome.predict(X)
    assert probs.shape == (4, 3) and np.isfinite(probs).all()


# 150 damaged files per kind of damage: about 10 s in all. No example database: nothing is
# written beside the tests, and every run draws afresh.
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_fuzz_truncated(saved, data):
    raw, _ = saved
    assert_model_or_error(load_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))]))


@FUZZ
@given(data=st.data())
def test_fuzz_flipped_bytes(saved, data):
    raw, _ = saved
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    assert_model_or_error(load_bytes(bytes(damaged)))


RETYPES = ["int32", "int64", "float16", "float64", "bool", "complex64", "U3", "uint8"]


@FUZZ
@given(data=st.data())
def test_fuzz_arrays_removed_swapped_retyped_reshaped(saved, data):
    _, arrays = saved
    arrays = dict(arrays)
    keys = sorted(arrays)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["remove", "swap", "retype", "reshape", "object", "scalar"]))
        key = data.draw(st.sampled_from(keys))
        if key not in arrays:
            continue
        if action == "remove":
            del arrays[key]
        elif action == "swap":
            other = data.draw(st.sampled_from(keys))
            if other in arrays:
                arrays[key], arrays[other] = arrays[other], arrays[key]
        elif action == "retype":
            try:
                with warnings.catch_warnings():         # complex -> real drops the imaginary part
                    warnings.simplefilter("ignore")
                    arrays[key] = arrays[key].astype(data.draw(st.sampled_from(RETYPES)))
            except (ValueError, TypeError):      # JSON text or objects do not convert
                pass
        elif action == "reshape":
            arrays[key] = arrays[key].reshape(-1)[: data.draw(st.integers(0, arrays[key].size))]
        elif action == "object":
            arrays[key] = np.array([None, 1], dtype=object)
        else:
            arrays[key] = np.array(data.draw(st.one_of(st.integers(-5, 5), st.floats(), st.text(max_size=5))))
    assert_model_or_error(load_bytes(npz_bytes(arrays)))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**13), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


@FUZZ
@given(data=st.data())
def test_fuzz_edited_json(saved, data):
    _, arrays = saved
    entry = data.draw(st.sampled_from(["architecture", "training"]))
    doc = json.loads(str(arrays[entry]))
    # walk down to a random dict or list inside the document and change, add or delete one item
    node = doc
    while True:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        children = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
        if not children or data.draw(st.booleans()):
            break
        node = data.draw(st.sampled_from(children))[1]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if keys and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.integers(0, 3)) == 0:
            del node[key]
        else:
            node[key] = data.draw(JSON_VALUES)
    elif isinstance(node, dict):
        node[data.draw(st.text(max_size=6))] = data.draw(JSON_VALUES)
    assert_model_or_error(load_bytes(npz_bytes({**arrays, entry: np.array(json.dumps(doc))})))


def test_a_damaged_zip_directory_field(saved):
    """Found by test_fuzz_flipped_bytes: one flipped byte in a central-directory entry's "version
    needed to extract" made zipfile raise NotImplementedError ("zip file version 10.9")."""
    data = bytearray(saved[0])
    entry = data.index(b"PK\x01\x02")              # the first central-directory entry
    data[entry + 6] = 109                             # its "version needed" field: 10.9
    message = load_bytes(bytes(data))
    assert isinstance(message, str) and "truncated or corrupt" in message and "zip directory" in message


def test_zip_members_that_are_not_arrays(saved):
    raw, _ = saved
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("notes.txt", "hello")
    assert "notes.txt" in load_bytes(buffer.getvalue())
