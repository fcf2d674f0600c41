"""Every public argument is checked when it is given: the error names the argument and the value.

Each case below is one misuse a new user makes: a string where a number belongs, a fraction where a
whole number belongs (never silently truncated), None, a pair of the wrong length, a negative or
out-of-range value. NumPy scalars, on the other hand, must work wherever Python numbers do.
"""

import re

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.callbacks import EarlyStopping, ModelCheckpoint
from tinycnn.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                            RandomRotation, RandomTranslation, Reshape)
from tinycnn.optimizers import SGD, Adam
from tinycnn.schedules import CosineDecay

BAD_CONSTRUCTORS = [
    # (what is called, the argument the message must name, the bad value it must show)
    (lambda: Adam("0.01"), "learning_rate", "'0.01'"),
    (lambda: Adam(learning_rate=float("inf")), "learning_rate", "inf"),
    (lambda: Adam(learning_rate=float("nan")), "learning_rate", "nan"),
    (lambda: Adam(learning_rate=0), "learning_rate", "0"),
    (lambda: Adam(learning_rate=-1e-3), "learning_rate", "-0.001"),
    (lambda: Adam(learning_rate=None), "learning_rate", "None"),
    (lambda: Adam(beta_1=1.0), "beta_1", "1.0"),
    (lambda: Adam(beta_1=-0.1), "beta_1", "-0.1"),
    (lambda: Adam(beta_2=1.5), "beta_2", "1.5"),
    (lambda: Adam(beta_2="0.999"), "beta_2", "'0.999'"),
    (lambda: Adam(epsilon=0.0), "epsilon", "0.0"),
    (lambda: Adam(epsilon=-1e-7), "epsilon", "-1e-07"),
    (lambda: SGD(momentum=1.0), "momentum", "1.0"),
    (lambda: SGD(momentum=-0.5), "momentum", "-0.5"),
    (lambda: SGD(learning_rate="fast"), "learning_rate", "'fast'"),
    (lambda: SGD(nesterov="yes"), "nesterov", "'yes'"),
    (lambda: CosineDecay("1e-3", 10), "initial_learning_rate", "'1e-3'"),
    (lambda: CosineDecay(1e-3, 10.5), "decay_steps", "10.5"),
    (lambda: CosineDecay(1e-3, None), "decay_steps", "None"),
    (lambda: CosineDecay(1e-3, 10, alpha=-0.1), "alpha", "-0.1"),
    (lambda: Conv2D("32", 3), "filters", "'32'"),
    (lambda: Conv2D(32.5, 3), "filters", "32.5"),
    (lambda: Conv2D(0, 3), "filters", "0"),
    (lambda: Conv2D(32, (3, 3, 3)), "kernel_size", "(3, 3, 3)"),
    (lambda: Conv2D(32, 2.5), "kernel_size", "2.5"),
    (lambda: Conv2D(32, None), "kernel_size", "None"),
    (lambda: Conv2D(32, 3, strides=-1), "strides", "-1"),
    (lambda: Conv2D(32, 3, padding="full"), "padding", "'full'"),
    (lambda: Conv2D(32, 3, kernel_initializer="one"), "initializer", "'one'"),
    (lambda: Conv2D(32, 3, seed="0"), "seed", "'0'"),
    (lambda: Dense(10.7), "units", "10.7"),
    (lambda: Dense("10"), "units", "'10'"),
    (lambda: Dense(-1), "units", "-1"),
    (lambda: Dense(None), "units", "None"),
    (lambda: Dense(10, activation="no_such_activation"), "activation", "'no_such_activation'"),
    (lambda: Dense(10, name=3), "name", "3"),
    (lambda: MaxPool2D((2,)), "pool_size", "(2,)"),
    (lambda: MaxPool2D(2, strides=(1, 0)), "strides", "0"),
    (lambda: Reshape((7, "4")), "target_shape", "'4'"),
    (lambda: Reshape(None), "target_shape", "None"),
    (lambda: Dropout("0.5"), "rate", "'0.5'"),
    (lambda: Dropout(1.0), "rate", "1.0"),
    (lambda: Dropout(-0.1), "rate", "-0.1"),
    (lambda: BatchNormalization(momentum=1.5), "momentum", "1.5"),
    (lambda: BatchNormalization(epsilon=0), "epsilon", "0"),
    (lambda: RandomRotation("01"), "factor", "'01'"),
    (lambda: RandomRotation((0.1, 0.2, 0.3)), "factor", "(0.1, 0.2, 0.3)"),
    (lambda: RandomTranslation(0.1, None), "width_factor", "None"),
    (lambda: RandomRotation(0.1, fill_value="black"), "fill_value", "'black'"),
    (lambda: Sequential([Dense(2)], input_shape=(4, "1")), "input_shape", "'1'"),
    (lambda: Sequential([Dense(2)], input_shape=28), "input_shape", "28"),
    (lambda: Sequential([Dense(2)], seed=1.5), "seed", "1.5"),
    (lambda: Sequential([Dense(2)], seed=-1), "seed", "-1"),
    (lambda: Sequential([Dense]), "layers", "Dense"),
    (lambda: Sequential(Dense(2)), "layers", "Dense"),
    (lambda: EarlyStopping(patience=2.5), "patience", "2.5"),
    (lambda: EarlyStopping(patience=-1), "patience", "-1"),
    (lambda: EarlyStopping(min_delta=-0.1), "min_delta", "-0.1"),
    (lambda: EarlyStopping(mode="up"), "mode", "'up'"),
    (lambda: EarlyStopping(monitor=None), "monitor", "None"),
    (lambda: EarlyStopping(restore_best_weights="True"), "restore_best_weights", "'True'"),
    (lambda: ModelCheckpoint(None), "path", "None"),
    (lambda: ModelCheckpoint("m.npz", save_best_only="no"), "save_best_only", "'no'"),
]


