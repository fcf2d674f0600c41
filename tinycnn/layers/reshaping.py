"""Flatten and Reshape: change the shape, move no numbers. Backward reshapes the gradient back."""

import numpy as np

from .. import checks
from .base import Layer


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...). Row-major (C order), as Keras flattens NHWC.

    Backward: flattening only relabels the entries, so dx is dout reshaped to x's shape.
    """

    per_sample = True

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        self._prepare(x)
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape((dout.shape[0],) + self.input_shape)


class Reshape(Layer):
    """(N, *input_shape) -> (N, *target_shape); the sizes must match. Backward reshapes back."""

    per_sample = True

    def __init__(self, target_shape, name=None):
        super().__init__(name=name)
        self.target_shape = checks.shape(target_shape, "target_shape")

    def output_shape(self, input_shape):
        if int(np.prod(input_shape)) != int(np.prod(self.target_shape)):
            raise ValueError(f"{self.name}: cannot reshape a sample of shape {tuple(input_shape)} "
                             f"({int(np.prod(input_shape))} values) to {self.target_shape} "
                             f"({int(np.prod(self.target_shape))} values).")
        return self.target_shape

    def build(self, input_shape, dtype="float32", rng=None):
        self.output_shape(input_shape)
        super().build(input_shape, dtype)

    def forward(self, x, training=False):
        self._prepare(x)
        return x.reshape((x.shape[0],) + self.target_shape)

    def backward(self, dout):
        return dout.reshape((dout.shape[0],) + self.input_shape)

    def get_config(self):
        return {"name": self.name, "target_shape": list(self.target_shape)}
