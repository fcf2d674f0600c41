"""tinycnn: a convolutional network library written from scratch, to read and to run.

    from tinycnn import Sequential
    from tinycnn.layers import Conv2D, MaxPool2D, Flatten, Dense

Importing tinycnn loads NumPy and Numba only; matplotlib (``tinycnn.plotting``), requests
(``tinycnn.datasets``) and CuPy (``model.to("gpu")``) load when they are used.
"""

__version__ = "0.1.0"

from .model import Sequential  # noqa: E402
from .serialization import load_model  # noqa: E402

__all__ = ["Sequential", "load_model", "__version__"]
