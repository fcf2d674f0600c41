"""tinycnn: a convolutional network library written from scratch, to read and to run.

    from tinycnn import Sequential
    from tinycnn.layers import Conv2D, MaxPool2D, Flatten, Dense

Keras's module names work too, so that a Keras script runs with its imports rewritten:
``tinycnn.layers``, ``tinycnn.models``, ``tinycnn.optimizers``, ``tinycnn.losses``,
``tinycnn.callbacks``, ``tinycnn.utils``, ``tinycnn.datasets``, ``tinycnn.Input`` (see
docs/coming-from-keras.md).

Importing tinycnn loads NumPy and Numba only. Its submodules load when first used (the module's
``__getattr__`` below): matplotlib (``tinycnn.plotting``), requests (``tinycnn.datasets`` when it
downloads) and CuPy (``model.to("gpu")``) only then.
"""

import importlib

__version__ = "0.1.0"

from .model import Sequential  # noqa: E402
from .models import load_model  # noqa: E402

#: The submodules ``tinycnn.<name>`` reaches without an import of its own, as ``keras.<name>`` does.
SUBMODULES = ("layers", "models", "optimizers", "losses", "callbacks", "utils", "datasets", "schedules",
              "initializers", "gradcheck", "plotting")

__all__ = ["Sequential", "load_model", "Input", "__version__", *SUBMODULES]


def __getattr__(name):
    """``tinycnn.datasets`` and the other submodules, imported on first use."""
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Input":
        from .layers.input import Input
        return Input
    raise AttributeError(f"module 'tinycnn' has no attribute {name!r}")
