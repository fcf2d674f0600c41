"""Bias + ReLU + max-pool in one pass: what follows a convolution's matrix product, fused.

The Keras MNIST CNN's convolutions are each followed by ReLU and a 2×2 max-pool. Done one layer at a
time, that is four passes over the convolution's output ``z`` (N, H, W, C), the largest array of
the step: add the bias, ReLU, pool forward; then in backward pool backward, ReLU backward, and a
sum for the bias gradient. Each pass reads or writes megabytes to do one addition or comparison
per number. The fused kernels make one pass each way.

Notation: as in :mod:`.pooling` (N, H, W, C the convolution's output; PH, PW, SH, SW, PT, PL the
pool's window, strides and padding; OH, OW the pooled size).

Forward
    y, argmax = maxpool(relu(z + bias))
Because ``bias`` is the same for every pixel of a channel, and ReLU never changes which value
is largest, the kernel scans each window of ``z + bias`` once (adding the bias in a register, not
in memory), keeps the first maximum in reading order and its position, and writes only the
pooled ``y = max(that maximum, 0)``: a quarter of the numbers for a 2×2 pool. A NaN counts as the
largest value, as it does for the layers (NumPy's argmax), so a NaN reaches y as it would
through the three layers.

Backward, given dL/dy (N, OH, OW, C):
    dz      = relu'(z + bias) * maxpool_backward(dy)      zero except at each window's argmax
    dbias   = dz summed over N, H, W
A window whose maximum is not positive gave y = 0 through ReLU's flat part, so its gradient is 0;
one whose maximum is positive sends dy to its argmax. So dz needs only ``y`` and ``argmax``, never
``z``: ``dz[argmax] += dy`` where ``y > 0``. The bias gradient is the sum of those same dy.

These give exactly what the three layers give one after another (``*_reference`` below is that
composition, and the tests compare them): the same additions in the same order, so ``y`` and
``dz`` are equal bit for bit; only ``dbias`` is summed in another order. ``argmax`` agrees
wherever y > 0; in a window that ReLU zeroed, the layers see only zeros and take the first
pixel, the kernel the largest z, and either way no gradient goes there.
"""

import numpy as np

from .geometry import expect_shape, output_size
from .im2col import col2im_reference, im2col_reference
from .jit import jit
from .pooling import maxpool_backward_reference, maxpool_forward_reference


# ---------------------------------------------------------------------------------------------
# NumPy references: the three layers' own operations, one after another.
# ---------------------------------------------------------------------------------------------

def bias_relu_maxpool_forward_reference(z, bias, ph, pw, stride, pad):
    """z (N, H, W, C), bias (C,) -> y (N, OH, OW, C), argmax (N, OH, OW, C) as in maxpool_forward."""
    a = z + bias                    # Conv2D adds its bias
    a = np.maximum(a, 0)            # ReLU (NaN stays NaN)
    return maxpool_forward_reference(a, ph, pw, stride, pad)


def maxpool_relu_backward_reference(dy, argmax, y, z_shape):
    """dy (N, OH, OW, C) -> dz (N, H, W, C), dbias (C,)."""
    dz = maxpool_backward_reference(dy * (y > 0), argmax, z_shape)   # ReLU passes only y > 0
    return dz, dz.sum(axis=(0, 1, 2))


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@jit()
def _bias_relu_maxpool_forward_numba(z, bias, ph, pw, sh, sw, pt, pl, oh, ow):
    n, h, w, c = z.shape
    y = np.empty((n, oh, ow, c), dtype=z.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int32)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                best, where = y[b, yo, xo], argmax[b, yo, xo]    # this window's C outputs
                first = True
                for i in range(ph):
                    hi = yo * sh + i - pt
                    if hi < 0 or hi >= h:
                        continue
                    for j in range(pw):
                        wi = xo * sw + j - pl
                        if wi < 0 or wi >= w:
                            continue
                        if first:                  # the window's first pixel starts the maximum
                            for ch in range(c):
                                best[ch] = z[b, hi, wi, ch] + bias[ch]
                                where[ch] = hi * w + wi
                            first = False
                            continue
                        for ch in range(c):        # a later one replaces it if larger, or NaN
                            v = z[b, hi, wi, ch] + bias[ch]
                            larger = (v > best[ch]) | ((v != v) & (best[ch] == best[ch]))
                            best[ch] = v if larger else best[ch]     # selects, not branches:
                            where[ch] = hi * w + wi if larger else where[ch]   # vectorised
                for ch in range(c):
                    best[ch] = 0 if best[ch] <= 0 else best[ch]     # ReLU; NaN stays NaN
    return y, argmax


@jit()
def _maxpool_relu_backward_numba(dy, argmax, y, h, w):
    n, oh, ow, c = dy.shape
    dz = np.zeros((n, h * w, c), dtype=dy.dtype)     # pixels numbered h*W + w, as argmax is
    dbias = np.zeros(c, dtype=dy.dtype)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    if y[b, yo, xo, ch] > 0:
                        g = dy[b, yo, xo, ch]
                        dz[b, argmax[b, yo, xo, ch], ch] += g
                        dbias[ch] += g
    return dz.reshape(n, h, w, c), dbias


# ---------------------------------------------------------------------------------------------
# What the fused block calls (CPU only: the GPU keeps the three layers' own kernels)
# ---------------------------------------------------------------------------------------------

def bias_relu_maxpool_forward(z, bias, ph, pw, stride, pad):
    """Same contract as :func:`bias_relu_maxpool_forward_reference`."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = z.shape
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    expect_shape("bias_relu_maxpool_forward", "bias", bias, (c,))
    return _bias_relu_maxpool_forward_numba(np.ascontiguousarray(z), bias, ph, pw, sh, sw, pt, pl, oh, ow)


def maxpool_relu_backward(dy, argmax, y, z_shape):
    """Same contract as :func:`maxpool_relu_backward_reference`."""
    expect_shape("maxpool_relu_backward", "argmax", argmax, dy.shape)
    expect_shape("maxpool_relu_backward", "y", y, dy.shape)
    if dy.shape[0] != z_shape[0] or dy.shape[3] != z_shape[3]:
        raise ValueError(f"maxpool_relu_backward: dy has shape {tuple(dy.shape)}, but z has {tuple(z_shape)}: "
                         "they must agree on the batch and the channels.")
    return _maxpool_relu_backward_numba(np.ascontiguousarray(dy), argmax, y, z_shape[1], z_shape[2])


# ---------------------------------------------------------------------------------------------
# The convolution's whole backward from the pooled gradient, as the three layers compute it: the
# reference that the Winograd block's backward (kernels/winograd.py) is tested against.
# ---------------------------------------------------------------------------------------------

def conv_relu_maxpool_backward_reference(dy, argmax, y, x, kernel, z_hw, stride, pad):
    """The three layers' backward passes one after another: (dkernel, dbias, dx)."""
    kh, kw, c, f = kernel.shape
    dz, dbias = maxpool_relu_backward_reference(dy, argmax, y, (x.shape[0], *z_hw, f))
    dz = dz.reshape(-1, f)
    dkernel = (im2col_reference(x, kh, kw, stride, pad).T @ dz).reshape(kernel.shape)
    dx = col2im_reference(dz @ kernel.reshape(-1, f).T, x.shape, kh, kw, stride, pad)
    return dkernel, dbias, dx
