"""model.save: every error names the path given, a read-only file stays as it is, and a saved
model trains on after loading exactly as if it had never been saved (the optimizer's state is kept).
"""

import io
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from tinycnn import Sequential, load_model
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, MaxPool2D
from tinycnn.optimizers import SGD, Adam
from tinycnn.schedules import CosineDecay
from tinycnn.serialization import ModelFileError

X = np.random.default_rng(0).random((16, 6, 6, 1), dtype=np.float32)
Y = np.arange(16) % 3


def small_model(optimizer=None):
    model = Sequential([Conv2D(2, 3, activation="relu"), BatchNormalization(), MaxPool2D(2),
                        Flatten(), Dense(3, activation="softmax")], input_shape=(6, 6, 1), seed=0)
    model.compile(optimizer or Adam())
    return model


def train(model, epochs, seed):
    model.fit(X, Y, epochs=epochs, batch_size=4, threads=1, seed=seed, verbose=0)


def parts(directory):
    return [name for name in os.listdir(directory) if name.endswith(".part")]


# -- the optimizer's state: a loaded model trains on as if it had never been saved ----------------

OPTIMIZERS = {
    "adam": lambda: Adam(learning_rate=0.01),
    "adam with a cosine schedule": lambda: Adam(learning_rate=CosineDecay(0.01, decay_steps=12)),
    "sgd with momentum": lambda: SGD(learning_rate=0.05, momentum=0.9),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_training_on_after_a_save_and_load_is_training_on_without_them(tmp_path, make_optimizer):
    saved = small_model(make_optimizer())
    train(saved, epochs=2, seed=1)
    saved.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    train(loaded, epochs=1, seed=2)

    never_saved = small_model(make_optimizer())
    train(never_saved, epochs=2, seed=1)
    train(never_saved, epochs=1, seed=2)
    assert loaded.optimizer.iterations == never_saved.optimizer.iterations == 12
    assert loaded.optimizer.current_learning_rate() == never_saved.optimizer.current_learning_rate()
    for a, b in zip(loaded.get_weights(), never_saved.get_weights()):
        np.testing.assert_array_equal(a, b)                       # bit for bit


def test_a_layer_name_with_a_slash_keeps_its_state(tmp_path):
    model = Sequential([Flatten(), Dense(3, name="block/dense")], input_shape=(6, 6, 1), seed=0)
    model.compile(Adam())
    train(model, epochs=1, seed=0)
    model.save(tmp_path / "m.npz")
    assert set(load_model(tmp_path / "m.npz").optimizer.state) == set(model.optimizer.state)


def test_the_file_holds_the_state_by_layer_index(tmp_path):
    model = small_model()
    train(model, epochs=1, seed=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        slots = sorted(k for k in f.files if k.startswith("o/"))
        training = json.loads(str(f["training"]))
        np.testing.assert_array_equal(f["o/4/kernel/m"], model.optimizer.state[("dense", "kernel", "m")])
    assert slots == [f"o/{i}/{p}/{s}" for i, p in ((0, "bias"), (0, "kernel"), (1, "beta"), (1, "gamma"),
                                                     (4, "bias"), (4, "kernel")) for s in "mv"]
    assert training["iterations"] == 4


def rewrite(src, dst, edit):
    """Copy the model file ``src`` to ``dst``, with ``edit(arrays)`` applied to its arrays."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    edit(arrays)
    np.savez(dst, **arrays)


def test_a_format_1_file_saved_before_the_state_was_kept_loads_with_a_fresh_optimizer(tmp_path):
    model = small_model()
    train(model, epochs=1, seed=0)
    model.save(tmp_path / "m.npz")

    def as_before(arrays):
        for key in [k for k in arrays if k.startswith("o/")]:
            del arrays[key]
        training = json.loads(str(arrays["training"]))
        del training["iterations"]
        arrays["training"] = np.array(json.dumps(training))
        arrays["tinycnn_format"] = np.array(1)

    rewrite(tmp_path / "m.npz", tmp_path / "old.npz", as_before)
    loaded = load_model(tmp_path / "old.npz")
    assert loaded.optimizer.iterations == 0 and loaded.optimizer.state == {}
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a.update({"o/4/kernel/m": a["o/4/kernel/m"][:4]}),
     "the optimizer state 'o/4/kernel/m' is a float32 array of shape (4, 3); its parameter p/4/kernel is float32 (8, 3)"),
    (lambda a: a.update({"o/4/bias/v": a["o/4/bias/v"].astype(np.float64)}),
     "the optimizer state 'o/4/bias/v' is a float64 array of shape (3,); its parameter p/4/bias is float32 (3,)"),
    (lambda a: a.update({"o/4/bias/v": np.full(3, np.nan, np.float32)}), "'o/4/bias/v' holds NaN"),
    (lambda a: a.update({"o/7/kernel/m": a["o/4/kernel/m"]}), "not weights of its architecture: ['o/7/kernel/m']"),
    (lambda a: a.update({"o/4/gain/m": a["o/4/bias/m"]}), "not weights of its architecture: ['o/4/gain/m']"),
    (lambda a: a.update(training=np.array(json.dumps({**json.loads(str(a["training"])), "iterations": -1}))),
     "the optimizer's step count in the 'training' entry is damaged (iterations must be a whole number >= 0, got -1"),
])
def test_damaged_optimizer_state(tmp_path, edit, expected):
    model = small_model()
    train(model, epochs=1, seed=0)
    model.save(tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", edit)
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "bad.npz")
    assert expected in str(err.value)


# -- errors name the path given, and nothing is left behind ---------------------------------------

@pytest.fixture
def model():
    return small_model()


def test_a_read_only_file_is_left_as_it_is(model, tmp_path):
    """Tests run as root here, where the system would let the write through."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"an earlier model")
    target.chmod(0o444)
    with pytest.raises(PermissionError) as err:
        model.save(target)
    assert str(err.value).endswith(f"Cannot write {str(target)!r}: the file {str(target)!r} is read-only "
                                   "(mode 0o444). Make it writable (chmod u+w) or choose another path.")
    assert target.read_bytes() == b"an earlier model" and stat.S_IMODE(target.stat().st_mode) == 0o444
    assert parts(tmp_path) == []


def test_a_read_only_directory_is_refused(model, tmp_path):
    directory = tmp_path / "models"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=f"Cannot write {str(directory / 'm.npz')!r}: the "
                                                  f"directory {str(directory)!r} is read-only "):
            model.save(directory / "m.npz")
        assert os.listdir(directory) == []
    finally:
        directory.chmod(0o755)


def test_a_long_legal_name_saves(model, tmp_path):
    target = tmp_path / ("m" * 246 + ".npz")                       # 250 bytes: a file name may have 255
    model.save(target)
    np.testing.assert_array_equal(load_model(target).predict(X), model.predict(X))
    assert sorted(os.listdir(tmp_path)) == [target.name]


def test_a_name_too_long_names_the_path_not_the_temporary_file(model, tmp_path):
    target = tmp_path / ("m" * 300 + ".npz")
    with pytest.raises(OSError) as err:
        model.save(target)
    assert str(err.value) == (f"[Errno 36] Cannot write {str(target)!r}: the name is longer than the "
                              "file system allows (usually 255 bytes).")
    assert err.value.__suppress_context__                         # the error naming the .part is hidden
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_a_directory_and_a_file_as_directory(model, tmp_path):
    missing = tmp_path / "nowhere" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"Cannot write {str(missing)!r}: the directory "
                                                f"{str(missing.parent)!r} does not exist. Create it first"):
        model.save(missing)
    with pytest.raises(IsADirectoryError, match=f"Cannot write {str(tmp_path)!r}: it is a directory"):
        model.save(tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile' is a file, not a directory"):
        model.save(tmp_path / "afile" / "m.npz")
    assert os.listdir(tmp_path) == ["afile"]


def test_a_full_disk_names_the_path_and_leaves_nothing(model, tmp_path, monkeypatch):
    def full(f, **arrays):
        f.write(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match=rf"^\[Errno 28\] Cannot write {str(tmp_path / 'm.npz')!r}: the disk is full\.$"):
        model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_a_path_as_bytes_or_not_a_path(model, tmp_path):
    with pytest.raises(TypeError, match=r"model.save takes the path of a model file \(a str or "
                                        r"pathlib.Path\), got \d+ bytes.*os.fsdecode\(path\)"):
        model.save(os.fsencode(tmp_path / "m.npz"))
    with pytest.raises(TypeError, match=r"got None \(a NoneType\)"):
        model.save(None)
    assert os.listdir(tmp_path) == []


def test_the_file_is_a_zip_of_arrays_only(model, tmp_path):
    """What a reader of the file finds: only .npy members, stored as np.savez stores them."""
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        assert all(info.filename.endswith(".npy") and info.compress_type == zipfile.ZIP_STORED
                   for info in archive.infolist())
        header = io.BytesIO(archive.read("architecture.npy"))
    assert np.load(header, allow_pickle=False).dtype.kind == "U"
