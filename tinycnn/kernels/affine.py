"""Warping images by an affine transform, with bilinear interpolation, and the warp's backward.

This is the kernel behind the augmentation layers (``layers/augmentation.py``): for every
*output* pixel, map its position back to a point of the *input* by the inverse transform, and read
the input there by bilinear interpolation. Mapping backwards (not pushing input pixels forwards)
leaves no holes.

Notation (channels-last)
------------------------
    N, H, W, C   batch, height, width, channels
    (r, c)       an output pixel: row r (0 at the top, growing downwards), column c
    T            a transform, one row of a (N, 6) float64 array [a0, a1, a2, b0, b1, b2]
                 (Keras's layout, without its two projective terms). It sends output (r, c) to
                 the input point
                     sx = a0*c + a1*r + a2      (a column, fractional)
                     sy = b0*c + b1*r + b2      (a row, fractional)

Bilinear interpolation
----------------------
With x0 = floor(sx), y0 = floor(sy), fx = sx - x0, fy = sy - y0, the output is the weighted
sum of the four pixels around the point:

    out = (1-fy)(1-fx) in[y0, x0] + (1-fy) fx in[y0, x0+1] + fy (1-fx) in[y0+1, x0] + fy fx in[y0+1, x0+1]

A neighbour outside the image reads ``fill_value`` (Keras's fill_mode="constant"), one neighbour
at a time, so an output pixel half over the edge is half image, half fill.

Backward
--------
For fixed transforms, out is *linear* in the input: out = A in, where row (r, c) of A holds
the four bilinear weights. So dL/din = A^T dout, the adjoint: each output pixel scatters its
gradient back to its four source pixels with the same weights (neighbours outside the image
were constants and receive nothing). The fill value contributes no gradient to the input.

Each operation comes twice: a short NumPy version (``*_reference``) to read, and a Numba version
that runs, serially like tinycnn's other kernels (see ``jit.py``). Tests prove that they agree.
CuPy input is warped on the CPU and copied back.
"""

import math

import numpy as np

from ..backend import get_array_module, to_device, to_numpy
from .geometry import expect_shape
from .jit import jit


# ---------------------------------------------------------------------------------------------
# NumPy references: read these first.
# ---------------------------------------------------------------------------------------------

def _corners(transforms, h, w):
    """For every output pixel of every image, its four source pixels and their weights.

    Yields (rows, cols, weight, inside), each (N, H, W), once per corner in the order
    (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1).
    """
    t = np.asarray(transforms, dtype=np.float64)[:, :, None, None]      # (N, 6, 1, 1)
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")        # (H, W) each
    sx = t[:, 0] * c + t[:, 1] * r + t[:, 2]
    sy = t[:, 3] * c + t[:, 4] * r + t[:, 5]
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            rows, cols = y0 + dy, x0 + dx
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            yield rows, cols, wy * wx, inside


def affine_sample_reference(x, transforms, fill_value=0.0):
    """(N, H, W, C) -> (N, H, W, C): image n warped by ``transforms[n]``, bilinear, constant fill."""
    n, h, w, c = x.shape
    out = np.zeros(x.shape, dtype=np.float64)
    b = np.arange(n)[:, None, None]
    for rows, cols, weight, inside in _corners(transforms, h, w):
        values = x[b, rows.clip(0, h - 1), cols.clip(0, w - 1)]          # (N, H, W, C)
        values = np.where(inside[..., None], values, fill_value)
        out += weight[..., None] * values
    return out.astype(x.dtype)


def affine_sample_backward_reference(dout, transforms):
    """The adjoint: dL/dx (N, H, W, C) from dL/dout, scattering each gradient to its sources."""
    n, h, w, c = dout.shape
    dx = np.zeros(dout.shape, dtype=np.float64)
    b = np.broadcast_to(np.arange(n)[:, None, None], (n, h, w))
    for rows, cols, weight, inside in _corners(transforms, h, w):
        # add.at, not +=: several output pixels can read the same source pixel
        np.add.at(dx, (b[inside], rows[inside], cols[inside]), weight[inside][:, None] * dout[inside])
    return dx.astype(dout.dtype)


