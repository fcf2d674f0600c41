"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh and Softmax.

An activation is a layer with no parameters whose output has the shape of its input. Each one is
a subclass of :class:`Activation`, and that is what makes ``Dense(..., activation="relu")`` and
``Conv2D(..., activation="leaky_relu")`` work, Keras's shorthand for the layer followed by the
activation: :func:`get` looks the string up among the registered layer classes (``LAYERS`` in
``layers/base.py``, the same registry ``load_model`` uses), comparing it with each Activation's
class name in lower case, underscores ignored ("leaky_relu" -> LeakyReLU). So an activation you
write yourself is usable as ``activation="..."`` the moment its class is defined.

The backward passes below are the element-wise derivative times ``dout``: for y = f(x) applied
entry by entry, dL/dx = dL/dy * f'(x). Each is proven by ``tests/test_gradients.py``.
"""

import numpy as np

from ..backend import get_array_module
from .base import LAYERS, Layer, _snake_case, from_spec


class Activation(Layer):
    """Base class of the layers usable as ``activation="..."``: no parameters, shape unchanged."""

    per_sample = True


class ReLU(Activation):
    """y = max(x, 0), element-wise.

    Shapes: x and y have any shape, the same one.

    Backward: dy/dx is 1 where x > 0 and 0 elsewhere (at exactly 0 we take 0, as PyTorch and
    TensorFlow do), so dx = dout * (x > 0). Gradients flow only through the units that fired.

    Not-a-number stays one: max(NaN, 0) is NaN, as in NumPy and PyTorch, so a NaN is never
    hidden from the loss; max(-inf, 0) is 0. (``x * (x > 0)`` would turn -inf into NaN.)

    What ``fit`` runs: this code, except that by default, on the CPU, a ReLU between Conv2D and
    MaxPool2D runs inside one fused block (``layers/fused.py``), which
    ``tests/test_fast_paths.py::test_fused_block_equals_the_three_layers`` proves equal;
    ``compile(fast=False)`` runs this code everywhere.
    """

    def forward(self, x, training=False):
        self._prepare(x)
        self.mask = x > 0
        return get_array_module(x).maximum(x, 0)

    def backward(self, dout):
        return dout * self.mask


class LeakyReLU(Activation):
    """y = x where x > 0, alpha * x elsewhere (Keras's LeakyReLU, whose default alpha is 0.3).

    A worked example of an activation with an argument: ``__init__`` stores it, ``get_config``
    returns it (so ``save`` keeps it), and backward uses it.

    Shapes: x and y have any shape, the same one.

    Backward: dy/dx is 1 where x > 0 and alpha elsewhere, so dx = dout * where(x > 0, 1, alpha).
    Unlike ReLU, a unit that does not fire still passes a little gradient back, so it can
    recover.
    """

    def __init__(self, alpha=0.3, name=None):
        super().__init__(name=name)
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        self._prepare(x)
        xp = get_array_module(x)
        self.slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))
        return x * self.slope

    def backward(self, dout):
        return dout * self.slope

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha}


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)), element-wise: any number squashed into (0, 1).

    Shapes: x and y have any shape, the same one.

    Stability: exp(-x) overflows for x below about -710 (float64); the result is still right
    (1 / inf = 0), so we only silence the warning.

    Backward: dy/dx = exp(-x) / (1 + exp(-x))² = y * (1 - y), so dx = dout * y * (1 - y). It is
    at most 1/4 (at x = 0), which is why deep stacks of sigmoids learn slowly.
    """

    def forward(self, x, training=False):
        self._prepare(x)
        with np.errstate(over="ignore"):      # CuPy ignores NumPy's error state: it never warns
            self.y = 1 / (1 + get_array_module(x).exp(-x))
        return self.y

    def backward(self, dout):
        return dout * self.y * (1 - self.y)


class Tanh(Activation):
    """y = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x)), element-wise, into (-1, 1).

    Shapes: x and y have any shape, the same one.

    Backward: dy/dx = 1 - tanh(x)² = 1 - y², so dx = dout * (1 - y²).
    """

    def forward(self, x, training=False):
        self._prepare(x)
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, dout):
        return dout * (1 - self.y * self.y)


class Softmax(Activation):
    """Probabilities over the last axis: y_i = exp(x_i) / sum_j exp(x_j).

    Shapes: x and y have any shape, the same one; the softmax runs along the last axis, so for
    (N, K) each row of y is positive and sums to 1.

    Stability: subtracting the row maximum first changes nothing mathematically (it cancels in
    the ratio) but keeps exp() from overflowing.

    Backward: dy_i/dx_j = y_i * (δ_ij - y_j), so
        dx_j = sum_i dout_i * y_i * (δ_ij - y_j) = y_j * (dout_j - sum_i dout_i * y_i).

    In training, a model whose loss is ``SoftmaxCrossEntropy`` skips this layer and feeds the
    loss the logits instead: the fused gradient (softmax - onehot) / N is exact and stable.
    """

    def forward(self, x, training=False):
        self._prepare(x)
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, dout):
        y = self.y
        return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def _key(name):
    return name.replace("_", "").lower()


def activation_classes():
    """{"relu": ReLU, "leakyrelu": LeakyReLU, ...}: every Activation in the registry, by the key
    :func:`get` compares ("leaky_relu", "LeakyReLU" and "leakyrelu" all mean the same)."""
    return {_key(name): cls for name, cls in LAYERS.items()
            if issubclass(cls, Activation) and cls is not Activation}


def get(activation):
    """The activation layer for ``Dense``'s and ``Conv2D``'s ``activation`` argument.

    ``None`` or ``"linear"`` -> None; a string -> a new layer of that class ("relu" -> ReLU());
    an Activation object -> itself; a saved spec ``{"type": ..., "config": ...}`` (what
    :func:`config_of` writes for an activation with arguments) -> the layer it describes.
    """
    if activation is None or activation == "linear":
        return None
    if isinstance(activation, Activation):
        return activation
    classes = activation_classes()
    if isinstance(activation, dict):
        layer = from_spec(activation)
        if not isinstance(layer, Activation):
            raise ValueError(f"{activation['type']} is a layer but not an Activation.")
        return layer
    if isinstance(activation, str) and _key(activation) in classes:
        return classes[_key(activation)]()
    names = ", ".join(sorted(cls.__name__ for cls in classes.values()))
    raise ValueError(f"Unknown activation {activation!r}; use None, an Activation layer, or the "
                     f"name of one of {names} (any case, underscores optional: 'leaky_relu'). Every "
                     "subclass of tinycnn.layers.activations.Activation you define is added to these.")


def config_of(activation):
    """What a layer's ``get_config`` stores for its activation, so that :func:`get` rebuilds it.

    None stays None. An activation whose config holds nothing but its name is stored as its
    shorthand string ("relu"); one with arguments as ``{"type": "LeakyReLU", "config":
    {"name": ..., "alpha": 0.1}}``, exactly as a model stores a layer, so no argument is lost.
    """
    if activation is None:
        return None
    config = activation.get_config()
    if set(config) <= {"name"} and config.get("name") == _snake_case(type(activation).__name__):
        return type(activation).__name__.lower()
    return {"type": type(activation).__name__, "config": config}
