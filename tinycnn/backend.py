"""Where arrays live: NumPy on the CPU, or CuPy on an NVIDIA GPU.

Every layer asks its input which array module to use (``xp = get_array_module(x)``) and then
writes ``xp.exp``, ``xp.zeros`` ... once, for both devices. This is the DeZero idea; there is no
global "GPU mode". Importing this module never imports CuPy: an array can only be a CuPy array
if CuPy was already imported by whoever made it.
"""

import sys

import numpy as np


def get_array_module(x):
    """Return ``cupy`` if ``x`` is a CuPy array, else ``numpy``."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def is_gpu_array(x):
    """True when ``x`` lives on the GPU (is a CuPy array)."""
    return get_array_module(x) is not np


DEVICES = ("cpu", "gpu")


_cupy_with_a_device = None     # the CuPy module that require_cupy found a CUDA device for


def require_cupy():
    """Import CuPy and check that a CUDA device exists, or say exactly what is missing.

    CUDA is asked for its devices once: ``to_device`` calls this for every array it moves, and
    the answer does not change while the process runs. (A failure is not remembered: it raises.)
    """
    global _cupy_with_a_device
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(
            "The GPU backend needs CuPy, which is not installed. Install the wheel that matches "
            'your CUDA version: pip install "tinycnn[gpu]" (CUDA 13, cupy-cuda13x) or '
            "pip install cupy-cuda12x (CUDA 12). Or stay on the CPU: model.to('cpu')."
        ) from err
    if cupy is _cupy_with_a_device:
        return cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # cupy raises CUDARuntimeError when there is no driver
        raise RuntimeError(f"CuPy is installed but found no usable CUDA device ({err}). "
                           "Check the NVIDIA driver with `nvidia-smi`, or use model.to('cpu').") from err
    if count == 0:
        raise RuntimeError("CuPy is installed but there is no CUDA device. Use model.to('cpu').")
    _cupy_with_a_device = cupy
    return cupy


def array_module(device):
    """The array module of ``device``: ``numpy`` for "cpu", ``cupy`` for "gpu"."""
    return require_cupy() if check_device(device) == "gpu" else np


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}; use 'cpu' or 'gpu'.")
    return device


def to_device(x, device):
    """Return ``x`` as a NumPy array (``"cpu"``) or a CuPy array (``"gpu"``)."""
    check_device(device)
    if device == "gpu":
        return require_cupy().asarray(x)
    return to_numpy(x)


def to_numpy(x):
    """A NumPy array, copied from the GPU if ``x`` lives there."""
    if is_gpu_array(x):
        return x.get()
    return x


def device_of(x):
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "gpu" if is_gpu_array(x) else "cpu"
