"""Data augmentation layers: RandomRotation and RandomTranslation, active only in training.

Both warp each image by its own random affine transform: ``draw_transforms`` draws one row
T = [a0, a1, a2, b0, b1, b2] per image, which sends output pixel (row r, column c) to the input
point (sx, sy) = (a0*c + a1*r + a2, b0*c + b1*r + b2), and ``kernels/affine.py`` reads the input
there by bilinear interpolation. Read that module for the interpolation, its backward (the
adjoint of a linear map) and the kernels; this one holds what is particular to each layer: which
transform it draws, and Keras's way of giving the range to draw from.
"""

import warnings

import numpy as np

from .. import checks
from ..kernels.affine import affine_sample, affine_sample_backward
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
# Keras's factor arguments: a number f means the range (-f, f), a pair (lo, hi) itself.
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


# ---------------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------------

class _RandomAffine(Layer):
    """What both augmentation layers share: the random generator, the warp, and backward.

    Shapes: x and y are (N, H, W, C). Training: each image gets its own random transform (drawn
    by ``draw_transforms``, kept in ``self.transforms``), then y = affine_sample(x). Inference:
    y = x, the very same array. Backward: the adjoint of the warp (see ``kernels/affine.py``);
    at inference dx = dout.

    A batch split over threads (``tinycnn/parallel.py``): the model's layer draws the whole
    batch's transforms in one thread, as its own forward would, and each thread's copy is given
    the rows of its images (``given``), which its forward uses instead of drawing.
    """

    def __init__(self, fill_value=0.0, seed=None, name=None):
        super().__init__(name=name, seed=seed)
        self.fill_value = checks.number(fill_value, "fill_value")
        self.generator = None
        self.transforms = None
        self.given = None           # (N, 6) transforms drawn for this copy's images, while it runs a share

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
        self.transforms = self.draw_transforms(x.shape[0]) if self.given is None else self.given
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

    Forward, backward and shapes: see :class:`_RandomAffine` and ``kernels/affine.py``.
    """

    def __init__(self, factor, fill_value=0.0, seed=None, name=None):
        super().__init__(fill_value=fill_value, seed=seed, name=name)
        self.lower, self.upper = _range(factor, "factor")
        self.factor = _as_config(factor)
        turns = max(abs(self.lower), abs(self.upper))
        if turns > 1:                 # RandomRotation(10) written for ±10°, as torchvision's degrees
            warnings.warn(f"RandomRotation(factor={factor!r}) rotates by up to {turns:g} full turns "
                          f"({turns * 360:g}°): the factor is a fraction of a full turn, as in Keras. For up "
                          "to ±10°, write RandomRotation(10 / 360).", stacklevel=3)

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

    Forward, backward and shapes: see :class:`_RandomAffine` and ``kernels/affine.py``.
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
