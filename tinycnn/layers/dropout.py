"""Dropout: in training, zero a random fraction of the units and scale up the rest."""

import math

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

    How the mask is drawn. Each sample's mask depends only on the layer's key, the number of the
    training batch and the sample's index in that batch, so that a batch split over threads
    (``tinycnn/parallel.py``) drops exactly the units the whole batch would, bit for bit:
        key        a 64-bit number drawn at build from the layer's ``seed`` if given, otherwise from
                   the model's generator (so a seeded model drops the same units on every run)
        stream     NumPy's Philox, a counter-based generator keyed by (key, batch number): the
                   batch's random numbers, u_0, u_1, ... (64-bit, read as u / 2^64 in [0, 1))
        sample i   owns the numbers from i * S on, S = U rounded up to a multiple of 4 for U units
                   per sample (Philox makes 4 numbers per counter value, so a thread can start
                   drawing at sample i at once: ``advance``), and keeps unit j if u_{i*S+j} >= rate
    Masks are drawn with NumPy even for CuPy input (then copied to the GPU), so the CPU and the
    GPU drop the same units.

    Who counts the batches. ``self.batches`` is the number of training batches this layer has
    drawn masks for, which is the number of the next one. In one thread each
    ``forward(x, training=True)`` is a batch of its own: its samples are 0 ... N-1, and the
    count goes up by one. When ``fit`` splits a batch, every thread runs a copy of the layer
    (``parallel.replica``) on its share, in chunks, and no copy may count: a copy's count would
    not reach the model's layer, and a batch is not one forward any more. So ``DataParallel``
    sets ``position = (batch number, index of the chunk's first sample)`` on each copy before
    each chunk's forward, which then draws there and counts nothing, and adds one to the model's
    layer's ``batches`` once the whole batch is done.

    What ``fit`` runs: in the fast mode, on the CPU, :class:`~tinycnn.layers.fused.OnePassDropout`,
    which draws the same mask with a kernel (``kernels/dropout.py``) and applies it in the same
    pass; the reference mode runs this code.

    Holding the mask still (for a gradient check): set ``layer.fixed_mask`` to a boolean array
    of the input's shape; while it is not None, training uses it instead of drawing a new mask.
    """

    per_sample = True

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name=name, seed=seed)
        self.rate = checks.number(rate, "rate (the fraction of units to drop)", 0.0, 1.0, high_open=True)
        self.fixed_mask = None
        self.position = None        # (batch, first sample) while a copy runs part of a batch
        # Underscored: neither is configuration, so saving does not compare them with a rebuilt
        # layer's (base._check_rebuilt).
        self._key = None            # the Philox key's first half, drawn at build
        self._batches = 0           # see the property below

    @property
    def batches(self):
        """The training batches this layer has drawn masks for: the next batch's number."""
        return self._batches

    @batches.setter
    def batches(self, value):
        self._batches = value

    def build(self, input_shape, dtype="float32", rng=None):
        super().build(input_shape, dtype)
        self._key = int(self._rng(rng).integers(2 ** 64, dtype=np.uint64))

    def draw_mask(self, shape, batch=0, first_sample=0):
        """A boolean NumPy array of ``shape``: the masks of samples first_sample ... first_sample
        + shape[0] - 1 of training batch ``batch``, True (keep) with probability 1 - rate."""
        if self.fixed_mask is not None:
            if tuple(self.fixed_mask.shape) != tuple(shape):
                raise ValueError(f"{self.name}: fixed_mask has shape {tuple(self.fixed_mask.shape)} "
                                 f"but the input has shape {tuple(shape)}.")
            return np.asarray(to_numpy(self.fixed_mask), dtype=bool)
        units = math.prod(shape[1:])
        blocks = -(-units // 4)                 # counter values per sample: S = 4 * blocks numbers
        stream = np.random.Philox(key=np.array([self._key, batch], dtype=np.uint64))
        stream.advance(first_sample * blocks)
        u = stream.random_raw(shape[0] * 4 * blocks).reshape(shape[0], 4 * blocks)[:, :units]
        return (u >= np.uint64(math.ceil(self.rate * 2 ** 64))).reshape(shape)   # u / 2^64 >= rate

    def next_draw(self):
        """(batch, first sample) of the mask this training forward draws: ``position`` while a
        copy runs part of a batch; else the next batch of its own, from sample 0, which it
        counts (see "Who counts the batches")."""
        if self.position is not None:
            return self.position
        self.batches += 1
        return self.batches - 1, 0

    def forward(self, x, training=False):
        self._prepare(x)
        if not training or self.rate == 0.0:
            self.scale = None
            return x
        mask = self.draw_mask(x.shape, *self.next_draw())
        if get_array_module(x) is not np:
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
