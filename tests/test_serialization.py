"""model.save / tinycnn.load_model: a round trip, and a clear error for every kind of bad file."""

import json
import os

import numpy as np
import pytest

from conftest import seed_model
from tinycnn import Sequential, load_model
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Reshape, Softmax
from tinycnn.serialization import FORMAT_VERSION, ModelFileError


@pytest.fixture
def trained(rng):
    model = seed_model(seed=5)
    model.compile("adam")
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=64)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0)
    return model, x


def test_round_trip_gives_identical_predictions(trained, tmp_path):
    model, x = trained
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    assert [a.get_config() for a in loaded.layers] == [b.get_config() for b in model.layers]
    assert loaded.optimizer is not None and loaded.optimizer.learning_rate == model.optimizer.learning_rate
    assert not [f for f in os.listdir(tmp_path) if f != "model.npz"]   # no temporary file left


def test_every_layer_type_round_trips(tmp_path, rng):
    model = Sequential([Conv2D(3, (2, 3), strides=(2, 1), padding="same", activation="relu"),
                        MaxPool2D(2, strides=1, padding="same"), ReLU(), Flatten(),
                        Reshape((4 * 6 * 3,)), Dense(4), Softmax()],
                       input_shape=(7, 6, 2), seed=1)
    x = rng.random((3, 7, 6, 2), dtype=np.float32)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "m.npz").predict(x), model.predict(x))


