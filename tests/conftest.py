"""Shared test helpers: the seed model, float64 data, and the devices to run on."""

import functools

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D


def seed_model(input_shape=(28, 28, 1), seed=0, dtype="float32"):
    """The classic Keras MNIST CNN, line for line."""
    model = Sequential([
        Conv2D(32, 3, activation="relu"),
        MaxPool2D(2),
        Conv2D(64, 3, activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=seed)
    model.build(input_shape, dtype)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


GPU_SKIP_REASON = ("CuPy with a CUDA device is not available "
                   "(pip install 'tinycnn[gpu]' on a machine with an NVIDIA GPU)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every GPU skip at one place, so ``pytest -ra`` folds them into one line
    ("SKIPPED [31] tests/conftest.py: CuPy ...") instead of one line per test."""
    report = (yield).get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and GPU_SKIP_REASON in report.longrepr[2]:
        report.longrepr = (__file__, None, report.longrepr[2])


@functools.lru_cache(maxsize=None)
def gpu_available():
    """True when CuPy imports and sees at least one CUDA device (asked once per session)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDARuntimeError when there is no driver or device
        return False


requires_gpu = pytest.mark.skipif(not gpu_available(), reason=GPU_SKIP_REASON)


@pytest.fixture(params=["cpu", "gpu"])
def device(request):
    """Run the test once per device: "cpu" always, "gpu" when CuPy has a CUDA device."""
    if request.param == "gpu" and not gpu_available():
        pytest.skip(GPU_SKIP_REASON)
    return request.param
