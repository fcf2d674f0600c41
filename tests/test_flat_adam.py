"""Adam over every parameter at once, with the sticky flag (``kernels/adam.py``), on the CPU.

- ``flat_adam_reference``, through ``Adam.step_unless_flagged``, equals ``Adam.update`` (the
  reference mode's NumPy lines, through ``Adam.step``) bit for bit, step after step: weights,
  moments and the step count.
- The flag: a step whose gradient, new value or loss is not finite writes nothing, and neither
  does any later step; the flag names the first batch, and in it the loss before any parameter
  and the first parameter before later ones; the gradients of that step are kept for the message.
- ``Adam.state`` shows the live moments (views into the flat buffers), and a parameter or a
  moment replaced by a new array makes a new ``FlatAdam`` that starts from the values so far.
- The CUDA kernels (``kernels/cuda.py``: ``flat_adam_check``, ``flat_adam_write``,
  ``add_unless_flagged``), compiled for the CPU as ``tests/test_cuda_on_the_cpu.py`` compiles the
  others, equal the NumPy references bit for bit, through the same Python functions that launch
  them on a GPU, and never touch memory outside their arrays. They run one thread after another
  here, so this checks their index arithmetic, the binary search and the flag's logic; what only
  a GPU can show (threads racing to set the flag) is checked by tests/test_gpu_loop.py there.
- nvcc compiles them (``-fmad=false``, as CuPy is told).
"""

import ctypes
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from tinycnn.kernels import adam as adam_kernels
from tinycnn.kernels import cuda
from tinycnn.kernels.adam import BATCH, CLEAN, FlatAdam, new_flag, read_flag
from tinycnn.optimizers import Adam

SHAPES = [(3, 4), (4,), (2, 3, 3, 5), (1,), (300,), (7, 2)]


def fake_layers(rng, dtype, shapes=SHAPES, per_layer=2):
    """Stand-ins for layers: a name, params and grads (what an optimizer reads)."""
    layers = []
    for i in range(0, len(shapes), per_layer):
        params = {f"w{j}": rng.standard_normal(s).astype(dtype) for j, s in enumerate(shapes[i:i + per_layer])}
        layers.append(types.SimpleNamespace(name=f"layer_{i // per_layer}", params=params, grads={}))
    return layers


def copy_layers(layers):
    return [types.SimpleNamespace(name=l.name, params={k: p.copy() for k, p in l.params.items()}, grads={})
            for l in layers]


def set_grads(layers, rng, scale=1.0):
    for layer in layers:
        layer.grads = {k: (rng.standard_normal(p.shape) * scale).astype(p.dtype) for k, p in layer.params.items()}


def same_grads(src, dst):
    for a, b in zip(src, dst):
        b.grads = {k: g.copy() for k, g in a.grads.items()}


def weights(layers):
    return [p.copy() for layer in layers for p in layer.params.values()]


def assert_bitwise_equal(xs, ys):
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), np.abs(a - b).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flat_step_equals_adams_reference_lines_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    ref_layers = fake_layers(rng, dtype)
    flat_layers = copy_layers(ref_layers)
    reference, flat = Adam(3e-2), Adam(3e-2)
    flag = new_flag(np)
    for batch in range(6):
        set_grads(ref_layers, rng, scale=10.0 ** (batch % 3 - 1))       # gradients of several scales
        same_grads(ref_layers, flat_layers)
        reference.step(ref_layers, fast=False)
        flat.step_unless_flagged(flat_layers, np.array(2.5, dtype), flag, batch)
        assert read_flag(flag) is None
        assert_bitwise_equal(weights(flat_layers), weights(ref_layers))
        assert_bitwise_equal([flat.state[k] for k in reference.state], list(reference.state.values()))
        assert flat.iterations == reference.iterations == batch + 1


def test_the_flat_step_equals_the_fused_cpu_kernel_too():
    """The fast mode's Numba kernel is the other fused form of the same lines."""
    rng = np.random.default_rng(1)
    fused_layers = fake_layers(rng, np.float32)
    flat_layers = copy_layers(fused_layers)
    fused, flat = Adam(), Adam()
    flag = new_flag(np)
    for batch in range(4):
        set_grads(fused_layers, rng)
        same_grads(fused_layers, flat_layers)
        fused.step(fused_layers, fast=True)
        flat.step_unless_flagged(flat_layers, np.float32(1.0), flag, batch)
    assert_bitwise_equal(weights(flat_layers), weights(fused_layers))