@pytest.mark.parametrize("call, argument, shown", BAD_CONSTRUCTORS,
                         ids=[f"{a}={v}" for _, a, v in BAD_CONSTRUCTORS])
def test_bad_constructor_arguments_name_the_argument_and_value(call, argument, shown):
    with pytest.raises((TypeError, ValueError)) as err:
        call()
    message = str(err.value)
    assert argument in message and shown in message, message


def small_model():
    model = Sequential([Flatten(), Dense(3, activation="softmax")], input_shape=(2, 2, 1), seed=0)
    model.compile(Adam(1e-2))
    return model


def xy(n=8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 2, 2, 1)).astype(np.float32), rng.integers(0, 3, n)


BAD_FIT = [
    ({"epochs": 2.5}, "epochs", "2.5"),
    ({"epochs": -1}, "epochs", "-1"),
    ({"epochs": "3"}, "epochs", "'3'"),
    ({"epochs": None}, "epochs", "None"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"batch_size": 2.5}, "batch_size", "2.5"),
    ({"batch_size": "32"}, "batch_size", "'32'"),
    ({"validation_split": "0.1"}, "validation_split", "'0.1'"),
    ({"validation_split": -0.1}, "validation_split", "-0.1"),
    ({"validation_split": 1.0}, "validation_split", "1.0"),
    ({"validation_split": None}, "validation_split", "None"),
    ({"validation_data": (np.zeros((2, 2, 2, 1), np.float32),)}, "validation_data", "tuple"),
    ({"shuffle": "False"}, "shuffle", "'False'"),
    ({"verbose": 3}, "verbose", "3"),
    ({"verbose": "1"}, "verbose", "'1'"),
    ({"seed": 0.5}, "seed", "0.5"),
    ({"callbacks": EarlyStopping()}, "callbacks", "EarlyStopping"),
    ({"callbacks": ["stop"]}, "callbacks", "'stop'"),
]


@pytest.mark.parametrize("kwargs, argument, shown", BAD_FIT, ids=[a + "=" + v for _, a, v in BAD_FIT])
def test_bad_fit_arguments_fail_before_training(kwargs, argument, shown):
    model = small_model()
    before = model.get_weights()
    with pytest.raises((TypeError, ValueError)) as err:
        model.fit(*xy(), **{"verbose": 0, **kwargs})
    assert argument in str(err.value) and shown in str(err.value), str(err.value)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method, kwargs, argument", [
    ("evaluate", {"batch_size": 1.5}, "batch_size"),
    ("evaluate", {"batch_size": -1}, "batch_size"),
    ("evaluate", {"verbose": "yes"}, "verbose"),
    ("predict", {"batch_size": "128"}, "batch_size"),
    ("predict", {"batch_size": None}, "batch_size"),
])
def test_bad_evaluate_and_predict_arguments(method, kwargs, argument):
    model = small_model()
    x, y = xy()
    args = (x, y) if method == "evaluate" else (x,)
    with pytest.raises((TypeError, ValueError), match=argument):
        getattr(model, method)(*args, **kwargs)


