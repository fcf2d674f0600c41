"""The fast kernels equal the NumPy references, on random shapes; and small hand-made cases.

Each test runs on every available device (the ``device`` fixture): "cpu" runs the Numba kernels,
"gpu" the CUDA ones (the input is copied to the GPU and the result compared after ``to_numpy``).
"""

import numpy as np
import pytest

from tinycnn.backend import device_of, to_device, to_numpy
from tinycnn.kernels import im2col as conv_kernels
from tinycnn.kernels import pooling as pool_kernels
from tinycnn.kernels.geometry import output_size, same_padding
from tinycnn.layers._geometry import paddings

CASES = [
    # (N, H, W, C), (KH, KW), (SH, SW), padding
    ((2, 7, 6, 3), (3, 3), (1, 1), "valid"),
    ((2, 7, 6, 3), (3, 3), (2, 2), "valid"),
    ((1, 8, 8, 1), (3, 3), (1, 1), "same"),      # batch 1, one channel
    ((3, 9, 7, 2), (3, 3), (2, 2), "same"),
    ((2, 6, 9, 4), (2, 5), (1, 2), "same"),      # non-square kernel and stride
    ((2, 5, 5, 2), (1, 1), (1, 1), "valid"),
    ((2, 10, 10, 5), (4, 2), (3, 1), "valid"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", CASES)
def test_im2col_col2im_match_reference(rng, device, shape, k, s, padding, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    pad = paddings(shape[1], shape[2], k, s, padding)
    cols = conv_kernels.im2col(to_device(x, device), *k, s, pad)
    assert device_of(cols) == device
    np.testing.assert_array_equal(to_numpy(cols), conv_kernels.im2col_reference(x, *k, s, pad))
    assert cols.dtype == dtype
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    fast = conv_kernels.col2im(to_device(dcols, device), shape, *k, s, pad)
    assert device_of(fast) == device
    ref = conv_kernels.col2im_reference(dcols, shape, *k, s, pad)
    np.testing.assert_allclose(to_numpy(fast), ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert fast.dtype == dtype


@pytest.mark.parametrize("shape, k, s, padding", CASES)
def test_col2im_is_the_adjoint_of_im2col(rng, device, shape, k, s, padding):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: that is what 'transpose' means."""
    pad = paddings(shape[1], shape[2], k, s, padding)
    x = rng.standard_normal(shape)
    c = rng.standard_normal(conv_kernels.im2col(x, *k, s, pad).shape)
    xd, cd = to_device(x, device), to_device(c, device)
    lhs = float((conv_kernels.im2col(xd, *k, s, pad) * cd).sum())
    rhs = float((xd * conv_kernels.col2im(cd, shape, *k, s, pad)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_im2col_worked_example_from_the_docstring(device):
    """The 4x4 image, 3x3 kernel example: rows are windows, columns run over (kh, kw)."""
    x = to_device(np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1), device)   # a=0, ..., p=15
    cols = conv_kernels.im2col(x, 3, 3, (1, 1), (0, 0, 0, 0))
    expected = np.array([[0, 1, 2, 4, 5, 6, 8, 9, 10],
                         [1, 2, 3, 5, 6, 7, 9, 10, 11],
                         [4, 5, 6, 8, 9, 10, 12, 13, 14],
                         [5, 6, 7, 9, 10, 11, 13, 14, 15]], dtype=np.float64)
    np.testing.assert_array_equal(to_numpy(cols), expected)
    # col2im of all ones counts how many windows read each pixel.
    ones = to_device(np.ones(cols.shape), device)
    counts = to_numpy(conv_kernels.col2im(ones, x.shape, 3, 3, (1, 1), (0, 0, 0, 0)))[0, :, :, 0]
    np.testing.assert_array_equal(counts, [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_keras_same_padding_puts_the_extra_pixel_after():
    assert same_padding(5, 3, 1) == (1, 1)
    assert same_padding(6, 3, 2) == (0, 1)     # out 3; total (3-1)*2+3-6 = 1, at the bottom
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(4, 1, 1) == (0, 0)
    assert output_size(28, 3, 1, 0, 0) == 26
    assert output_size(7, 3, 2, 0, 0) == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, padding", CASES)
def test_maxpool_matches_reference(rng, device, shape, k, s, padding, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    pad = paddings(shape[1], shape[2], k, s, padding)
    y, argmax = pool_kernels.maxpool_forward(to_device(x, device), *k, s, pad)
    assert device_of(y) == device and device_of(argmax) == device
    y_ref, argmax_ref = pool_kernels.maxpool_forward_reference(x, *k, s, pad)
    np.testing.assert_array_equal(to_numpy(y), y_ref)
    np.testing.assert_array_equal(to_numpy(argmax), argmax_ref)
    assert y.dtype == dtype and argmax.dtype == np.int32
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = pool_kernels.maxpool_backward(to_device(dout, device), argmax, shape, *k, s, pad)
    assert device_of(dx) == device and dx.dtype == dtype
    np.testing.assert_allclose(to_numpy(dx),
                               pool_kernels.maxpool_backward_reference(dout, argmax_ref, shape), rtol=1e-6)


def test_maxpool_ties_pick_the_first_in_reading_order(device):
    x = np.zeros((1, 2, 2, 1))                    # every entry ties
    y, argmax = pool_kernels.maxpool_forward(to_device(x, device), 2, 2, (2, 2), (0, 0, 0, 0))
    assert int(argmax[0, 0, 0, 0]) == 0
    _, argmax_ref = pool_kernels.maxpool_forward_reference(x, 2, 2, (2, 2), (0, 0, 0, 0))
    assert argmax_ref[0, 0, 0, 0] == 0
    x = np.array([1.0, 5.0, 5.0, 2.0]).reshape(1, 2, 2, 1)   # tie between positions 1 and 2
    _, argmax = pool_kernels.maxpool_forward(to_device(x, device), 2, 2, (2, 2), (0, 0, 0, 0))
    assert int(argmax[0, 0, 0, 0]) == 1


def test_maxpool_same_padding_is_minus_infinity_not_zero(device):
    """A window of negative numbers partly in the padding must return a negative maximum."""
    x = -np.arange(1, 10, dtype=np.float64).reshape(1, 3, 3, 1)   # -1 ... -9
    pad = same_padding(3, 2, 2) + same_padding(3, 2, 2)              # (0, 1, 0, 1)
    y, _ = pool_kernels.maxpool_forward(to_device(x, device), 2, 2, (2, 2), pad)
    np.testing.assert_array_equal(to_numpy(y)[0, :, :, 0], [[-1, -3], [-7, -9]])
    y_ref, _ = pool_kernels.maxpool_forward_reference(x, 2, 2, (2, 2), pad)
    np.testing.assert_array_equal(y_ref[0, :, :, 0], [[-1, -3], [-7, -9]])


def test_jit_falls_back_when_numba_cannot_cache(monkeypatch):
    """No writable cache directory: the kernel still compiles and runs, with one warning."""
    import numba
    from tinycnn.kernels import jit as jit_module

    real_njit = numba.njit

    def refusing_njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(jit_module.numba, "njit", refusing_njit)
    monkeypatch.setattr(jit_module, "_warned", False)
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR") as record:
        @jit_module.jit()
        def double(a):
            return a * 2

        @jit_module.jit()
        def triple(a):
            return a * 3
    assert len(record) == 1                        # one warning, not one per kernel
    assert double(21) == 42 and triple(2) == 6


def test_kernels_match_references_on_random_geometries(rng):
    """Thirty geometries drawn at random: sizes, kernels, strides, padding, batch, channels."""
    for _ in range(30):
        kh, kw = rng.integers(1, 5, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        shape = (int(rng.integers(1, 4)), int(rng.integers(kh, 12)), int(rng.integers(kw, 12)),
                 int(rng.integers(1, 6)))
        padding = rng.choice(["valid", "same"])
        k, s = (int(kh), int(kw)), (int(sh), int(sw))
        pad = paddings(shape[1], shape[2], k, s, padding)
        x = rng.standard_normal(shape)
        cols = conv_kernels.im2col(x, *k, s, pad)
        np.testing.assert_array_equal(cols, conv_kernels.im2col_reference(x, *k, s, pad))
        dcols = rng.standard_normal(cols.shape)
        np.testing.assert_allclose(conv_kernels.col2im(dcols, shape, *k, s, pad),
                                   conv_kernels.col2im_reference(dcols, shape, *k, s, pad), rtol=1e-12, atol=1e-12)
        y, argmax = pool_kernels.maxpool_forward(x, *k, s, pad)
        y_ref, argmax_ref = pool_kernels.maxpool_forward_reference(x, *k, s, pad)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(argmax, argmax_ref)
        dout = rng.standard_normal(y.shape)
        np.testing.assert_allclose(pool_kernels.maxpool_backward(dout, argmax, shape, *k, s, pad),
                                   pool_kernels.maxpool_backward_reference(dout, argmax_ref, shape), rtol=1e-12)