# ---------------------------------------------------------------------------------------------
# Numba kernels: the same arithmetic, one output pixel at a time.
# ---------------------------------------------------------------------------------------------

@jit(helper=True)
def _source_point(t, r, col):
    """Where output pixel (r, col) reads, for transform row t: the top-left source pixel
    (y0, x0) and the fractions (fy, fx) towards the next row and column."""
    sx = t[0] * col + t[1] * r + t[2]
    sy = t[3] * col + t[4] * r + t[5]
    fx0, fy0 = math.floor(sx), math.floor(sy)
    return int(fy0), int(fx0), sy - fy0, sx - fx0


@jit()
def _affine_sample_numba(x, transforms, fill_value):
    n, h, w, c = x.shape
    out = np.empty_like(x)
    for b in range(n):
        for r in range(h):
            for col in range(w):
                y0, x0, fy, fx = _source_point(transforms[b], r, col)
                w00, w01 = (1 - fy) * (1 - fx), (1 - fy) * fx
                w10, w11 = fy * (1 - fx), fy * fx
                in_y0, in_y1 = 0 <= y0 < h, 0 <= y0 + 1 < h
                in_x0, in_x1 = 0 <= x0 < w, 0 <= x0 + 1 < w
                for ch in range(c):
                    v00 = x[b, y0, x0, ch] if in_y0 and in_x0 else fill_value
                    v01 = x[b, y0, x0 + 1, ch] if in_y0 and in_x1 else fill_value
                    v10 = x[b, y0 + 1, x0, ch] if in_y1 and in_x0 else fill_value
                    v11 = x[b, y0 + 1, x0 + 1, ch] if in_y1 and in_x1 else fill_value
                    out[b, r, col, ch] = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
    return out


@jit()
def _affine_sample_backward_numba(dout, transforms):
    n, h, w, c = dout.shape
    acc = np.zeros((n, h, w, c), dtype=np.float64)
    for b in range(n):                      # an image scatters only into itself: no races
        for r in range(h):
            for col in range(w):
                y0, x0, fy, fx = _source_point(transforms[b], r, col)
                for dy in range(2):
                    yy = y0 + dy
                    if yy < 0 or yy >= h:
                        continue
                    wy = fy if dy == 1 else 1 - fy
                    for dx in range(2):
                        xx = x0 + dx
                        if xx < 0 or xx >= w:
                            continue
                        wgt = wy * (fx if dx == 1 else 1 - fx)
                        for ch in range(c):
                            acc[b, yy, xx, ch] += wgt * dout[b, r, col, ch]
    return acc.astype(dout.dtype)


# ---------------------------------------------------------------------------------------------
# What the layers call. CuPy input is warped on the CPU and copied back.
# ---------------------------------------------------------------------------------------------

def affine_sample(x, transforms, fill_value=0.0):
    """(N, H, W, C) -> (N, H, W, C). Same contract as :func:`affine_sample_reference`."""
    xp = get_array_module(x)
    t = np.ascontiguousarray(transforms, dtype=np.float64)
    expect_shape("affine_sample", "transforms", t, (x.shape[0], 6))
    out = _affine_sample_numba(np.ascontiguousarray(to_numpy(x)), t, float(fill_value))
    return out if xp is np else to_device(out, "gpu")


def affine_sample_backward(dout, transforms):
    """dL/dout -> dL/dx. Same contract as :func:`affine_sample_backward_reference`."""
    xp = get_array_module(dout)
    t = np.ascontiguousarray(transforms, dtype=np.float64)
    expect_shape("affine_sample_backward", "transforms", t, (dout.shape[0], 6))
    dx = _affine_sample_backward_numba(np.ascontiguousarray(to_numpy(dout)), t)
    return dx if xp is np else to_device(dx, "gpu")
