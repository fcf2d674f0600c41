"""MaxPool2D: keep the largest value of each window."""

from ..kernels.pooling import maxpool_backward, maxpool_forward
from ._geometry import check_padding, pair, window_geometry
from .base import Layer


class MaxPool2D(Layer):
    """Max pooling over PH×PW windows, channel by channel.

    Shapes
        x  (N, H, W, C)
        y  (N, OH, OW, C)   OH = (H + PT + PB - PH) // SH + 1, likewise OW

    ``strides`` defaults to ``pool_size`` (windows side by side, as in Keras). padding="same"
    pads with -inf, never 0, so padding is never chosen as a maximum (a zero would win over a
    window of negative inputs).

    Forward: y = the window's maximum; the kernel also records the position of that maximum.
    Ties: the first maximum in reading order (row by row) wins.

    Backward: only the maximum reached the output, so d y / d x is 1 at that position and 0 at
    the others: dx is zero except at each window's argmax, which receives dout (summed when
    overlapping windows share a maximum).

    What ``fit`` runs. With ``compile(fast=False)`` this code runs as written. By default, on the
    CPU, a MaxPool2D right after Conv2D and ReLU runs inside one fused block instead
    (``layers/fused.py``); ``tests/test_fast_paths.py::test_fused_block_equals_the_three_layers``
    proves the two equal. The kernels below are Numba, beside their NumPy references
    (``kernels/pooling.py``).
    """

    per_sample = True

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name=name)
        self.pool_size = pair(pool_size, "pool_size")
        self.strides = pair(strides if strides is not None else self.pool_size, "strides")
        self.padding = check_padding(padding)

    def _geometry(self, input_shape):
        return window_geometry(self.name, "MaxPool2D", input_shape, self.pool_size, self.strides, self.padding)

    def output_shape(self, input_shape):
        _, (oh, ow) = self._geometry(input_shape)
        return (oh, ow, input_shape[2])

    def build(self, input_shape, dtype="float32", rng=None):
        self.pad, _ = self._geometry(input_shape)
        super().build(input_shape, dtype)

    def forward(self, x, training=False):
        self._prepare(x)
        self.x_shape = x.shape
        y, self.argmax = maxpool_forward(x, *self.pool_size, self.strides, self.pad)
        return y

    def backward(self, dout):
        return maxpool_backward(dout, self.argmax, self.x_shape, *self.pool_size, self.strides, self.pad)

    def get_config(self):
        return {"name": self.name, "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}
