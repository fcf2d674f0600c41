"""Shared test helpers: the seed model and float64 data."""

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D


def seed_model(input_shape=(28, 28, 1), seed=0, dtype="float32"):
    """The classic Keras MNIST CNN, line for line."""
    model = Sequential([
        Conv2D(32, 3, activation="relu"),
        MaxPool2D(2),
        Conv2D(64, 3, activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=seed)
    model.build(input_shape, dtype)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
