"""check_layer and check_model on something built in float32: the error says how to get float64
parameters (converting x cannot help), and following its advice makes the check run."""

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.gradcheck import check_layer, check_model
from tinycnn.layers import Conv2D, Dense, Flatten, ReLU


def test_a_float32_layer_is_refused_with_the_way_to_a_float64_one(rng):
    layer = Dense(3, seed=0)
    layer.build((5,), "float32")
    x = rng.standard_normal((4, 5))
    with pytest.raises(TypeError, match=r"check_layer: layer 'dense.*' is built for float32, but gradient "
                                        r"checks need float64 parameters.*layer.build\(\(5,\), 'float64'\)") as err:
        check_layer(layer, x)
    assert "astype('float32')" not in str(err.value)
    layer.build((5,), "float64")                      # the advice
    assert max(check_layer(layer, x).values()) < 1e-6


def test_a_layer_without_parameters_built_for_float32_is_refused_too(rng):
    relu = ReLU()
    relu.forward(rng.standard_normal((2, 3)).astype(np.float32))      # built on first use
    with pytest.raises(TypeError, match=r"layer '.*' is built for float32, but gradient checks need "
                                        r"float64.*a new, unbuilt ReLU\(\.\.\.\).*layer.build\(\(3,\), 'float64'\)"):
        check_layer(relu, rng.standard_normal((2, 3)))


def test_a_float32_model_is_refused_with_the_way_to_a_float64_one(rng):
    model = Sequential([Conv2D(2, 3, seed=0), Flatten(), Dense(3, seed=1)], input_shape=(5, 5, 1), seed=0)
    model.compile("adam")
    x, y = rng.standard_normal((2, 5, 5, 1)), np.array([0, 2])
    with pytest.raises(TypeError, match=r"check_model: the model is built for float32.*need float64 "
                                        r"parameters.*model.build\(\(5, 5, 1\), 'float64'\)") as err:
        check_model(model, x, y)
    assert "astype('float32')" not in str(err.value)
    weights = model.get_weights()                     # the advice, keeping these weights
    model.build((5, 5, 1), "float64")
    model.set_weights(weights)
    assert model.dtype == np.float64 and all(w.dtype == np.float64 for w in model.get_weights())
    assert max(check_model(model, x, y).values()) < 1e-6


def test_an_unbuilt_model_is_still_built_in_float64(rng):
    model = Sequential([Flatten(), Dense(3, seed=1)], seed=0)
    model.compile("adam")
    errors = check_model(model, rng.standard_normal((2, 4, 4, 1)), np.array([1, 2]))
    assert model.dtype == np.float64 and max(errors.values()) < 1e-6