def bad_run(bad_batch, poison, steps=7, dtype=np.float32):
    """Train fake layers for ``steps`` batches; ``poison(layers, batch)`` spoils batch
    ``bad_batch``'s gradients (or returns a loss that is not finite). Returns the flat run's
    layers, optimizer and flag, and the reference run's weights and state after bad_batch - 1."""
    rng = np.random.default_rng(2)
    ref_layers = fake_layers(rng, dtype)
    flat_layers = copy_layers(ref_layers)
    reference, flat = Adam(1e-2), Adam(1e-2)
    flag = new_flag(np)
    for batch in range(steps):
        set_grads(flat_layers, rng)
        loss = np.array(0.7, dtype)
        if batch == bad_batch:
            loss = poison(flat_layers, loss)
        if batch < bad_batch:
            same_grads(flat_layers, ref_layers)
            reference.step(ref_layers, fast=False)
        flat.step_unless_flagged(flat_layers, loss, flag, batch)
    return flat_layers, flat, flag, weights(ref_layers), reference


def nan_gradient(layer, name, where=0):
    def poison(layers, loss):
        layers[layer].grads[name].reshape(-1)[where] = np.nan
        return loss
    return poison


@pytest.mark.parametrize("bad_batch", [0, 3])
def test_a_nan_gradient_stops_that_step_and_every_later_one(bad_batch):
    flat_layers, flat, flag, before, reference = bad_run(bad_batch, nan_gradient(1, "w1", where=0))
    assert_bitwise_equal(weights(flat_layers), before)          # as after batch bad_batch - 1
    assert_bitwise_equal([flat.state[k] for k in reference.state], list(reference.state.values()))
    assert read_flag(flag) == (bad_batch, 4)                    # layer_1/w1 is parameter 3: what = 4
    # the host takes back the steps the flag stopped (fit does: Trainer._flagged)
    assert flat.iterations == 7 and reference.iterations == bad_batch


def test_the_flag_names_the_first_bad_parameter_of_the_first_bad_batch():
    def two_bad(layers, loss):
        layers[2].grads["w0"][0] = np.inf                       # parameter 4
        layers[0].grads["w1"][1] = -np.inf                      # parameter 1: the first
        return loss
    _, _, flag, _, _ = bad_run(2, two_bad)
    assert read_flag(flag) == (2, 2)
    assert int(flag[0]) == 2 * BATCH + 2


def test_an_update_that_overflows_is_stopped_though_the_gradient_is_finite():
    def huge(layers, loss):
        layers[1].grads["w0"][...] = 1e30                       # g*g overflows float32: v is inf
        return loss
    flat_layers, _, flag, before, _ = bad_run(1, huge)
    assert read_flag(flag) == (1, 3)
    assert_bitwise_equal(weights(flat_layers), before)


@pytest.mark.parametrize("loss", [np.nan, np.inf, -np.inf])
def test_a_loss_that_is_not_finite_stops_the_step_and_is_named_first(loss):
    def bad_loss(layers, _):
        layers[0].grads["w0"][0, 0] = np.nan                    # the parameters are bad too
        return np.array(loss, np.float32)
    flat_layers, _, flag, before, _ = bad_run(4, bad_loss)
    assert read_flag(flag) == (4, 0)
    assert_bitwise_equal(weights(flat_layers), before)


def test_the_gradients_of_the_stopped_step_are_kept_for_the_message():
    rng = np.random.default_rng(3)
    layers = fake_layers(rng, np.float32)
    adam, flag = Adam(), new_flag(np)
    for batch in range(5):
        set_grads(layers, rng)
        if batch == 1:
            layers[1].grads["w1"][0] = np.nan
            kept = {(l.name, k): g.copy() for l in layers for k, g in l.grads.items()}
        adam.step_unless_flagged(layers, np.float32(1.0), flag, batch)
    batch, what = read_flag(flag)
    err = adam.flagged_update(what - 1, layers)
    assert batch == 1 and err.key == ("layer_1", "w1") and "layer_1/w1" in str(err)
    for layer in layers:
        for k, g in layer.grads.items():
            np.testing.assert_array_equal(g, kept[(layer.name, k)])


