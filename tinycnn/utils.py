"""Keras's ``utils``: ``to_categorical``, for scripts that train on one-hot labels."""

import numpy as np

from . import checks


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer class labels (N,) -> one-hot rows (N, num_classes), as Keras's ``to_categorical``.

    ``num_classes`` defaults to the largest label + 1. Use the result with
    ``loss="categorical_crossentropy"``; ``y.argmax(axis=1)`` turns it back into labels.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                           or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ValueError(f"to_categorical takes integer class labels of shape (N,), got dtype {y.dtype} and "
                         f"shape {y.shape}.")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"Class labels must be >= 0, got {int(y.min())}.")
    largest = int(y.max()) + 1 if len(y) else 0
    num_classes = largest if num_classes is None else checks.integer(num_classes, "num_classes", minimum=1)
    if largest > num_classes:
        raise ValueError(f"num_classes={num_classes}, but the labels reach {largest - 1}.")
    out = np.zeros((len(y), num_classes), dtype=checks.float_dtype(dtype))
    out[np.arange(len(y)), y] = 1
    return out
