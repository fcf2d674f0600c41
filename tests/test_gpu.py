"""The GPU backend: the same model trains to the same numbers on both devices, and without a GPU
the library says so clearly instead of quietly staying on the CPU.

Tests marked ``requires_gpu`` need CuPy and a CUDA device and are skipped otherwise, with a
reason that says how to install it. The others run everywhere: they pretend CuPy is missing (or
has no device) by putting a stand-in into ``sys.modules``, which is where ``import cupy`` looks
first.
"""

import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import requires_gpu, seed_model
from tinycnn import Sequential, load_model
from tinycnn.backend import device_of, to_device, to_numpy
from tinycnn.kernels import im2col as conv_kernels
from tinycnn.kernels import pooling as pool_kernels
from tinycnn.kernels.geometry import same_padding
from tinycnn.layers import (AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                            GlobalAveragePooling2D, MaxPool2D, RandomRotation, RandomTranslation)

INSTALL_HINT = 'pip install "tinycnn[gpu]"'


def random_images(n, shape=(28, 28, 1), seed=0):
    """n random float32 images in [0, 1) and random labels 0..9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, size=n)


def train_one_epoch(model, device, x, y):
    model.to(device)
    model.compile("adam")
    history = model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0)
    return history


def all_arrays(model):
    return [a for layer in model.layers for a in (*layer.params.values(), *layer.state.values())]


# ---------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------

@requires_gpu
def test_one_epoch_on_the_gpu_matches_the_cpu():
    """Same seed, same data, same shuffling: only float32 rounding (cuBLAS vs OpenBLAS) differs."""
    x, y = random_images(320)
    cpu, gpu = seed_model(seed=0), seed_model(seed=0)
    h_cpu = train_one_epoch(cpu, "cpu", x, y).history
    h_gpu = train_one_epoch(gpu, "gpu", x, y).history
    assert h_gpu["loss"][0] == pytest.approx(h_cpu["loss"][0], rel=1e-3)
    assert abs(h_gpu["accuracy"][0] - h_cpu["accuracy"][0]) <= 2 / len(x)   # a flip or two
    loss_cpu, _ = cpu.evaluate(x, y)
    loss_gpu, _ = gpu.evaluate(x, y)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-3)
    # no silent fallback: every weight really lives on the GPU
    assert gpu.device == "gpu"
    assert all(device_of(a) == "gpu" for a in all_arrays(gpu))
    assert all(device_of(a) == "gpu" for a in gpu.optimizer.state.values())


@requires_gpu
def test_predict_returns_numpy_and_history_holds_python_floats():
    x, y = random_images(96)
    model = seed_model(seed=1)
    history = train_one_epoch(model, "gpu", x, y)
    probs = model.predict(x)
    assert type(probs) is np.ndarray and probs.shape == (96, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    for key, values in history.history.items():
        assert all(type(v) is float for v in values), (key, values)
    loss, acc = model.evaluate(x, y)
    assert type(loss) is float and type(acc) is float
    assert all(type(w) is np.ndarray for w in model.get_weights())


@requires_gpu
def test_cupy_input_gives_the_same_predictions_as_numpy_input():
    import cupy
    x, _ = random_images(40)
    model = seed_model(seed=2).to("gpu")
    np.testing.assert_allclose(model.predict(cupy.asarray(x)), model.predict(x), rtol=1e-6, atol=1e-7)


@requires_gpu
def test_save_on_the_gpu_load_on_the_cpu_and_back(tmp_path):
    x, y = random_images(64)
    gpu = seed_model(seed=3)
    train_one_epoch(gpu, "gpu", x, y)
    gpu.save(tmp_path / "from_gpu.npz")
    on_cpu = load_model(tmp_path / "from_gpu.npz")
    assert on_cpu.device == "cpu" and all(device_of(a) == "cpu" for a in all_arrays(on_cpu))
    np.testing.assert_allclose(on_cpu.predict(x), gpu.predict(x), rtol=1e-4, atol=1e-6)

    cpu = seed_model(seed=4)
    train_one_epoch(cpu, "cpu", x, y)
    cpu.save(tmp_path / "from_cpu.npz")
    on_gpu = load_model(tmp_path / "from_cpu.npz").to("gpu")
    assert all(device_of(a) == "gpu" for a in all_arrays(on_gpu))
    np.testing.assert_allclose(on_gpu.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-6)


def regularised_model():
    return Sequential([
        RandomRotation(0.1, seed=1),
        RandomTranslation(0.1, 0.1, seed=2),
        Conv2D(8, 3, activation="relu"),
        BatchNormalization(),
        MaxPool2D(2),
        Flatten(),
        Dropout(0.5, seed=3),
        Dense(10, activation="softmax"),
    ], input_shape=(12, 12, 1), seed=0)


@requires_gpu
def test_dropout_batchnorm_and_augmentation_on_the_gpu():
    """Masks and transforms are drawn with NumPy on both devices, so both runs are the same."""
    x, y = random_images(128, shape=(12, 12, 1))
    cpu, gpu = regularised_model(), regularised_model()
    h_cpu = train_one_epoch(cpu, "cpu", x, y).history
    h_gpu = train_one_epoch(gpu, "gpu", x, y).history
    assert h_gpu["loss"][0] == pytest.approx(h_cpu["loss"][0], rel=1e-3)
    # every layer takes and returns GPU arrays, in training and at inference
    for training in (True, False):
        out = to_device(x[:8], "gpu")
        for layer in gpu.layers:
            out = layer.forward(out, training=training)
            assert device_of(out) == "gpu", (layer.name, training)
        dout = out
        for layer in reversed(gpu.layers):
            dout = layer.backward(dout)
            assert device_of(dout) == "gpu", (layer.name, training)


@requires_gpu
def test_the_optimizer_state_moves_with_the_model():
    x, y = random_images(64)
    model = seed_model(seed=5)
    train_one_epoch(model, "gpu", x, y)
    model.to("cpu")
    assert all(device_of(a) == "cpu" for a in [*all_arrays(model), *model.optimizer.state.values()])
    model.fit(x, y, epochs=1, verbose=0)             # carries on, on the CPU
    model.to("gpu")
    assert all(device_of(a) == "gpu" for a in [*all_arrays(model), *model.optimizer.state.values()])
    model.fit(x, y, epochs=1, verbose=0)             # and back on the GPU


POOL_CASES = [
    # (N, H, W, C), (PH, PW), (SH, SW), padding
    ((2, 7, 6, 3), (3, 3), (1, 1), "valid"),        # overlapping windows: sums
    ((3, 9, 7, 2), (3, 3), (2, 2), "same"),
    ((2, 6, 9, 4), (2, 5), (1, 2), "same"),
    ((4, 26, 26, 32), (2, 2), (2, 2), "valid"),     # the seed model's first pooling
]


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", POOL_CASES)
def test_both_cuda_maxpool_backwards_equal_the_reference(rng, shape, k, s, padding, dtype):
    """The gather (one thread per input pixel) adds in the CPU's order: equal to Numba exactly."""
    from tinycnn.kernels import cuda
    pad = (0, 0, 0, 0)
    if padding == "same":
        pad = same_padding(shape[1], k[0], s[0]) + same_padding(shape[2], k[1], s[1])
    x = rng.standard_normal(shape).astype(dtype)
    _, argmax = pool_kernels.maxpool_forward_reference(x, *k, s, pad)
    dout = rng.standard_normal(argmax.shape).astype(dtype)
    expected = pool_kernels.maxpool_backward(dout, argmax, shape, *k, s, pad)   # Numba, on the CPU
    d_dout, d_argmax = to_device(dout, "gpu"), to_device(argmax, "gpu")
    gathered = cuda.maxpool_backward(d_dout, d_argmax, shape, k, s, pad)
    np.testing.assert_array_equal(to_numpy(gathered), expected)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", POOL_CASES)
