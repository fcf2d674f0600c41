"""The contract every layer keeps.

A layer is a small object with two methods:

    forward(x, training=False) -> y     computes the output and remembers what backward needs;
    backward(dout) -> dx                given dL/dy, returns dL/dx and fills ``self.grads``.

Parameters live in ``self.params`` (a dict of arrays); ``backward`` fills ``self.grads`` with the
same keys. Parameters are created on the first ``forward`` (or by ``build``), from the shape of
one sample and in the input's floating dtype, so float64 input gives float64 parameters -- which is
what the gradient checks need. There is no autograd graph: the chain rule is the order in which
``Sequential`` calls ``backward``.
"""

import re

import numpy as np

from .. import checks
from ..backend import check_device, device_of, is_gpu_array, require_cupy, to_device



def _snake_case(name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class Layer:
    """Base class: names, building on first use, shape and dtype checks, parameter counting."""

    def __init__(self, name=None, seed=None):
        self.name = checks.text(name, "name") if name is not None else _snake_case(type(self).__name__)
        self.seed = checks.seed(seed)         # int or numpy Generator for initialisation; None: the model's
        self.params = {}          # trainable arrays, updated by the optimizer
        self.grads = {}           # dL/d(param), same keys as params, filled by backward
        self.state = {}           # non-trainable arrays saved with the model (e.g. moving averages)
        self.input_shape = None   # shape of one sample, set by build
        self.dtype = None
        self.device = "cpu"       # where params live: "cpu" (NumPy) or "gpu" (CuPy); see to()

    # -- building ---------------------------------------------------------------------------
    @property
    def built(self):
        return self.input_shape is not None

    def build(self, input_shape, dtype=np.float32, rng=None):
        """Fix the per-sample input shape and dtype; layers with weights create them here."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)

    def _rng(self, rng):
        """The generator to initialise from: the layer's own seed wins over the model's."""
        if self.seed is not None or rng is None:
            return np.random.default_rng(self.seed)
        return rng

    def output_shape(self, input_shape):
        """Per-sample output shape for a per-sample input shape (no batch axis)."""
        return tuple(input_shape)

    def _prepare(self, x):
        """Build on first use, then check that ``x`` matches what the layer was built for."""
        if not self.built:
            if x.dtype not in (np.float32, np.float64):
                raise TypeError(f"{self.name}: input has dtype {x.dtype}; layers take float32 or "
                                "float64 arrays (convert with x.astype('float32')).")
            self.build(x.shape[1:], x.dtype)
            if is_gpu_array(x) or self.device == "gpu":   # keep the weights beside the data
                self.to("gpu")
        if device_of(x) != self.device:
            raise TypeError(f"{self.name}: the layer is on the {self.device.upper()} but its input is a "
                            f"{'CuPy' if is_gpu_array(x) else 'NumPy'} array; move one of them "
                            f"(layer.to('{device_of(x)}'), or model.to(...) for a whole model).")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected input of shape (batch, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}.")
        elif x.dtype != self.dtype:
            raise TypeError(f"{self.name}: built for {self.dtype} but got {x.dtype}; "
                            f"convert the input with x.astype('{self.dtype}').")

    # -- the two methods every layer implements ----------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    # -- bookkeeping ------------------------------------------------------------------------
    def count_params(self):
        return int(sum(p.size for p in self.params.values()) + sum(s.size for s in self.state.values()))

    def get_config(self):
        """The constructor arguments that rebuild this layer (saved as JSON by ``save``)."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def to(self, device):
        """Move this layer to ``"cpu"`` or ``"gpu"``, parameters and all; returns the layer.

        An unbuilt layer remembers the device and creates its parameters there. Asking for the
        GPU without CuPy or without a CUDA device raises at once: there is no silent fallback.
        """
        check_device(device)
        if device == "gpu":
            require_cupy()
        self.device = device
        activation = getattr(self, "activation", None)
        if activation is not None:
            activation.to(device)
        self.params = {k: to_device(v, device) for k, v in self.params.items()}
        self.state = {k: to_device(v, device) for k, v in self.state.items()}
        self.grads = {}
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"