def test_the_state_shows_the_live_moments_and_survives_replaced_arrays():
    rng = np.random.default_rng(4)
    layers = fake_layers(rng, np.float64)
    twin = copy_layers(layers)
    flat, reference, flag = Adam(), Adam(), new_flag(np)

    def both_step(batch):
        set_grads(layers, rng)
        same_grads(layers, twin)
        flat.step_unless_flagged(layers, 1.0, flag, batch)
        reference.step(twin, fast=False)

    both_step(0)
    first = flat._flat
    both_step(1)
    assert flat._flat is first                                  # the same buffers, step after step
    iterations, slots = flat.get_state()
    assert all(np.array_equal(slots[k], v) for k, v in dict(zip(slots, reference.get_state()[1].values())).items())
    # a parameter replaced by a new array (Layer.to, set_weights of another dtype, a user)
    layers[1].params["w0"] = layers[1].params["w0"].copy()
    both_step(2)
    assert flat._flat is not first
    # the state replaced (load_model's set_state), then a layer's state forgotten (pop)
    flat.set_state(*flat.get_state())
    both_step(3)
    assert_bitwise_equal(weights(layers), weights(twin))
    assert_bitwise_equal([flat.state[k] for k in reference.state], list(reference.state.values()))


def test_the_reference_mode_and_mixed_dtypes_take_the_generic_path():
    """fast=False runs Adam.update's lines through step: nothing flat, the flag untouched."""
    rng = np.random.default_rng(5)
    layers = fake_layers(rng, np.float32)
    adam, flag = Adam(), new_flag(np)
    set_grads(layers, rng)
    adam.step_unless_flagged(layers, np.float32(1.0), flag, 0, fast=False)
    assert adam._flat is None and adam.iterations == 1
    from tinycnn.optimizers import NonFiniteUpdate
    with pytest.raises(NonFiniteUpdate, match="the loss is nan"):
        adam.step_unless_flagged(layers, np.float32(np.nan), flag, 1, fast=False)
    assert int(flag[0]) == CLEAN


def test_the_totals_add_only_what_the_flag_lets_through():
    totals, flag = np.zeros(3), new_flag(np)
    adam_kernels.add_unless_flagged(totals, flag, np.float32(0.5), np.int64(3), 4, batch=0)
    flag[0] = 1 * BATCH + 2                                     # batch 1 went wrong
    adam_kernels.add_unless_flagged(totals, flag, np.float32(np.nan), np.int64(1), 4, batch=1)
    adam_kernels.add_unless_flagged(totals, flag, np.float32(0.25), np.int64(4), 4, batch=2)
    assert totals[0] == 2.0 and totals[1] == 3 and np.isnan(totals[2])


# ---------------------------------------------------------------------------------------------
# The CUDA kernels, compiled for the CPU
# ---------------------------------------------------------------------------------------------

COMPILER = shutil.which("c++") or shutil.which("g++")
needs_a_compiler = pytest.mark.skipif(COMPILER is None, reason="a C++ compiler (c++ or g++) is needed")

#: CUDA's built-ins, for threads that run one after another: atomicMin is then a plain minimum.
PRELUDE = """
#include <cmath>
using std::isfinite;
using std::sqrt;
#define __global__
#define __device__ static
struct tinycnn_dim3 { unsigned int x, y, z; };
static tinycnn_dim3 blockIdx, blockDim, threadIdx, gridDim;
static long long atomicMin(long long* address, long long value)
{
    long long old = *address;
    if (value < old) *address = value;
    return old;
}
"""

GUARD = 64


def signature(name):
    """[(C type, name)] of kernel ``name``'s parameters."""
    params = re.search(rf"__global__ void {name}\((.*?)\)", cuda.STEP_SOURCES[name], re.S).group(1)
    return [tuple(p.strip().rsplit(None, 1)) for p in params.split(",")]


