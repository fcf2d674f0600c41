"""Data augmentation layers: RandomRotation and RandomTranslation, active only in training.

Both are an affine warp of each image, computed the same way: for every *output* pixel, map its
position back to a point of the *input* by the inverse transform, and read the input there by
bilinear interpolation. Mapping backwards (not pushing input pixels forwards) leaves no holes.

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
that runs. Its outer loop is over images, so a parallel loop would give each image's scatter to
one thread, with no races; like tinycnn's other kernels it runs serially beside a multi-threaded
BLAS (see ``tinycnn/kernels/jit.py`` for why). Tests prove that they agree.
"""

import math

import numpy as np
from numba import prange

from .. import checks
from ..backend import get_array_module, to_device, to_numpy
from ..kernels.jit import jit
from .base import Layer


# ---------------------------------------------------------------------------------------------
# The transforms: one row [a0, a1, a2, b0, b1, b2] per image, output pixel -> input point.
# ---------------------------------------------------------------------------------------------

def rotation_transforms(angles, h, w):
    """Rotate each image by ``angles`` (radians) about its centre ((H-1)/2, (W-1)/2).

    Positive angles turn the image counter-clockwise *as displayed* (row 0 at the top), as in
    Keras: a quarter turn equals ``np.rot90`` over the (H, W) axes. With u = c - cx and
    v = r - cy measured from the centre, the output pixel reads the input at
        sx - cx = cos(θ) u - sin(θ) v
        sy - cy = sin(θ) u + cos(θ) v
    e.g. θ = 90°: the pixel right of the centre (u=1, v=0) reads the one below it (sy - cy = 1),
    so what was at the bottom moves to the right: counter-clockwise on screen.
    """
    angles = np.asarray(angles, dtype=np.float64)
    cos, sin = np.cos(angles), np.sin(angles)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    return np.stack([cos, -sin, cx - cos * cx + sin * cy,
                     sin, cos, cy - sin * cx - cos * cy], axis=1)


def translation_transforms(dy, dx):
    """Shift each image down by ``dy`` and right by ``dx`` pixels (fractions allowed; negative
    values shift up / left, as in Keras): the output pixel (r, c) reads the input at (r-dy, c-dx)."""
    dy, dx = np.asarray(dy, dtype=np.float64), np.asarray(dx, dtype=np.float64)
    one, zero = np.ones_like(dy), np.zeros_like(dy)
    return np.stack([one, zero, -dx, zero, one, -dy], axis=1)


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

@jit()
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
    for b in prange(n):
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
    for b in prange(n):                      # an image scatters only into itself: no races
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
    out = _affine_sample_numba(np.ascontiguousarray(to_numpy(x)), t, float(fill_value))
    return out if xp is np else to_device(out, "gpu")


def affine_sample_backward(dout, transforms):
    """dL/dout -> dL/dx. Same contract as :func:`affine_sample_backward_reference`."""
    xp = get_array_module(dout)
    t = np.ascontiguousarray(transforms, dtype=np.float64)
    dx = _affine_sample_backward_numba(np.ascontiguousarray(to_numpy(dout)), t)
    return dx if xp is np else to_device(dx, "gpu")


# ---------------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------------

def _is_number(factor):
    return isinstance(factor, (int, float, np.integer, np.floating)) and not isinstance(factor, bool)


def _as_config(factor):
    """The factor as JSON stores it: a float, or a list [lo, hi]."""
    return float(factor) if _is_number(factor) else [float(f) for f in factor]


def _range(factor, what, limit=None):
    """Keras's factor: a float f means (-f, f); a pair means (lo, hi). Returns (lo, hi) floats."""
    if _is_number(factor):
        factor = checks.number(factor, what)
        if factor < 0:
            raise ValueError(f"{what} as a single number must be >= 0 (it means [-{what}, {what}]), "
                             f"got {factor}.")
        lo, hi = -factor, factor
    else:
        if not isinstance(factor, (tuple, list, np.ndarray)) or len(factor) != 2:
            raise ValueError(f"{what} must be a number or a pair (lower, upper), got {checks.show(factor)}.")
        lo, hi = (checks.number(f, what) for f in factor)
        if lo > hi:
            raise ValueError(f"{what}: the lower bound {lo} is above the upper bound {hi}.")
    if limit is not None and not (-limit <= lo and hi <= limit):
        raise ValueError(f"{what} must lie in [-{limit}, {limit}], got ({lo}, {hi}).")
    return lo, hi


