"""The CUDA kernels' index arithmetic, checked on a machine without a GPU.

``tests/test_gpu.py`` runs the CUDA kernels on a GPU when there is one, and otherwise only
compiles their source with nvcc: a kernel that compiles can still read the wrong pixel. Here
each kernel's CUDA C (``kernels/cuda.py``) is compiled for the CPU by the C++ compiler, with a
few lines that stand in for CUDA: ``__global__`` means nothing, and ``blockIdx``, ``blockDim``
and ``threadIdx`` are variables that a launch loop sets for every thread of the grid in turn.
The threads then run one after another instead of all at once, which gives the same result
because each thread writes only its own element (``cuda.py``: no races, no atomics).

``cupy`` is replaced by a stand-in over NumPy whose arrays are surrounded by guard values, and
whose new arrays start as NaN: a thread that reads outside an array reads NaN (and the result
differs from the reference), a thread that writes outside it changes a guard, and an element no
thread writes stays NaN. Every kernel is compared with its NumPy reference (``im2col.py``,
``pooling.py``) on hand-picked and random geometries, through the same Python functions
(``cuda.im2col`` ...) that pick the grid and pass the sizes.

Needs a C++ compiler (``c++`` or ``g++``); skipped without one.
"""

import ctypes
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from tinycnn.kernels import cuda
from tinycnn.kernels import im2col as conv_kernels
from tinycnn.kernels import pooling as pool_kernels
from tinycnn.layers._geometry import paddings

COMPILER = shutil.which("c++") or shutil.which("g++")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="a C++ compiler (c++ or g++) is needed")

#: Stands in for CUDA's built-in variables and qualifiers.
PRELUDE = """
#define __global__
struct tinycnn_dim3 { unsigned int x, y, z; };
static tinycnn_dim3 blockIdx, blockDim, threadIdx, gridDim;
"""

GUARD = 64          # guard elements before and after every array


def launcher(name, source):
    """C++ for ``launch_<name>(grid, block, <the kernel's arguments>)``: every thread in turn."""
    params = re.search(rf'__global__ void {name}\((.*?)\)', source, re.S).group(1)
    names = [re.findall(r"\w+", p)[-1] for p in params.split(",")]
    return (f'extern "C" void launch_{name}(unsigned int grid, unsigned int block, {params}) {{\n'
            f"    gridDim.x = grid; blockDim.x = block;\n"
            f"    for (unsigned int b = 0; b < grid; b++)\n"
            f"        for (unsigned int t = 0; t < block; t++) {{\n"
            f"            blockIdx.x = b; threadIdx.x = t;\n"
            f"            {name}({', '.join(names)});\n"
            f"        }}\n}}\n")


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """Every kernel of cuda.SOURCES compiled for the CPU: {dtype: ctypes library}."""
    libs = {}
    for dtype in (np.float32, np.float64):
        code = PRELUDE + "".join(cuda.source(name, dtype) + launcher(name, cuda.SOURCES[name])
                                 for name in cuda.SOURCES)
        directory = tmp_path_factory.mktemp(np.dtype(dtype).name)
        src, lib = directory / "kernels.cpp", directory / "kernels.so"
        src.write_text(code)
        result = subprocess.run([COMPILER, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        libs[np.dtype(dtype)] = ctypes.CDLL(str(lib))
    return libs


class GuardedArrays:
    """The part of CuPy that cuda.py uses, over NumPy, with a guard around every array."""

    int32 = np.int32

    def __init__(self, libraries):
        self.libraries, self.arrays, self.launches = libraries, [], []

    def _guarded(self, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        fill = np.nan if dtype.kind == "f" else -7777777
        buffer = np.full(size + 2 * GUARD, fill, dtype=dtype)
        self.arrays.append((buffer, size))
        return buffer[GUARD:GUARD + size].reshape(shape)

    def empty(self, shape, dtype):
        return self._guarded(shape, dtype)

    def ascontiguousarray(self, a, dtype=None):
        a = np.asarray(a, dtype=dtype)
        out = self._guarded(a.shape, a.dtype)
        out[...] = a
        return out

    def RawKernel(self, source, name):          # noqa: N802 (CuPy's name)
        dtype = np.dtype(np.float32 if source.startswith("typedef float T;") else np.float64)
        function = getattr(self.libraries[dtype], f"launch_{name}")
        return lambda grid, block, args: self._launch(name, function, grid, block, args)

    def _launch(self, name, function, grid, block, args):
        c_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int64):
                c_args.append(ctypes.c_longlong(int(a)))
            else:
                assert isinstance(a, np.int32), f"{name}: an argument of type {type(a)}"
                c_args.append(ctypes.c_int(int(a)))
        function(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *c_args)
        self.launches.append((name, grid[0] * block[0]))
        for buffer, size in self.arrays:
            for guard in (buffer[:GUARD], buffer[GUARD + size:]):
                assert np.array_equal(guard, np.full_like(guard, guard[0]), equal_nan=True) and (
                    np.isnan(guard[0]) or guard[0] == -7777777), f"{name} wrote outside an array"


@pytest.fixture
def gpu(libraries, monkeypatch):
    """``cuda``'s functions, running on the CPU through GuardedArrays."""
    fake = GuardedArrays(libraries)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        int32=np.int32, empty=fake.empty, ascontiguousarray=fake.ascontiguousarray, RawKernel=fake.RawKernel,
        ndarray=type("ndarray", (), {})))           # no NumPy array is a CuPy one: the CPU kernels stay
    cuda.kernel.cache_clear()
    yield fake
    cuda.kernel.cache_clear()               # no CPU stand-in left for a real GPU test to find


