"""Pooling: keep the largest value of each window (MaxPool2D), or its average (AveragePooling2D),
or the average of each channel over the whole image (GlobalAveragePooling2D)."""

import numpy as np

from .. import checks
from ..backend import get_array_module
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


class AveragePooling2D(Layer):
    """Average pooling over PH×PW windows, channel by channel, as Keras's AveragePooling2D.

    Shapes
        x      (N, H, W, C)
        y      (N, OH, OW, C)   OH = (H + PT + PB - PH) // SH + 1, likewise OW
        count  (OH, OW, 1)      how many pixels of the image each window covers

    ``strides`` defaults to ``pool_size`` (windows side by side, as in Keras). padding="same"
    pads as Conv2D and MaxPool2D do (Keras's split, the odd row or column at the bottom/right),
    and a window that hangs over the edge averages only the pixels inside the image, as Keras
    (TensorFlow's avg_pool) does: the padding is not counted, so count is PH*PW except at the
    edges, and an image of one constant value pools to that value everywhere. (PyTorch's
    AvgPool2d counts the padding unless given count_include_pad=False.) ``AvgPool2D`` is another
    name for this class, as in Keras.

    Forward
        y[n, oh, ow, c] = (sum of x[n, h, w, c] over the window's pixels) / count[oh, ow]
    The sum is taken as im2col_reference takes its windows: for each offset (i, j) in the
    window, the pixels every window has there form one strided slice of the input padded with
    zeros (which add nothing to a sum).

    Backward: y[oh, ow] moves by 1 / count[oh, ow] when any one of its window's pixels moves by 1,
    so each input pixel receives dout / (window size) from every window that contains it:
        dL/dx[n, h, w, c] = sum over the windows (oh, ow) holding (h, w) of dout[n, oh, ow, c] / count[oh, ow]
    With the default strides every pixel is in one window at most: dx is dout / (PH*PW) spread
    evenly over the window. The code is the forward's loop again with the arrows reversed: the same
    strided slices, now added to (+=, so overlapping windows add up), as col2im_reference does.

    What ``fit`` runs: this code, in both modes. It is written with the array module of its input
    (``xp``: NumPy or CuPy), so the same lines run on the GPU.
    """

    per_sample = True

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", name=None):
        super().__init__(name=name)
        self.pool_size = pair(pool_size, "pool_size")
        self.strides = pair(strides if strides is not None else self.pool_size, "strides")
        self.padding = check_padding(padding)

    def _geometry(self, input_shape):
        return window_geometry(self.name, "AveragePooling2D", input_shape, self.pool_size, self.strides,
                               self.padding)

    def output_shape(self, input_shape):
        _, (oh, ow) = self._geometry(input_shape)
        return (oh, ow, input_shape[2])

    def build(self, input_shape, dtype="float32", rng=None):
        self.pad, self.out_hw = self._geometry(input_shape)    # (PT, PB, PL, PR) and (OH, OW)
        self.count = window_counts(input_shape, self.pool_size, self.strides, self.pad, self.out_hw)
        super().build(input_shape, dtype)

    def forward(self, x, training=False):
        self._prepare(x)
        xp = get_array_module(x)
        (ph, pw), (sh, sw), (pt, pb, pl, pr), (oh, ow) = self.pool_size, self.strides, self.pad, self.out_hw
        padded = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        total = xp.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)
        for i in range(ph):
            for j in range(pw):
                total += padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
        return total / xp.asarray(self.count, dtype=x.dtype)

    def backward(self, dout):
        xp = get_array_module(dout)
        (ph, pw), (sh, sw), (pt, pb, pl, pr), (oh, ow) = self.pool_size, self.strides, self.pad, self.out_hw
        n, (h, w, c) = dout.shape[0], self.input_shape
        share = dout / xp.asarray(self.count, dtype=dout.dtype)     # what each pixel of a window gets
        dpadded = xp.zeros((n, h + pt + pb, w + pl + pr, c), dtype=dout.dtype)
        for i in range(ph):
            for j in range(pw):
                dpadded[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] += share
        return xp.ascontiguousarray(dpadded[:, pt:pt + h, pl:pl + w, :])   # the padding's share is dropped

    def get_config(self):
        return {"name": self.name, "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


def window_counts(input_shape, window, stride, pad, out_hw):
    """count (OH, OW, 1): how many pixels of an (H, W) image each window covers, padding not counted.

    Along one axis, window o starts at o*S - P_before and ends KH later; the part inside the image
    runs from max(start, 0) to min(end, H). The count is that length down times that length across.
    """
    lengths = []
    for size, k, s, before, out in zip(input_shape[:2], window, stride, pad[::2], out_hw):
        start = np.arange(out) * s - before
        lengths.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return (lengths[0][:, None] * lengths[1][None, :])[:, :, None].astype(np.float64)


class GlobalAveragePooling2D(Layer):
    """The average of each channel over the whole image, as Keras's GlobalAveragePooling2D.

    Shapes
        x  (N, H, W, C)
        y  (N, C), or (N, 1, 1, C) with keepdims=True

    AveragePooling2D with one window the size of the image. Put before the last Dense in place of
    Flatten, it has C outputs whatever the image's size, and no weights. ``GlobalAvgPool2D`` is
    another name for this class, as in Keras.

    Forward
        y[n, c] = (sum over h, w of x[n, h, w, c]) / (H*W)

    Backward: every pixel of channel c moves y[n, c] by 1 / (H*W), so every pixel receives the
    same share of its channel's gradient:
        dL/dx[n, h, w, c] = dout[n, c] / (H*W)

    What ``fit`` runs: this code, in both modes, on NumPy or CuPy arrays alike.
    """

    per_sample = True

    def __init__(self, keepdims=False, name=None):
        super().__init__(name=name)
        self.keepdims = checks.boolean(keepdims, "keepdims")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: GlobalAveragePooling2D takes images (batch, height, width, "
                             f"channels), got per-sample shape {tuple(input_shape)}; for grayscale images "
                             "add the channel axis with x[..., None].")
        return (1, 1, input_shape[2]) if self.keepdims else (input_shape[2],)

    def build(self, input_shape, dtype="float32", rng=None):
        self.output_shape(input_shape)
        super().build(input_shape, dtype)

    def forward(self, x, training=False):
        self._prepare(x)
        return x.mean(axis=(1, 2), keepdims=self.keepdims)

    def backward(self, dout):
        xp = get_array_module(dout)
        n, (h, w, c) = dout.shape[0], self.input_shape
        share = dout.reshape(n, 1, 1, c) / (h * w)
        return xp.broadcast_to(share, (n, h, w, c)).copy()    # a copy: the caller may write into dx

    def get_config(self):
        return {"name": self.name, "keepdims": self.keepdims}


#: Keras's short names: the same classes under a second name, so a model saves and loads under
#: one name only (an assignment defines no class, so nothing new is registered).
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