def test_average_pooling_on_the_gpu_equals_the_cpu(rng, shape, k, s, padding, dtype):
    """The same NumPy-or-CuPy lines on both devices, forward and backward; GlobalAveragePooling2D
    too. Sums may be added in another order on the GPU, so equal up to rounding."""
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    x = rng.standard_normal(shape).astype(dtype)
    for make in (lambda: AveragePooling2D(k, strides=s, padding=padding), GlobalAveragePooling2D):
        cpu, gpu = make(), make().to("gpu")
        y_cpu, y_gpu = cpu.forward(x), gpu.forward(to_device(x, "gpu"))
        assert device_of(y_gpu) == "gpu"
        np.testing.assert_allclose(to_numpy(y_gpu), y_cpu, **tol)
        dout = rng.standard_normal(y_cpu.shape).astype(dtype)
        dx_gpu = gpu.backward(to_device(dout, "gpu"))
        assert device_of(dx_gpu) == "gpu" and dx_gpu.dtype == dtype
        np.testing.assert_allclose(to_numpy(dx_gpu), cpu.backward(dout), **tol)


@requires_gpu
def test_kernels_are_compiled_once():
    from tinycnn.kernels import cuda
    x = to_device(np.ones((2, 5, 5, 3), dtype=np.float32), "gpu")
    conv_kernels.im2col(x, 3, 3, (1, 1), (0, 0, 0, 0))
    compiled = cuda.kernel.cache_info().currsize
    conv_kernels.im2col(x, 3, 3, (1, 1), (0, 0, 0, 0))
    conv_kernels.im2col(x[:1], 2, 2, (1, 1), (0, 0, 0, 0))
    assert cuda.kernel.cache_info().currsize == compiled
    assert cuda.kernel("im2col", np.dtype(np.float32)) is cuda.kernel("im2col", np.dtype(np.float32))