def test_numpy_scalars_work_wherever_python_numbers_do():
    model = Sequential([Conv2D(np.int64(2), np.int32(2), strides=(np.int64(1), 1), seed=np.int64(1)),
                        MaxPool2D(np.int64(1)), Flatten(), Dropout(np.float32(0.25)),
                        BatchNormalization(momentum=np.float64(0.9)),
                        Dense(np.int16(3), activation="softmax")],
                       input_shape=(np.int64(3), 3, 1), seed=np.int64(0))
    model.compile(Adam(np.float32(1e-2), beta_1=np.float64(0.9), epsilon=np.float32(1e-7)))
    x, y = np.zeros((6, 3, 3, 1), np.float32), np.arange(6) % 3
    history = model.fit(x, y, epochs=np.int64(2), batch_size=np.int32(4), validation_split=np.float64(0.5),
                        verbose=np.int64(0), shuffle=np.bool_(True), seed=np.int64(3),
                        callbacks=[EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.0))])
    assert len(history.epoch) == 2
    assert model.predict(x, batch_size=np.int64(2)).shape == (6, 3)
    assert isinstance(model.optimizer.learning_rate, float) and isinstance(model.layers[0].filters, int)
    SGD(np.float64(0.1), momentum=np.float32(0.5), nesterov=np.bool_(True))
    assert CosineDecay(np.float32(1e-3), np.int64(10), alpha=np.float64(0.1)).decay_steps == 10


def test_whole_floats_count_as_whole_numbers_and_epochs_zero_trains_nothing():
    model = small_model()
    before = model.get_weights()
    assert model.fit(*xy(), epochs=0, verbose=0).epoch == []            # as Keras allows
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(model.fit(*xy(), epochs=2.0, batch_size=4.0, verbose=0).epoch) == 2
    assert Dense(10.0).units == 10


def test_messages_say_what_is_allowed():
    with pytest.raises(ValueError, match=re.escape("epochs must be a whole number >= 0, got 2.5 (a float); "
                                                   "a fraction is never rounded")):
        small_model().fit(*xy(), epochs=2.5, verbose=0)
    with pytest.raises(ValueError, match=re.escape("beta_1 must be a finite number in [0.0, 1.0), got 1.0")):
        Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0 or a schedule"):
        Adam(float("inf"))
    with pytest.raises(TypeError, match=re.escape("callbacks=[cb]")):
        small_model().fit(*xy(), callbacks=EarlyStopping(), verbose=0)


def test_compile_metrics_and_set_weights_arguments():
    model = small_model()
    with pytest.raises(TypeError, match="metrics must be a list"):
        model.compile("adam", metrics=5)
    model.compile("adam", metrics="accuracy")                 # one name is fine
    with pytest.raises(TypeError, match="set_weights takes a list"):
        model.set_weights(np.zeros(3))
    model.set_weights([w.tolist() for w in model.get_weights()])   # nested lists work too


@pytest.mark.parametrize("x, match", [(None, "x must be an array of samples.*None"),
                                      ("abc", "x must be an array of samples.*'abc'"),
                                      (np.float32(3.0), "x must be an array of samples.*single value")])
def test_x_that_is_not_an_array_of_samples(x, match):
    with pytest.raises((TypeError, ValueError), match=match):
        small_model().predict(x)


def test_an_optimizer_class_instead_of_an_object():
    with pytest.raises(ValueError, match=r"pass an object: Adam\(\)"):
        small_model().compile(Adam)


def test_model_checkpoint_patterns_are_checked_when_made():
    with pytest.raises(ValueError, match=r"uses \['val_acuracy'\].*did you mean \{val_accuracy\}"):
        ModelCheckpoint("m-{epoch}-{val_acuracy:.2f}.npz")
    ModelCheckpoint("m-{epoch}-{val_acc:.2f}.npz")        # Keras's short name: fine if compile used it
    with pytest.raises(ValueError, match="not a valid pattern"):
        ModelCheckpoint("m-{epoch.npz")
    ModelCheckpoint("m-{epoch:02d}-{val_loss:.3f}.npz")


def test_a_checkpoint_pattern_needing_validation_says_so(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match=r"uses \{val_loss\}, which this fit never logs.*pass validation_data"):
        model.fit(*xy(), epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "m-{val_loss:.2f}.npz")])
    assert model.history.epoch == []                 # refused before the first epoch, not after it
