"""Element-wise activations: ReLU and Softmax.

``Dense(..., activation="relu")`` and ``Conv2D(..., activation="relu")`` are Keras shorthand for
the layer followed by one of these; :func:`get` turns the string into the layer object.
"""

from ..backend import get_array_module
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0), element-wise.

    Shapes: x and y have any shape, the same one.

    Backward: dy/dx is 1 where x > 0 and 0 elsewhere (at exactly 0 we take 0, as PyTorch and
    TensorFlow do), so dx = dout * (x > 0). Gradients flow only through the units that fired.
    """

    def forward(self, x, training=False):
        self._prepare(x)
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class Softmax(Layer):
    """Probabilities over the last axis: y_i = exp(x_i) / sum_j exp(x_j).

    Shapes: x and y are (N, K); each row of y is positive and sums to 1.

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


ACTIVATIONS = {"relu": ReLU, "softmax": Softmax}


def get(activation):
    """``None``/``"linear"`` -> None, ``"relu"`` -> ReLU(), ``"softmax"`` -> Softmax()."""
    if activation is None or activation == "linear":
        return None
    if isinstance(activation, Layer):
        return activation
    try:
        return ACTIVATIONS[activation]()
    except (KeyError, TypeError):
        raise ValueError(f"Unknown activation {activation!r}; use None, 'relu' or 'softmax'.") from None


def name_of(activation):
    """The config string for an activation layer (None when there is none)."""
    for name, cls in ACTIVATIONS.items():
        if type(activation) is cls:
            return name
    return None
