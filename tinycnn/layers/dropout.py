"""Dropout: in training, zero a random fraction of the units and scale up the rest."""

import numpy as np

from .. import checks
from ..backend import get_array_module, to_device, to_numpy
from .base import Layer


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014), as Keras and PyTorch implement it.

    Shapes: x and y have any shape, the same one.

    Training (``training=True``): every unit is kept with probability 1 - rate, independently,
    and the kept ones are divided by 1 - rate:
        mask ~ Bernoulli(1 - rate), same shape as x (True = keep)
        y    = x * mask / (1 - rate)
    so E[y] = x and nothing needs rescaling at inference, where the layer is the identity.
    A new mask is drawn for every batch.

    Backward: y is x times a constant (the mask over 1 - rate), so dx = dout * mask / (1 - rate):
    a dropped unit passes no gradient back. At inference dx = dout.

    Random numbers come from a ``numpy.random.Generator`` fixed at build time: the layer's own
    ``seed`` if given, otherwise the model's generator, so a seeded model drops the same units
    on every run. Masks are drawn with NumPy even for CuPy input (then copied to the GPU), so
    the CPU and the GPU drop the same units.

    Holding the mask still (for a gradient check): set ``layer.fixed_mask`` to a boolean array
    of the input's shape; while it is not None, training uses it instead of drawing a new mask.
    """

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name=name, seed=seed)
        self.rate = checks.number(rate, "rate (the fraction of units to drop)", 0.0, 1.0, high_open=True)
        self.fixed_mask = None
        self.generator = None

    def build(self, input_shape, dtype="float32", rng=None):
        super().build(input_shape, dtype)
        self.generator = self._rng(rng)

    def draw_mask(self, shape):
        """A boolean NumPy array of ``shape``: True (keep) with probability 1 - rate."""
        if self.fixed_mask is not None:
            if tuple(self.fixed_mask.shape) != tuple(shape):
                raise ValueError(f"{self.name}: fixed_mask has shape {tuple(self.fixed_mask.shape)} "
                                 f"but the input has shape {tuple(shape)}.")
            return np.asarray(to_numpy(self.fixed_mask), dtype=bool)
        return self.generator.random(shape) >= self.rate

    def forward(self, x, training=False):
        self._prepare(x)
        if not training or self.rate == 0.0:
            self.scale = None
            return x
        xp = get_array_module(x)
        mask = self.draw_mask(x.shape)
        if xp is not np:
            mask = to_device(mask, "gpu")
        # mask / (1 - rate) in x's dtype: what each unit is multiplied by, kept for backward
        self.scale = mask.astype(x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self.scale

    def backward(self, dout):
        if self.scale is None:
            return dout
        return dout * self.scale

    def get_config(self):
        seed = self.seed if isinstance(self.seed, (int, np.integer)) else None
        return {"name": self.name, "rate": self.rate, "seed": None if seed is None else int(seed)}
