"""Max-pooling forward (with the position of each maximum) and backward.

Notation (channels-last)
------------------------
    N, H, W, C   input batch, height, width, channels
    PH, PW       pool window height and width
    SH, SW       strides
    PT, PB       padding at the top and bottom (with -inf: padding can never be the maximum)
    PL, PR       padding at the left and right
    OH, OW       output size: OH = (H + PT + PB - PH) // SH + 1, and the same for OW

Forward: ``y[n, oh, ow, c]`` is the largest input in its window. We also return ``argmax``, the
flat position ``h * W + w`` in the (unpadded) input where that maximum was found.

Ties: the window is scanned row by row (ph, then pw) and a later value replaces the current
maximum only if it is strictly larger, so the *first* maximum in reading order wins. A NaN counts
as larger than any number, as in NumPy's argmax (and PyTorch's max-pool): the first NaN of a
window is its maximum, so a NaN is never hidden from what follows.

Backward: the maximum is the only input that moved the output, so ``dx`` is zero except at each
argmax, which receives ``dout``. When windows overlap (stride < pool size) one input can be the
maximum of several windows and receives the sum.

On the GPU (``kernels/cuda.py``), the same arithmetic with one CUDA thread per element::

    Numba, on the CPU: a loop nest              CUDA, on the GPU: one thread per element
    ----------------------------------------    ------------------------------------------------
    forward   for b, yo, xo:                    thread t of N*OH*OW*C is output (b, yo, xo, ch):
                for i, j in the window:           for i, j in the window (skipping padding):
                  for ch: keep the first max        keep the first max and its h*W + w
    backward  for b: zero dx[b], then           thread t of N*H*W*C is input pixel (b, h, w, ch):
                for yo, xo, ch:                   for each window containing (h, w): if its
                  dx[b, argmax] += dout             argmax is this pixel, add its dout (a gather:
                                                    no atomics); dx[t] = the sum
"""

import numpy as np

from ..backend import get_array_module
from .geometry import expect_shape, output_size
from .jit import jit


# ---------------------------------------------------------------------------------------------
# NumPy references: read these first.
# ---------------------------------------------------------------------------------------------

def maxpool_forward_reference(x, ph, pw, stride, pad):
    """(N, H, W, C) -> y (N, OH, OW, C), argmax (N, OH, OW, C) of flat input positions h*W + w."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x.shape
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    # windows[..., k] is the k-th pixel of each window in reading order, k = i*PW + j.
    windows = np.stack([padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
                        for i in range(ph) for j in range(pw)], axis=-1)
    k = windows.argmax(axis=-1)                      # first maximum wins, as documented
    y = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    rows = np.arange(oh)[None, :, None, None] * sh + k // pw - pt
    cols = np.arange(ow)[None, None, :, None] * sw + k % pw - pl
    return y, (rows * w + cols).astype(np.int32)


def maxpool_backward_reference(dout, argmax, x_shape):
    """Route each ``dout`` entry to its argmax: dx (N, H, W, C)."""
    n, h, w, c = x_shape
    dx = np.zeros((n, h * w, c), dtype=dout.dtype)
    b = np.arange(n)[:, None, None, None]
    ch = np.arange(c)[None, None, None, :]
    np.add.at(dx, (b, argmax, ch), dout)             # add.at: overlapping windows add up
    return dx.reshape(n, h, w, c)


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@jit()
def _maxpool_forward_numba(x, ph, pw, sh, sw, pt, pl, oh, ow):
    n, h, w, c = x.shape
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int32)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    argmax[b, yo, xo, ch] = -1
                for i in range(ph):
                    hi = yo * sh + i - pt
                    if hi < 0 or hi >= h:
                        continue
                    for j in range(pw):
                        wi = xo * sw + j - pl
                        if wi < 0 or wi >= w:
                            continue
                        for ch in range(c):  # innermost over channels: contiguous memory
                            v = x[b, hi, wi, ch]
                            best = y[b, yo, xo, ch]
                            if argmax[b, yo, xo, ch] < 0 or v > best or (v != v and best == best):
                                y[b, yo, xo, ch] = v
                                argmax[b, yo, xo, ch] = hi * w + wi
    return y, argmax


@jit()
def _maxpool_backward_numba(dout, argmax, h, w):
    n, oh, ow, c = dout.shape
    dx = np.empty((n, h, w, c), dtype=dout.dtype)
    for b in range(n):
        dx[b] = 0                            # zero one image, then scatter into it while it is in cache
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    k = argmax[b, yo, xo, ch]
                    dx[b, k // w, k % w, ch] += dout[b, yo, xo, ch]
    return dx


# ---------------------------------------------------------------------------------------------
# What the layer calls
# ---------------------------------------------------------------------------------------------

def maxpool_forward(x, ph, pw, stride, pad):
    """Same contract as :func:`maxpool_forward_reference`, on the array's device."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x.shape
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    if get_array_module(x) is not np:
        from . import cuda
        return cuda.maxpool_forward(x, ph, pw, stride, pad)
    return _maxpool_forward_numba(np.ascontiguousarray(x), ph, pw, sh, sw, pt, pl, oh, ow)


def maxpool_backward(dout, argmax, x_shape, ph, pw, stride, pad):
    """Same contract as :func:`maxpool_backward_reference`, on the array's device.

    The pool geometry is not needed on the CPU, where each image scatters into its own slice;
    the GPU kernel uses it to gather, one thread per input pixel.
    """
    n, h, w, c = x_shape
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    out_shape = (n, output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr), c)
    expect_shape("maxpool_backward", "dout", dout, out_shape)
    expect_shape("maxpool_backward", "argmax", argmax, out_shape)
    if get_array_module(dout) is not np:
        from . import cuda
        return cuda.maxpool_backward(dout, argmax, x_shape, (ph, pw), stride, pad)
    return _maxpool_backward_numba(np.ascontiguousarray(dout), argmax, h, w)