CASES = [
    # (N, H, W, C), (KH, KW), (SH, SW), padding
    ((2, 7, 6, 3), (3, 3), (1, 1), "valid"),
    ((2, 7, 6, 3), (3, 3), (2, 2), "valid"),
    ((1, 8, 8, 1), (3, 3), (1, 1), "same"),
    ((3, 9, 7, 2), (3, 3), (2, 2), "same"),
    ((2, 6, 9, 4), (2, 5), (1, 2), "same"),
    ((2, 5, 5, 2), (1, 1), (1, 1), "valid"),
    ((2, 10, 10, 5), (4, 2), (3, 1), "valid"),
    ((2, 11, 11, 3), (2, 2), (2, 2), "valid"),      # an odd edge the windows never reach
    ((3, 26, 26, 4), (2, 2), (2, 2), "valid"),      # more than one block of 256 threads
]


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        kh, kw = (int(k) for k in rng.integers(1, 5, size=2))
        sh, sw = (int(s) for s in rng.integers(1, 4, size=2))
        shape = (int(rng.integers(1, 4)), int(rng.integers(kh, 12)), int(rng.integers(kw, 12)), int(rng.integers(1, 6)))
        yield shape, (kh, kw), (sh, sw), str(rng.choice(["valid", "same"]))


ALL_CASES = CASES + list(random_cases(20, seed=5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", ALL_CASES)
def test_im2col_and_col2im_equal_the_references(gpu, shape, k, s, padding, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    pad = paddings(shape[1], shape[2], k, s, padding)
    cols = cuda.im2col(x, *k, s, pad)
    np.testing.assert_array_equal(cols, conv_kernels.im2col_reference(x, *k, s, pad))
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    dx = cuda.col2im(dcols, shape, *k, s, pad)
    np.testing.assert_allclose(dx, conv_kernels.col2im_reference(dcols, shape, *k, s, pad),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert [name for name, _ in gpu.launches] == ["im2col", "col2im"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", ALL_CASES)
def test_maxpool_forward_and_backward_equal_the_references(gpu, shape, k, s, padding, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :, 0] = -5.0 - np.arange(shape[2])       # negative windows at the edge: padding never wins
    x[-1, -1, -1, -1] = np.nan                       # a NaN is its windows' maximum
    x[0, -1, 0, :] = x[0, -1, 1, :] if shape[2] > 1 else 0    # ties: the first in reading order
    pad = paddings(shape[1], shape[2], k, s, padding)
    y, argmax = cuda.maxpool_forward(x, *k, s, pad)
    y_ref, argmax_ref = pool_kernels.maxpool_forward_reference(x, *k, s, pad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = cuda.maxpool_backward(dout, argmax, shape, k, s, pad)
    np.testing.assert_array_equal(dx, pool_kernels.maxpool_backward(dout, argmax_ref, shape, *k, s, pad))
    np.testing.assert_allclose(dx, pool_kernels.maxpool_backward_reference(dout, argmax_ref, shape),
                               rtol=1e-6, atol=1e-6)


def test_the_grid_covers_every_element_and_no_more(gpu):
    """ceil(total / 256) blocks of 256 threads: the last block's extra threads must do nothing."""
    x = np.ones((1, 5, 5, 3), dtype=np.float32)              # 3*3*9*3 = 243 elements of cols
    cols = cuda.im2col(x, 3, 3, (1, 1), (0, 0, 0, 0))
    assert gpu.launches == [("im2col", 256)] and cols.size == 243 and np.all(cols == 1)
    x = np.ones((2, 8, 8, 4), dtype=np.float64)              # 2*6*6*9*4 = 2592: 11 blocks
    cols = cuda.im2col(x, 3, 3, (1, 1), (0, 0, 0, 0))
    assert gpu.launches[-1] == ("im2col", 11 * 256) and np.all(cols == 1)