def launcher(name):
    """C++ for ``launch_<name>(grid, block, <the kernel's arguments>)``: every thread in turn."""
    params = signature(name)
    return (f'extern "C" void launch_{name}(unsigned int grid, unsigned int block, '
            f'{", ".join(f"{t} {n}" for t, n in params)}) {{\n'
            f"    gridDim.x = grid; blockDim.x = block;\n"
            f"    for (unsigned int b = 0; b < grid; b++)\n"
            f"        for (unsigned int t = 0; t < block; t++) {{\n"
            f"            blockIdx.x = b; threadIdx.x = t;\n"
            f"            {name}({', '.join(n for _, n in params)});\n"
            f"        }}\n}}\n")


def c_type(c, dtype):
    if "*" in c:
        return ctypes.c_void_p
    return {"long long": ctypes.c_longlong, "int": ctypes.c_int,
            "T": ctypes.c_float if dtype == np.float32 else ctypes.c_double}[c]


def compile_step_kernels(tmp_path_factory):
    """{(name, dtype): ctypes function} for every kernel of cuda.STEP_SOURCES, compiled for the CPU."""
    functions = {}
    for dtype in (np.float32, np.float64):
        for name in cuda.STEP_SOURCES:
            directory = tmp_path_factory.mktemp(f"{name}_{np.dtype(dtype).name}")
            src, lib = directory / "kernel.cpp", directory / "kernel.so"
            src.write_text(PRELUDE + cuda.source(name, dtype) + launcher(name))
            result = subprocess.run([COMPILER, "-shared", "-fPIC", "-O1", "-ffp-contract=off", "-o", str(lib),
                                     str(src)], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            function = getattr(ctypes.CDLL(str(lib)), f"launch_{name}")
            function.argtypes = [ctypes.c_uint, ctypes.c_uint] + [c_type(t, dtype) for t, _ in signature(name)]
            functions[(name, np.dtype(dtype))] = function
    return functions


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_step_kernels(tmp_path_factory)


class GuardedCupy:
    """The part of CuPy that cuda.flat_adam and cuda.add_unless_flagged use, over NumPy: every array
    it makes sits between guard values that no kernel may change."""

    def __init__(self, compiled):
        self.compiled, self.buffers, self.launches = compiled, [], []

    def guarded(self, a, dtype=None):
        a = np.asarray(a, dtype=dtype)
        buffer = np.full(a.nbytes + 2 * GUARD * 8, 0x5A, dtype=np.uint8)
        inner = buffer[GUARD * 8:GUARD * 8 + a.nbytes].view(a.dtype).reshape(a.shape)
        inner[...] = a
        self.buffers.append(buffer)
        return inner

    asarray = guarded

    def RawKernel(self, source, name, options=()):          # noqa: N802 (CuPy's name)
        assert options == cuda.STEP_OPTIONS
        dtype = np.dtype(np.float32 if source.startswith("typedef float T;") else np.float64)
        function = self.compiled[(name, dtype)]

        def launch(grid, block, args):
            c_args = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() for a in args]
            function(grid[0], block[0], *c_args)
            self.launches.append(name)
            for buffer in self.buffers:
                assert (buffer[:GUARD * 8] == 0x5A).all() and (buffer[-GUARD * 8:] == 0x5A).all(), \
                    f"{name} wrote outside an array"
        return launch


@pytest.fixture
def fake_gpu(compiled, monkeypatch):
    fake = GuardedCupy(compiled)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        asarray=fake.asarray, RawKernel=fake.RawKernel, ndarray=type("ndarray", (), {})))
    cuda.kernel.cache_clear()
    yield fake
    cuda.kernel.cache_clear()


def guarded_flat(fake, params):
    """A FlatAdam whose parameters and buffers are all guarded."""
    flat = FlatAdam([fake.guarded(p) for p in params])
    for what in ("m", "v", "g", "g_bad"):
        setattr(flat, what, fake.guarded(getattr(flat, what)))
    return flat