# ---------------------------------------------------------------------------------------------
# Anywhere: clear errors, no silent fallback
# ---------------------------------------------------------------------------------------------

def assert_still_on_the_cpu(model):
    assert model.device == "cpu"
    assert all(type(a) is np.ndarray for a in all_arrays(model))
    assert model.predict(np.zeros((2, 28, 28, 1), dtype=np.float32)).shape == (2, 10)


def test_to_gpu_without_cupy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # now `import cupy` raises ImportError
    model = seed_model()
    with pytest.raises(RuntimeError, match=re.escape(INSTALL_HINT)):
        model.to("gpu")
    assert_still_on_the_cpu(model)
    with pytest.raises(RuntimeError, match=re.escape(INSTALL_HINT)):
        model.layers[0].to("gpu")                         # a single layer, too
    from tinycnn.layers import Dense, Flatten
    for layer in (Dense(3), Flatten()):                   # unbuilt, or without parameters
        with pytest.raises(RuntimeError, match=re.escape(INSTALL_HINT)):
            layer.to("gpu")
        assert layer.device == "cpu"
    with pytest.raises(RuntimeError, match=re.escape(INSTALL_HINT)):
        to_device(np.zeros(3), "gpu")


def fake_cupy(get_device_count):
    """A stand-in for a CuPy that is installed but finds no usable CUDA device."""
    cupy = types.ModuleType("cupy")
    cupy.ndarray = type("ndarray", (), {})               # no array is ever one of these
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


def test_cupy_without_a_driver_says_so(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(no_driver))
    model = seed_model()
    with pytest.raises(RuntimeError, match="no usable CUDA device.*nvidia-smi"):
        model.to("gpu")
    assert_still_on_the_cpu(model)


def test_cupy_with_zero_devices_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(lambda: 0))
    model = seed_model()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        model.to("gpu")
    assert_still_on_the_cpu(model)


@pytest.mark.parametrize("device", ["tpu", "cuda", "GPU", None])
def test_an_unknown_device_is_a_value_error(device):
    model = seed_model()
    with pytest.raises(ValueError, match="Unknown device"):
        model.to(device)
    assert_still_on_the_cpu(model)
    with pytest.raises(ValueError, match="Unknown device"):
        to_device(np.zeros(3), device)


def test_importing_and_training_on_the_cpu_never_imports_cupy():
    """CuPy and the CUDA kernels load only when a model is moved to the GPU."""
    code = (
        "import sys, numpy as np\n"
        "import tinycnn\n"
        "from tinycnn import Sequential\n"
        "from tinycnn.layers import Conv2D, MaxPool2D, Flatten, Dense\n"
        "m = Sequential([Conv2D(2, 3), MaxPool2D(2), Flatten(), Dense(3)], input_shape=(6, 6, 1))\n"
        "m.compile('adam')\n"
        "m.fit(np.zeros((4, 6, 6, 1), 'float32'), np.zeros(4, int), verbose=0)\n"
        "assert 'cupy' not in sys.modules, 'cupy was imported'\n"
        "assert 'tinycnn.kernels.cuda' not in sys.modules, 'the CUDA kernels were imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_cuda_module_imports_without_cupy():
    """Its sources can be read (and compiled, below) on a machine with no GPU."""
    from tinycnn.kernels import cuda
    assert cuda.source("im2col", np.float32).startswith("typedef float T;")
    assert cuda.source("col2im", np.float64).startswith("typedef double T;")
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda.source("im2col", np.float16)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA compiler) is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cuda_sources_compile_with_nvcc(tmp_path, dtype):
    """Only a compile test: nvcc accepts the CUDA C that CuPy compiles on first use, on a machine
    without a GPU. It runs nothing, so it cannot see a wrong index; the kernels' index arithmetic
    is run on the CPU by test_cuda_on_the_cpu.py, and on a GPU by the requires_gpu tests here."""
    from tinycnn.kernels import cuda
    for name in cuda.SOURCES:
        path = tmp_path / f"{name}.cu"
        path.write_text(cuda.source(name, dtype))
        ptx = path.with_suffix(".ptx")
        result = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", str(path), "-o", str(ptx)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{name}:\n{result.stderr}"
        assert f".entry {name}" in ptx.read_text()
