"""Conv2D: a 2-D convolution computed as im2col followed by one matrix product."""

from .. import checks, initializers
from ..backend import get_array_module
from ..kernels.im2col import col2im, im2col
from . import activations
from ._geometry import check_padding, pair, window_geometry
from .base import Layer


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as Keras and PyTorch compute it), channels-last.

    Shapes
        x       (N, H, W, C)
        kernel  (KH, KW, C, F)       Keras layout: F filters, each KH×KW×C
        bias    (F,)
        y       (N, OH, OW, F)       OH = (H + PT + PB - KH) // SH + 1, likewise OW

    padding="valid" adds nothing; "same" pads so that OH = ceil(H / SH), splitting the padding as
    Keras does, with the odd row/column at the bottom/right.

    Forward
        cols = im2col(x)                       (N*OH*OW, KH*KW*C): one row per output pixel
        z    = cols @ kernel.reshape(-1, F) + bias   (N*OH*OW, F), which *is* (N, OH, OW, F)

    Backward, with dz = dL/dz reshaped to (N*OH*OW, F). It is the Dense backward applied to the
    rows of cols, followed by col2im:
        dL/dkernel = cols.T @ dz               (KH*KW*C, F), reshaped to (KH, KW, C, F)
        dL/dbias   = dz.sum(axis=0)            (F,), computed as ones @ dz: the same column sums,
                                               as a matrix product, which BLAS does faster
        dL/dcols   = dz @ kernel.reshape(-1, F).T
        dL/dx      = col2im(dL/dcols)          every pixel sums the gradients of all its copies

    ``activation="relu"`` (or any name in ``layers/activations.py``) applies that layer to z;
    backward first takes the gradient back through it.

    ``kernel_initializer`` and ``bias_initializer`` name how the parameters start
    (``initializers.py``): Keras's "glorot_uniform" and "zeros" by default, "torch_default" for
    PyTorch's ``nn.Conv2d`` (both uniform in ±1/sqrt(KH*KW*C)).

    What ``fit`` runs. With ``compile(fast=False)`` this code runs as written. By default, on the
    CPU, a Conv2D followed by ReLU and MaxPool2D runs as one fused block instead
    (``layers/fused.py``: im2col or Winograd, then bias, ReLU and pooling in one pass);
    ``tests/test_fast_paths.py::test_fused_block_equals_the_three_layers`` proves the two equal.
    Followed by BatchNormalization, ReLU and MaxPool2D, it runs as ``ConvBatchNormReLUMaxPool``
    (``tests/test_fused_batchnorm.py``); as the first step with parameters and fused with
    nothing, as ``Conv2DWithoutDx``, which skips dL/dx.
    The im2col and col2im below are Numba kernels beside their NumPy references
    (``kernels/im2col.py``).
    """

    per_sample = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None, seed=None):
        super().__init__(name=name, seed=seed)
        self.filters = checks.integer(filters, "filters", minimum=1)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.padding = check_padding(padding)
        self.activation = activations.get(activation)
        initializers.get(kernel_initializer)            # an unknown name fails here, not in build
        initializers.get(bias_initializer)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def _geometry(self, input_shape):
        return window_geometry(self.name, "Conv2D", input_shape, self.kernel_size, self.strides, self.padding)

    def output_shape(self, input_shape):
        _, (oh, ow) = self._geometry(input_shape)
        return (oh, ow, self.filters)

    def build(self, input_shape, dtype="float32", rng=None):
        self.pad, self.out_hw = self._geometry(input_shape)   # (PT, PB, PL, PR) and (OH, OW)
        super().build(input_shape, dtype)
        kh, kw = self.kernel_size
        fan_in = kh * kw * input_shape[2]              # the inputs each output pixel sums
        rng = self._rng(rng)
        self.params = {
            "kernel": initializers.get(self.kernel_initializer)(
                (kh, kw, input_shape[2], self.filters), rng, self.dtype, fan_in=fan_in),
            "bias": initializers.get(self.bias_initializer)((self.filters,), rng, self.dtype, fan_in=fan_in),
        }
        if self.activation is not None:
            self.activation.build(self.output_shape(input_shape), self.dtype)

    def forward(self, x, training=False):
        self._prepare(x)
        kh, kw = self.kernel_size
        self.x_shape = x.shape
        self.cols = im2col(x, kh, kw, self.strides, self.pad)
        z = self.cols @ self.params["kernel"].reshape(-1, self.filters)
        z += self.params["bias"]
        z = z.reshape(x.shape[0], *self.out_hw, self.filters)
        return z if self.activation is None else self.activation.forward(z, training)

    def backward(self, dout):
        dz = dout if self.activation is None else self.activation.backward(dout)
        kernel = self.params["kernel"]
        dz = dz.reshape(-1, self.filters)
        self.grads["kernel"] = (self.cols.T @ dz).reshape(kernel.shape)
        self.grads["bias"] = get_array_module(dz).ones(dz.shape[0], dtype=dz.dtype) @ dz
        dcols = dz @ kernel.reshape(-1, self.filters).T
        kh, kw = self.kernel_size
        return col2im(dcols, self.x_shape, kh, kw, self.strides, self.pad)

    def get_config(self):
        return {"name": self.name, "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": activations.config_of(self.activation),
                "kernel_initializer": self.kernel_initializer, "bias_initializer": self.bias_initializer}