def twin_steps(fake, dtype, shapes, steps, spoil=None, loss_at=None):
    """The same steps through the NumPy reference and through cuda.flat_adam (the kernels on the
    CPU); returns both FlatAdams and flags, step after step compared bit for bit."""
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    numpy_flat, kernel_flat = FlatAdam([p.copy() for p in params]), guarded_flat(fake, params)
    numpy_flag, kernel_flag = new_flag(np), fake.guarded(new_flag(np))
    totals = [np.zeros(3), fake.guarded(np.zeros(3))]
    for batch in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        if spoil is not None and batch == spoil[0]:
            grads[spoil[1]].reshape(-1)[-1] = np.nan
        loss = dtype(np.nan if batch == loss_at else 0.5 + batch)
        alpha = 1e-2 * (1 - 0.999 ** (batch + 1)) ** 0.5 / (1 - 0.9 ** (batch + 1))
        numpy_flat.gather(grads)
        kernel_flat.gather(grads)
        numpy_flat.step(loss, numpy_flag, batch, alpha, 0.9, 0.999, 1e-7)
        cuda.flat_adam(kernel_flat, loss, kernel_flag, batch, alpha, 0.9, 0.999, 1e-7)
        correct = np.int64(batch + 3)
        adam_kernels.add_unless_flagged_reference(totals[0], numpy_flag, loss, correct, 8, batch)
        cuda.add_unless_flagged(totals[1], kernel_flag, loss, correct, 8, batch)
        assert int(kernel_flag[0]) == int(numpy_flag[0]), batch
        assert_bitwise_equal(kernel_flat.params, numpy_flat.params)
        for what in ("m", "v", "g_bad"):
            assert_bitwise_equal([getattr(kernel_flat, what)], [getattr(numpy_flat, what)])
        np.testing.assert_array_equal(totals[1], totals[0])
    return numpy_flag


@needs_a_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [SHAPES, [(1,)], [(257,)], [(1,)] * 9 + [(513,), (2,)]])
def test_the_cuda_kernels_equal_the_reference(fake_gpu, dtype, shapes):
    """Many parameters or one; sizes that need more than one block of 256 threads."""
    assert read_flag(twin_steps(fake_gpu, dtype, shapes, steps=4)) is None
    assert fake_gpu.launches[:3] == ["flat_adam_check", "flat_adam_write", "add_unless_flagged"]


@needs_a_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [(1, 0), (2, 3), (0, 5)])
def test_the_cuda_kernels_stop_as_the_reference_does(fake_gpu, dtype, bad):
    """A NaN in parameter k's gradient at one batch: flag, g_bad and every later step alike."""
    flag = twin_steps(fake_gpu, dtype, SHAPES, steps=5, spoil=bad)
    assert read_flag(flag) == (bad[0], bad[1] + 1)


@needs_a_compiler
def test_the_cuda_kernels_check_the_loss(fake_gpu):
    flag = twin_steps(fake_gpu, np.float32, SHAPES, steps=4, spoil=(2, 1), loss_at=2)
    assert read_flag(flag) == (2, 0)


@needs_a_compiler
def test_the_wrapper_refuses_buffers_the_kernel_would_overrun(fake_gpu):
    flat = guarded_flat(fake_gpu, [np.zeros(5, np.float32), np.zeros(3, np.float32)])
    flat.m = fake_gpu.guarded(np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="m has shape"):
        cuda.flat_adam(flat, np.float32(1.0), fake_gpu.guarded(new_flag(np)), 0, 1e-3, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.parameter_table([np.zeros((4, 4), np.float32)[:, ::2]], [0, 8])
    assert fake_gpu.launches == []


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA compiler) is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_step_kernels_compile_with_nvcc(tmp_path, dtype):
    """As CuPy compiles them: no contraction into fused multiply-adds. Only a compile test."""
    for name in cuda.STEP_SOURCES:
        path = tmp_path / f"{name}.cu"
        path.write_text(cuda.source(name, dtype))
        ptx = path.with_suffix(".ptx")
        result = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", *cuda.STEP_OPTIONS, str(path), "-o", str(ptx)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{name}:\n{result.stderr}"
        text = ptx.read_text()
        assert f".entry {name}" in text
        assert "fma.rn" not in text, f"{name}: a multiply-add was contracted"
        assert ".approx" not in text and "div.full" not in text, f"{name}: an approximate sqrt or division"
