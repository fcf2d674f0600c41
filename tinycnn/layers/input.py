"""Input and InputLayer: the shape of one sample, given at the head of a model, as Keras 3 writes it.

    Sequential([Input(shape=(28, 28, 1)), Conv2D(32, 3, activation="relu"), ...])

Neither is a layer that computes anything: ``Sequential`` reads the shape (and dtype) and builds
the model for it, and keeps no step for it. The Keras 2 spellings, ``input_shape=`` on the first
layer and ``Sequential(input_shape=...)``, do the same.
"""

from .. import checks


class InputLayer:
    """The shape of one sample (no batch axis), and optionally the dtype, for ``Sequential``.

    ``shape`` is Keras 3's name, ``input_shape`` Keras 2's; ``batch_size`` is accepted and ignored
    (a tinycnn model takes any batch size).
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, input_shape=None, name=None):
        if (shape is None) == (input_shape is None):
            raise ValueError("InputLayer needs the shape of one sample: InputLayer(shape=(28, 28, 1)).")
        self.shape = checks.shape(shape if shape is not None else input_shape, "shape")
        self.dtype = None if dtype is None else checks.float_dtype(dtype, "dtype")
        self.name = name

    def __repr__(self):
        return f"InputLayer(shape={self.shape})"


def Input(shape=None, batch_size=None, dtype=None, name=None):      # noqa: N802 -- Keras's name
    """Keras's ``Input(shape=...)``: an :class:`InputLayer` to put first in ``Sequential([...])``."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, name=name)
