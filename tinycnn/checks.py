"""Checking the arguments of public functions, so that a mistake fails at once and says why.

Every check names the argument, shows the value it got and says what is allowed:

    >>> integer(2.5, "epochs", minimum=0)
    ValueError: epochs must be a whole number >= 0, got 2.5 (a float); a fraction is never rounded.

The rules, the same everywhere:
- NumPy scalars work wherever Python numbers do (``np.int64(32)``, ``np.float32(0.1)``), and are
  returned as Python ``int``/``float`` (a NumPy scalar would not go into JSON, and in NumPy 2
  ``np.float64(0.9) * float32_array`` is float64).
- A float where an integer belongs is accepted only when it is whole (``3.0``); ``2.5`` is an
  error, never truncated to 2.
- ``bool`` is not a number here: ``epochs=True`` is a mistake, not 1.
- Strings, ``None`` (unless the argument allows it) and other types raise ``TypeError``;
  numbers out of range, NaN and infinity raise ``ValueError``.
"""

import math
import numbers
import os

import numpy as np

from .backend import get_array_module


def show(value):
    """The value and its type, as error messages print it: "'0.1' (a str)"."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a {type(value).__name__})"


def _is_real(value):
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


def _bounds(minimum, maximum, low_open=False, high_open=False):
    """'>= 0', '> 0', 'in [0, 1)' ... for the message."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if low_open else '['}{minimum}, {maximum}{')' if high_open else ']'}"
    if minimum is not None:
        return f"{'>' if low_open else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if high_open else '<='} {maximum}"
    return ""


def integer(value, name, minimum=None, maximum=None):
    """``value`` as a Python int, or a clear error. Whole floats (3.0) pass; 2.5 does not."""
    allowed = " ".join(filter(None, ["a whole number", _bounds(minimum, maximum)]))
    if not _is_real(value):
        raise TypeError(f"{name} must be {allowed}, got {show(value)}.")
    if not isinstance(value, (numbers.Integral, np.integer)):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be {allowed}, got {show(value)}; a fraction is never rounded.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}.")
    return value


def number(value, name, minimum=None, maximum=None, low_open=False, high_open=False, alternative=None):
    """``value`` as a finite Python float within the bounds, or a clear error.

    ``low_open``/``high_open`` exclude the bound itself: ``number(x, "rate", 0, 1, high_open=True)``
    allows [0, 1). ``alternative`` names what else the caller accepts, for the message.
    """
    allowed = " ".join(filter(None, ["a finite number", _bounds(minimum, maximum, low_open, high_open)]))
    if alternative:
        allowed += f" or {alternative}"
    if not _is_real(value):
        raise TypeError(f"{name} must be {allowed}, got {show(value)}.")
    value = float(value)
    if (not math.isfinite(value)
            or (minimum is not None and (value <= minimum if low_open else value < minimum))
            or (maximum is not None and (value >= maximum if high_open else value > maximum))):
        raise ValueError(f"{name} must be {allowed}, got {value}.")
    return value


def boolean(value, name):
    """``value`` as a Python bool: True/False (or NumPy's), never a string such as "False"."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {show(value)}.")
    return bool(value)


def choice(value, name, choices):
    """``value`` if it is one of ``choices`` (strings, or ints such as verbose's 0, 1, 2)."""
    for allowed in choices:
        if isinstance(allowed, str) and isinstance(value, str) and value == allowed:
            return allowed
        if isinstance(allowed, int) and _is_real(value) and value == allowed:
            return allowed
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {show(value)}.")


def text(value, name):
    """A non-empty string, such as a name or a path pattern."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string, got {show(value)}.")
    return value


def pair(value, name, minimum=1):
    """An int or a pair of them -> (int, int): ``3`` -> (3, 3), ``(3, 2)`` -> (3, 2)."""
    if _is_real(value):
        value = (value, value)
    if not isinstance(value, (tuple, list, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be a whole number >= {minimum} or a pair of them (height, width), "
                         f"got {show(value)}.")
    return tuple(integer(v, name, minimum=minimum) for v in value)


def shape(value, name):
    """A shape: a tuple or list of whole numbers >= 1, such as (28, 28, 1)."""
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{name} must be a tuple of sizes such as (28, 28, 1), got {show(value)}.")
    return tuple(integer(d, f"{name}[{i}]", minimum=1) for i, d in enumerate(value))


def seed(value, name="seed"):
    """None, a whole number >= 0 or a ``numpy.random.Generator`` (what ``default_rng`` takes)."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    return integer(value, name, minimum=0)


def path(value, name):
    """A file or directory path: a string or ``os.PathLike`` (such as ``pathlib.Path``)."""
    if not isinstance(value, (str, os.PathLike)) or value == "":
        raise TypeError(f"{name} must be a path (a str or pathlib.Path), got {show(value)}.")
    return value


def sha256(value, name="sha256"):
    """A SHA-256 as 64 hexadecimal digits (either case), returned in lower case."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a SHA-256: 64 hexadecimal digits, got {show(value)}.")
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"{name} must be a SHA-256: 64 hexadecimal digits (0-9, a-f), got {value!r} "
                         f"({len(value)} characters). Compute one with: sha256sum FILE")
    return value.lower()


def float_dtype(value, name="dtype"):
    """"float32" or "float64" (a string, NumPy type or dtype), as the NumPy dtype name."""
    try:
        dtype = np.dtype(value).name if value is not None else None
    except TypeError:
        dtype = None
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{name} must be 'float32' or 'float64', got {show(value)}.")
    return dtype


def samples(x, what="x"):
    """A batch of samples for a model: an array of shape (N, ...) with N >= 1, float32 or float64,
    every value finite. Returns it as an array (NumPy or CuPy, as it came)."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{what} must be an array of samples, shape (N, ...), got {show(x)}.")
    xp = get_array_module(x)
    x = xp.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{what} must be an array of samples, shape (N, ...), got a single value "
                         f"{show(x.item() if x.size == 1 else x)}.")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {x.shape}); pass at least one sample.")
    if x.dtype not in (np.float32, np.float64):
        hint = " Scale images to [0, 1] first: x.astype('float32') / 255." if x.dtype == np.uint8 else ""
        raise TypeError(f"{what} has dtype {x.dtype}; the model takes float32 or float64 input.{hint}")
    # min and max are finite exactly when every value is (NaN propagates through both);
    # unlike isfinite(x).all(), this allocates nothing the size of x.
    if not (math.isfinite(float(x.min())) and math.isfinite(float(x.max()))):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"{what} contains {bad} NaN or infinite values; clean or impute them first.")
    return x


def sample_shape(x, expected, what="x"):
    """``x`` (N, ...) holds samples of shape ``expected``, or a clear error."""
    if tuple(x.shape[1:]) != tuple(expected):
        hint = ""
        if tuple(x.shape[1:]) + (1,) == tuple(expected):
            hint = " It looks like the channel axis is missing: use x[..., None]."
        raise ValueError(f"{what} has shape {tuple(x.shape)} but the model expects "
                         f"(N, {', '.join(map(str, expected))}).{hint}")
