"""Keras's names, arguments, defaults and return values, one by one (the scripts that use them
together are in test_keras_scripts.py; the callbacks in test_keras_callbacks.py)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import tinycnn
from tinycnn import Sequential, models
from tinycnn.gradcheck import check_loss
from tinycnn.layers import (BatchNormalization, Conv2D, Dense, Flatten, Input, InputLayer, MaxPool2D, MaxPooling2D,
                            RandomRotation)
from tinycnn.losses import CategoricalCrossentropy, SparseCategoricalCrossentropy
from tinycnn.optimizers import SGD, Adam, RMSprop
from tinycnn.utils import to_categorical

RNG = np.random.default_rng(0)
X = RNG.random((24, 4), dtype=np.float32)
Y = RNG.integers(0, 3, 24)


def test_input_shape_on_the_first_layer_builds_the_model():
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), Flatten(), Dense(3)])
    assert model.built and model.input_shape == (8, 8, 1) and model.output_shape == (3,)
    mlp = Sequential([Dense(5, input_dim=4), Dense(3)])
    assert mlp.input_shape == (4,)
    flat = Sequential([Flatten(input_shape=(28, 28)), Dense(3)])       # a layer without its own __init__
    assert flat.layers[1].params["kernel"].shape == (784, 3)
    added = Sequential()
    added.add(Dense(5, input_shape=(4,)))
    added.add(Dense(3))
    assert added.built and added.layers[1].params["kernel"].shape == (5, 3)


def test_input_shape_on_a_later_layer_is_an_error_that_says_so():
    with pytest.raises(ValueError, match=r"input_shape= is for a model's first layer, but 'dense' would be "
                                         r"layer 2"):
        Sequential([Dense(5, input_shape=(4,)), Dense(3, input_shape=(5,))])
    with pytest.raises(ValueError, match="keep one of the two"):
        Sequential([Dense(5, input_shape=(4,))], input_shape=(6,))
    with pytest.raises(ValueError, match="not both"):
        Dense(5, input_shape=(4,), input_dim=4)


def test_input_first_in_the_list_keras_3():
    for first in (Input(shape=(4,)), InputLayer(shape=(4,)), InputLayer(input_shape=(4,))):
        model = Sequential([first, Dense(3)])
        assert model.built and model.input_shape == (4,) and len(model.layers) == 1
    model = Sequential([Input(shape=(4,), dtype="float64"), Dense(3)])
    assert model.dtype == np.float64
    with pytest.raises(ValueError, match="must come first"):
        Sequential([Dense(3), Input(shape=(4,))])
    assert tinycnn.Input is Input


def test_both_pooling_names_are_one_class():
    assert MaxPooling2D is MaxPool2D
    assert "MaxPooling2D" not in tinycnn.layers.LAYERS       # a saved model names it once


def test_keras_module_names_after_a_plain_import():
    code = ("import sys, tinycnn; assert 'requests' not in sys.modules; "
            "m = tinycnn.datasets.mnist; assert m.load_data; assert 'requests' not in sys.modules; "
            "assert tinycnn.models.Sequential is tinycnn.Sequential and tinycnn.models.load_model is tinycnn.load_model; "
            "assert tinycnn.utils.to_categorical and tinycnn.callbacks.EarlyStopping and tinycnn.optimizers.Adam; "
            "assert tinycnn.losses.CategoricalCrossentropy and tinycnn.layers.Dense; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tinycnn.nothing


def test_to_categorical_as_keras():
    np.testing.assert_array_equal(to_categorical([2, 0, 1]), [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert to_categorical([1], num_classes=4).shape == (1, 4) and to_categorical([1]).dtype == np.float32
    assert to_categorical(np.array([[2], [0]])).shape == (2, 3)
    with pytest.raises(ValueError, match="reach 5"):
        to_categorical([5], num_classes=3)
    with pytest.raises(ValueError, match="integer class labels"):
        to_categorical([0.5, 1])


def test_categorical_crossentropy_equals_the_sparse_loss_on_one_hot_targets(rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    sparse, one_hot = SparseCategoricalCrossentropy(), CategoricalCrossentropy()
    assert one_hot.forward(logits, to_categorical(labels, 4)) == pytest.approx(sparse.forward(logits, labels))
    np.testing.assert_allclose(one_hot.backward(), sparse.backward())
    soft = rng.dirichlet(np.ones(4), size=6)                            # smoothed targets: still exact
    one_hot.forward(logits, soft)
    assert check_loss(_Targets(soft), logits, np.zeros(6, int)) < 1e-7


class _Targets(CategoricalCrossentropy):
    """check_loss passes labels; this fixes the soft targets instead, to check the gradient."""

    def __init__(self, targets):
        super().__init__()
        self.fixed = targets

    def forward(self, logits, labels):
        return super().forward(logits, self.fixed)


def test_one_hot_labels_are_checked_and_pointed_to_the_right_loss():
    model = Sequential([Dense(3, activation="softmax")], input_shape=(4,))
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="look one-hot: compile with loss='categorical_crossentropy'"):
        model.fit(X, to_categorical(Y), verbose=0)
    model = Sequential([Dense(3, activation="softmax")], input_shape=(4,))
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="look like class indices: pass tinycnn.utils.to_categorical"):
        model.fit(X, Y, verbose=0)
    model.fit(X, to_categorical(Y), verbose=0)


@pytest.mark.parametrize("name", ["accuracy", "acc", "sparse_categorical_accuracy"])
def test_accuracy_is_logged_under_the_name_compile_gave(name):
    model = Sequential([Dense(3)], input_shape=(4,))
    model.compile("adam", metrics=[name])
    history = model.fit(X, Y, epochs=1, verbose=0, validation_split=0.25)
    assert sorted(history.history) == sorted(["loss", name, "val_loss", f"val_{name}"])
    assert set(model.evaluate(X, Y, return_dict=True)) == {"loss", name}


def test_without_metrics_evaluate_returns_the_loss_alone():
    model = Sequential([Dense(3)], input_shape=(4,))
    model.compile("adam", metrics=None)
    loss = model.evaluate(X, Y)
    assert isinstance(loss, float) and sorted(model.fit(X, Y, verbose=0).history) == ["loss"]
    with pytest.raises(ValueError, match="Unknown metrics \\['mse'\\]"):
        model.compile("adam", metrics=["mse"])


def test_evaluate_and_predict_take_kerass_arguments(capsys):
    model = Sequential([Dense(3, activation="softmax")], input_shape=(4,))
    model.compile("adam")
    loss, acc = model.evaluate(X, Y)
    assert model.evaluate(X, Y, return_dict=True) == {"loss": loss, "accuracy": acc}
    model.evaluate(X, Y, verbose=2)
    assert f"loss: {loss:.4f} - accuracy: {acc:.4f}" in capsys.readouterr().out
    probs = model.predict(X, verbose=0)
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(model.predict(X, verbose=1), probs)
    assert "1/1" in capsys.readouterr().out


@pytest.mark.parametrize("name, cls", [("Adam", Adam), ("ADAM", Adam), ("SGD", SGD), ("rmsprop", RMSprop),
                                       ("RMSprop", RMSprop)])
def test_optimizer_names_in_any_case(name, cls):
    model = Sequential([Dense(3)], input_shape=(4,))
    model.compile(name)
    assert type(model.optimizer) is cls


def test_rmsprop_steps_worked_out_by_hand():
    """Keras's RMSprop: v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + eps); with momentum,
    u = momentum u + step. Two steps on one weight, g = 2 then 1, lr 0.1, rho 0.5, eps 0."""
    for momentum, expected in ((0.0, [1 - 0.1 * 2 / 2 ** 0.5, None]), (0.5, None)):
        opt = RMSprop(0.1, rho=0.5, momentum=momentum, epsilon=1e-30)
        p = np.array([1.0])
        opt.iterations = 1
        opt.update(("d", "k"), p, np.array([2.0]), 0.1)
        v1 = 0.5 * 4                                   # 2.0
        step1 = 0.1 * 2 / v1 ** 0.5
        assert p[0] == pytest.approx(1 - step1)
        opt.update(("d", "k"), p, np.array([1.0]), 0.1)
        v2 = 0.5 * v1 + 0.5 * 1                        # 1.5
        step2 = 0.1 * 1 / v2 ** 0.5
        total = step1 + (momentum * step1 + step2 if momentum else step2)
        assert p[0] == pytest.approx(1 - total)
    centered = RMSprop(0.1, rho=0.5, centered=True, epsilon=1e-30)
    p = np.array([1.0])
    centered.update(("d", "k"), p, np.array([2.0]), 0.1)
    # v = 2, mg = 1: denominator sqrt(2 - 1) = 1
    assert p[0] == pytest.approx(1 - 0.1 * 2)


def test_rmsprop_refuses_a_non_finite_step_and_round_trips_its_config(tmp_path):
    opt = RMSprop(centered=True, momentum=0.9)
    p = np.ones(3)
    assert opt.update(("d", "k"), p, np.array([1.0, np.inf, 1.0]), 0.1, write=False) is False
    np.testing.assert_array_equal(p, 1.0)
    model = Sequential([Dense(3)], input_shape=(4,), seed=0)
    model.compile(RMSprop(0.01, rho=0.8, momentum=0.5, centered=True))
    model.fit(X, Y, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = tinycnn.load_model(tmp_path / "m.npz")
    assert loaded.optimizer.get_config() == model.optimizer.get_config()


def test_save_weights_and_load_weights(tmp_path):
    model = Sequential([Dense(5), Dense(3)], input_shape=(4,), seed=0)
    model.compile("adam")
    model.fit(X, Y, verbose=0)
    model.save_weights(tmp_path / "w.npz")
    other = Sequential([Dense(5), Dense(3)], input_shape=(4,), seed=1)
    other.compile(SGD())
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(X), model.predict(X))
    assert type(other.optimizer) is SGD                        # weights only
    with pytest.raises(ValueError, match="architecture and the weights do not match"):
        Sequential([Dense(4), Dense(3)], input_shape=(4,)).load_weights(tmp_path / "w.npz")


def test_saving_under_a_keras_name_says_what_the_file_is(tmp_path):
    model = Sequential([Dense(3)], input_shape=(4,))
    for name in ("m.h5", "m.keras", "m.weights.h5"):
        with pytest.warns(UserWarning, match="writes tinycnn's own format, a .npz archive"):
            model.save(tmp_path / name)
        assert tinycnn.load_model(tmp_path / name).layers[0].units == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(tmp_path / "m.npz")


def test_a_rotation_factor_above_one_says_what_it_means_in_degrees():
    with pytest.warns(UserWarning, match=r"up to 10 full turns \(3600°\).*RandomRotation\(10 / 360\)"):
        RandomRotation(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RandomRotation(0.1)


def test_a_pytorch_like_batchnorm_momentum_gets_a_hint():
    with pytest.warns(UserWarning, match=r"PyTorch's momentum=0.1 is Keras's momentum=0.9"):
        BatchNormalization(momentum=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchNormalization(momentum=0.9)


def test_float64_data_trains_a_float32_model_unless_asked():
    x64 = X.astype(np.float64)
    model = Sequential([Dense(3)])
    model.compile("adam")
    model.fit(x64, Y, verbose=0)
    assert model.dtype == np.float32 and model.layers[0].params["kernel"].dtype == np.float32
    on_purpose = Sequential([Dense(3)], dtype="float64")
    on_purpose.compile("adam")
    on_purpose.fit(x64, Y, verbose=0)
    assert on_purpose.layers[0].params["kernel"].dtype == np.float64


def test_models_module_round_trip(tmp_path):
    model = models.Sequential([Dense(3)], input_shape=(4,))
    models.save_model(model, tmp_path / "m.npz")
    np.testing.assert_array_equal(models.load_model(tmp_path / "m.npz").predict(X), model.predict(X))