class _RandomAffine(Layer):
    """What both augmentation layers share: the random generator, the warp, and backward.

    Shapes: x and y are (N, H, W, C). Training: each image gets its own random transform (drawn
    by ``draw_transforms``, kept in ``self.transforms``), then y = affine_sample(x). Inference:
    y = x, the very same array. Backward: the adjoint of the warp (see the module docstring);
    at inference dx = dout.
    """

    def __init__(self, fill_value=0.0, seed=None, name=None):
        super().__init__(name=name, seed=seed)
        self.fill_value = checks.number(fill_value, "fill_value")
        self.generator = None
        self.transforms = None

    def build(self, input_shape, dtype="float32", rng=None):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: {type(self).__name__} takes images (batch, height, width, "
                             f"channels), got per-sample shape {tuple(input_shape)}; for grayscale "
                             "images add the channel axis with x[..., None].")
        super().build(input_shape, dtype)
        self.generator = self._rng(rng)

    def draw_transforms(self, n):
        """(n, 6) float64: one random transform per image."""
        raise NotImplementedError

    def forward(self, x, training=False):
        self._prepare(x)
        if not training:
            self.transforms = None
            return x
        self.transforms = self.draw_transforms(x.shape[0])
        return affine_sample(x, self.transforms, self.fill_value)

    def backward(self, dout):
        if self.transforms is None:
            return dout
        return affine_sample_backward(dout, self.transforms)

    def _seed_config(self):
        return int(self.seed) if isinstance(self.seed, (int, np.integer)) else None


class RandomRotation(_RandomAffine):
    """Rotate each image by its own random angle, in training only (Keras's RandomRotation).

    ``factor`` is a fraction of a full turn (2π): a float f draws the angle uniformly from
    [-f*2π, f*2π], a pair (lo, hi) from [lo*2π, hi*2π]. Positive angles turn the image
    counter-clockwise as displayed (row 0 at the top), like Keras; ``factor=(0.25, 0.25)`` is
    always ``np.rot90`` over the (H, W) axes. The rotation is about the image centre
    ((H-1)/2, (W-1)/2). Bilinear interpolation; points outside the input read ``fill_value``
    (Keras's fill_mode="constant"; Keras's default "reflect" is not implemented).

    Forward, backward and shapes: see :class:`_RandomAffine` and the module docstring.
    """

    def __init__(self, factor, fill_value=0.0, seed=None, name=None):
        super().__init__(fill_value=fill_value, seed=seed, name=name)
        self.lower, self.upper = _range(factor, "factor")
        self.factor = _as_config(factor)

    def draw_transforms(self, n):
        angles = self.generator.uniform(self.lower, self.upper, size=n) * (2 * np.pi)
        h, w, _ = self.input_shape
        return rotation_transforms(angles, h, w)

    def get_config(self):
        return {"name": self.name, "factor": self.factor, "fill_value": self.fill_value,
                "seed": self._seed_config()}


class RandomTranslation(_RandomAffine):
    """Shift each image by its own random offset, in training only (Keras's RandomTranslation).

    ``height_factor`` and ``width_factor`` are fractions of the image height and width: a float
    f draws the shift uniformly from [-f*H, f*H] pixels (rows; [-f*W, f*W] columns), a pair
    (lo, hi) from [lo*H, hi*H]. Each must lie in [-1, 1]. Positive shifts move the image down and
    right, negative ones up and left, as in Keras. Shifts are not rounded: a fractional shift
    interpolates bilinearly. Uncovered pixels read ``fill_value`` (fill_mode="constant").

    Forward, backward and shapes: see :class:`_RandomAffine` and the module docstring.
    """

    def __init__(self, height_factor, width_factor, fill_value=0.0, seed=None, name=None):
        super().__init__(fill_value=fill_value, seed=seed, name=name)
        self.height_lower, self.height_upper = _range(height_factor, "height_factor", limit=1.0)
        self.width_lower, self.width_upper = _range(width_factor, "width_factor", limit=1.0)
        self.height_factor = _as_config(height_factor)
        self.width_factor = _as_config(width_factor)

    def draw_transforms(self, n):
        h, w, _ = self.input_shape
        dy = self.generator.uniform(self.height_lower, self.height_upper, size=n) * h
        dx = self.generator.uniform(self.width_lower, self.width_upper, size=n) * w
        return translation_transforms(dy, dx)

    def get_config(self):
        return {"name": self.name, "height_factor": self.height_factor,
                "width_factor": self.width_factor, "fill_value": self.fill_value,
                "seed": self._seed_config()}