def test_float64_model_round_trips(tmp_path):
    model = seed_model(dtype="float64")
    model.save(tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").layers[0].params["kernel"].dtype == np.float64


def test_loading_runs_no_code(trained, tmp_path):
    """The file holds only plain arrays: np.load with allow_pickle=False reads all of it."""
    model, _ = trained
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
        arch = json.loads(str(f["architecture"]))
    assert arch["layers"][0]["type"] == "Conv2D"


def test_truncated_file(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(tmp_path / "cut.npz")


def test_not_a_model(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a tinycnn model"):
        load_model(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ModelFileError, match="text file"):
        load_model(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(dst, **arrays)


def test_newer_format_version(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "new.npz", tinycnn_format=np.array(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer.*Upgrade tinycnn"):
        load_model(tmp_path / "new.npz")


def test_unknown_layer_type(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arch = json.loads(str(f["architecture"]))
    arch["layers"][1]["type"] = "Teleport2D"
    _rewrite(tmp_path / "m.npz", tmp_path / "unknown.npz", architecture=np.array(json.dumps(arch)))
    with pytest.raises(ModelFileError, match="Teleport2D"):
        load_model(tmp_path / "unknown.npz")


def test_save_is_atomic_and_reports_a_bad_directory(trained, tmp_path, monkeypatch):
    model, _ = trained
    target = tmp_path / "m.npz"
    model.save(target)
    before = target.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt                     # Ctrl-C in the middle of writing

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        model.save(target)
    assert target.read_bytes() == before           # the old model is intact
    assert os.listdir(tmp_path) == ["m.npz"]       # and no temporary file remains
    monkeypatch.undo()

    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile' is a file, not a directory"):
        model.save(tmp_path / "afile" / "m.npz")


def test_save_before_build():
    with pytest.raises(RuntimeError, match="Build or fit"):
        Sequential([Dense(3)]).save("never.npz")


def test_regularised_network_round_trips_with_its_moving_statistics(tmp_path, rng):
    """BatchNormalization's moving averages are saved; after loading, dropout and augmentation
    are inactive (inference), so predictions are identical and deterministic."""
    from tinycnn.layers import BatchNormalization, Dropout, RandomRotation, RandomTranslation

    model = Sequential([RandomRotation(0.05), RandomTranslation(0.1, 0.1), Conv2D(4, 3), BatchNormalization(),
                        ReLU(), MaxPool2D(2), Dropout(0.25), Flatten(), Dense(8), BatchNormalization(),
                        ReLU(), Dropout(0.5), Dense(3, activation="softmax")], input_shape=(8, 8, 1), seed=2)
    model.compile("adam")
    x = rng.random((40, 8, 8, 1), dtype=np.float32)
    model.fit(x, rng.integers(0, 3, 40), epochs=2, batch_size=8, verbose=0)
    bn = model.layers[3]
    assert not np.allclose(bn.state["moving_mean"], 0)                 # training moved them
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.layers[3].state["moving_mean"], bn.state["moving_mean"])
    np.testing.assert_array_equal(loaded.layers[3].state["moving_variance"], bn.state["moving_variance"])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.predict(x), loaded.predict(x))  # no randomness at inference
    assert [type(a).__name__ for a in loaded.layers] == [type(b).__name__ for b in model.layers]


# -- one registry: a layer of your own trains, saves and loads without editing tinycnn ---------

from tinycnn.layers import LAYERS, Activation, Layer, LeakyReLU  # noqa: E402


class Scale(Layer):
    """A learner's own layer, defined outside tinycnn: y = factor * x * w, one weight per feature."""

    def __init__(self, factor=1.0, name=None, seed=None):
        super().__init__(name=name, seed=seed)
        self.factor = float(factor)

    def build(self, input_shape, dtype="float32", rng=None):
        super().build(input_shape, dtype)
        self.params = {"w": np.ones(self.input_shape, dtype=self.dtype)}

    def forward(self, x, training=False):
        self._prepare(x)
        self.x = x
        return self.factor * x * self.params["w"]

    def backward(self, dout):
        self.grads["w"] = self.factor * (dout * self.x).sum(axis=0)
        return self.factor * dout * self.params["w"]

    def get_config(self):
        return {"name": self.name, "factor": self.factor}


class Swish(Activation):
    """A learner's own activation with an argument: y = x * sigmoid(beta * x)."""

    def __init__(self, beta=1.0, name=None):
        super().__init__(name=name)
        self.beta = float(beta)

    def forward(self, x, training=False):
        self._prepare(x)
        self.x, self.s = x, 1 / (1 + np.exp(-self.beta * x))
        return x * self.s

    def backward(self, dout):
        return dout * (self.s + self.beta * self.x * self.s * (1 - self.s))

    def get_config(self):
        return {"name": self.name, "beta": self.beta}


def own_layers_model():
    return Sequential([Flatten(), Scale(0.5), Dense(6, activation=Swish(beta=2.0)),
                       Dense(5, activation=LeakyReLU(alpha=0.1)), Dense(3, activation="swish")],
                      input_shape=(4, 4, 1), seed=0)


def test_a_layer_of_your_own_trains_saves_and_loads(tmp_path, rng):
    assert LAYERS["Scale"] is Scale and LAYERS["Swish"] is Swish      # defining them registered them
    model = own_layers_model()
    model.compile("adam")
    x, y = rng.random((32, 4, 4, 1), dtype=np.float32), rng.integers(0, 3, 32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert not np.allclose(model.layers[1].params["w"], 1)             # it trained
    model.save(tmp_path / "own.npz")
    loaded = load_model(tmp_path / "own.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert type(loaded.layers[1]) is Scale and loaded.layers[1].factor == 0.5
    assert type(loaded.layers[2].activation) is Swish and loaded.layers[2].activation.beta == 2.0
    assert loaded.layers[3].activation.alpha == 0.1                     # the arguments are kept
    assert type(loaded.layers[4].activation) is Swish and loaded.layers[4].activation.beta == 1.0


def test_loading_a_class_the_program_does_not_define_says_so(tmp_path, monkeypatch):
    own_layers_model().save(tmp_path / "own.npz")
    monkeypatch.delitem(LAYERS, "Scale")            # as in a program that never defined Scale
    with pytest.raises(ModelFileError, match=r"'Scale' is not defined in this program.*defined \(or imported\)"):
        load_model(tmp_path / "own.npz")
    monkeypatch.undo()
    monkeypatch.delitem(LAYERS, "Swish")            # an activation inside a Dense: the same error
    with pytest.raises(ModelFileError, match="'Swish' is not defined in this program"):
        load_model(tmp_path / "own.npz")


def test_an_activation_that_cannot_be_saved_is_an_error_at_save_time(tmp_path):
    class Forgetful(Activation):                    # keeps beta but get_config does not save it
        def __init__(self, beta=1.0, name=None):
            super().__init__(name=name)
            self.beta = beta

        def forward(self, x, training=False):
            return x * self.beta

    model = Sequential([Dense(3, activation=Forgetful(beta=2.0))], input_shape=(4,))
    with pytest.raises(ValueError, match="does not keep the argument 'beta'"):
        model.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)                 # nothing written

    class _Hidden(Activation):                      # "_" names are helpers, never registered
        pass

    with pytest.raises(ValueError, match="not registered"):
        Sequential([Dense(3, activation=_Hidden())], input_shape=(4,)).save(tmp_path / "m.npz")


def test_activation_shorthand_uses_the_same_registry():
    from tinycnn.layers import Sigmoid, Tanh
    assert type(Dense(2, activation="leaky_relu").activation) is LeakyReLU
    assert Dense(2, activation="leaky_relu").activation.alpha == 0.3     # Keras's default
    assert type(Dense(2, activation="sigmoid").activation) is Sigmoid
    assert type(Dense(2, activation="tanh").activation) is Tanh
    assert type(Dense(2, activation="swish").activation) is Swish        # a learner's own, by name
    with pytest.raises(ValueError, match="LeakyReLU.*Swish.*'leaky_relu'"):
        Dense(2, activation="nope")
    with pytest.raises(ValueError, match="Unknown activation"):
        Dense(2, activation="dense")                # a layer, but not an activation


def test_two_layer_classes_cannot_share_a_name_but_a_redefinition_replaces():
    with pytest.raises(TypeError, match="'Dense' already exists"):
        class Dense(Layer):                         # noqa: F811 -- shadows tinycnn's Dense
            pass

    def define():
        class Twice(Layer):
            pass
        return Twice

    first, second = define(), define()              # the same class statement run again
    assert LAYERS["Twice"] is second and first is not second
