"""Winograd's F(2×2, 3×3) (tinycnn/kernels/winograd.py) computes what im2col computes.

- a case worked out by hand: a 4×4 image, a kernel of ones;
- each Numba kernel equals its NumPy reference, on random shapes, paddings and both dtypes;
- each backward transform is the adjoint (transpose) of its forward transform: <T x, y> = <x, Tᵀ y>;
- the whole forward and backward equal the layers' own operations (im2col, bias, ReLU, max-pool);
- applies() picks Winograd only where its tiles are the pool's windows.
The block inside a model (against Conv2D, ReLU and MaxPool2D, and a gradient check) is tested in
test_fast_paths.py.
"""

import numpy as np
import pytest

from tinycnn.kernels import winograd, winograd_conv
from tinycnn.kernels.bias_relu_pool import bias_relu_maxpool_forward_reference, conv_relu_maxpool_backward_reference
from tinycnn.kernels.im2col import im2col_reference

CASES = [
    # x shape (N, H, W, C), filters, conv padding (PT, PB, PL, PR)
    ((2, 13, 13, 8), 6, (0, 0, 0, 0)),        # the seed model's second convolution, smaller: odd z, row 10 unused
    ((2, 9, 7, 8), 5, (1, 1, 1, 1)),          # "same" padding
    ((1, 6, 8, 9), 3, (0, 1, 1, 0)),          # padding on one side only (as "same" with stride 2 gives)
    ((3, 10, 10, 1), 7, (0, 0, 0, 0)),        # one input channel: its own kernels
    ((2, 7, 9, 1), 4, (1, 1, 1, 1)),
]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def conv_relu_pool_reference(x, kernel, bias, pad):
    """The layers' own operations: (y, argmax, z's (H, W))."""
    n, h, w, _ = x.shape
    zh, zw = h + pad[0] + pad[1] - 2, w + pad[2] + pad[3] - 2
    z = im2col_reference(x, 3, 3, (1, 1), pad) @ kernel.reshape(-1, kernel.shape[3])
    y, argmax = bias_relu_maxpool_forward_reference(z.reshape(n, zh, zw, -1), bias, 2, 2, (2, 2), (0, 0, 0, 0))
    return y, argmax, (zh, zw)


def random_case(rng, shape, filters, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    kernel = (rng.standard_normal((3, 3, shape[3], filters)) * 0.3).astype(dtype)
    bias = (rng.standard_normal(filters) * 0.1).astype(dtype)
    bias[0] = -30                                  # a filter that ReLU zeroes everywhere
    return x, kernel, bias


def test_winograd_by_hand():
    """x = 0..15 in a 4×4 image, a 3×3 kernel of ones: z is the four 3×3 sums, worked out below."""
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    kernel = np.ones((3, 3, 1, 1))
    # z[0, 0] = 0+1+2 + 4+5+6 + 8+9+10 = 45, z[0, 1] = 54, z[1, 0] = 81, z[1, 1] = 90
    y, argmax, v, u = winograd.forward(x, kernel, np.array([-10.0]), (0, 0, 0, 0), (2, 2))
    assert y[0, 0, 0, 0] == 80.0                   # max(45, 54, 81, 90) - 10
    assert argmax[0, 0, 0, 0] == 3                 # z's pixel (1, 1), numbered h * 2 + w
    # Backward: dz is dy at (1, 1), so dkernel[i, j] = dy * x[1 + i, 1 + j], dx = dy * the kernel there
    dkernel, dbias, dx = winograd.backward(np.array([[[[2.0]]]]), argmax, y, v, u, x.shape, (0, 0, 0, 0), (2, 2))
    np.testing.assert_allclose(dkernel[:, :, 0, 0], 2 * np.array([[5, 6, 7], [9, 10, 11], [13, 14, 15]]))
    assert dbias[0] == 2.0
    expected = np.zeros((4, 4))
    expected[1:, 1:] = 2.0
    np.testing.assert_allclose(dx[0, :, :, 0], expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, filters, pad", CASES)
def test_kernels_equal_their_numpy_references(rng, shape, filters, pad, dtype):
    x, kernel, bias = random_case(rng, shape, filters, dtype)
    n, h, w, c = shape
    zh, zw = h + pad[0] + pad[1] - 2, w + pad[2] + pad[3] - 2
    th, tw = zh // 2, zw // 2
    v = winograd.input_transform(x, pad[0], pad[2], th, tw)
    assert v.shape == (16, n * th * tw, c) and v.dtype == dtype
    np.testing.assert_allclose(v, winograd.input_transform_reference(x, pad[0], pad[2], th, tw), **tol(dtype))
    m = rng.standard_normal((16, n * th * tw, filters)).astype(dtype)
    y, argmax = winograd.output_bias_relu_maxpool(m, bias, n, th, tw, zw)
    y_ref, argmax_ref = winograd.output_bias_relu_maxpool_reference(m, bias, n, th, tw, zw)
    assert 0 < (y > 0).mean() < 1
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    np.testing.assert_array_equal(argmax[y > 0], argmax_ref[y > 0])     # where a gradient flows
    dy = rng.standard_normal(y.shape).astype(dtype)
    dm, dbias = winograd.maxpool_relu_backward_m(dy, argmax, y, zw)
    dm_ref, dbias_ref = winograd.maxpool_relu_backward_m_reference(dy, argmax, y, zw)
    np.testing.assert_allclose(dm, dm_ref, **tol(dtype))
    np.testing.assert_allclose(dbias, dbias_ref, **tol(dtype))
    dv = rng.standard_normal(v.shape).astype(dtype)
    np.testing.assert_allclose(winograd.input_transform_backward(dv, shape, pad[0], pad[2], th, tw),
                               winograd.input_transform_backward_reference(dv, shape, pad[0], pad[2], th, tw),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g", [winograd.G, winograd_conv.G], ids=["F(2x2)", "F(4x4)"])
@pytest.mark.parametrize("channels, filters", [(1, 1), (1, 32), (5, 7), (32, 64)])
def test_the_kernel_transforms_equal_their_references(rng, g, channels, filters, dtype):
    """U = G g Gᵀ and dkernel = Gᵀ dU G by the Numba kernels, against the reference's matrix
    products, for both tile sizes' G (.winograd_conv's F(4×4, 3×3) too): same shapes and dtype,
    the same numbers but for rounding."""
    kernel = rng.standard_normal((3, 3, channels, filters)).astype(dtype)
    u = winograd.kernel_transform(kernel, g)
    assert u.shape == (len(g) ** 2, channels, filters) and u.dtype == dtype
    np.testing.assert_allclose(u, winograd.kernel_transform_reference(kernel, g), **tol(dtype))
    du = rng.standard_normal(u.shape).astype(dtype)
    dkernel = winograd.kernel_transform_backward(du, g)
    assert dkernel.shape == kernel.shape and dkernel.dtype == dtype
    np.testing.assert_allclose(dkernel, winograd.kernel_transform_backward_reference(du, g), **tol(dtype))


def test_the_kernel_transform_by_hand():
    """A kernel of ones: (G g Gᵀ)[ξ, ν] = (row sum ξ of G) (row sum ν of G), rows summing to
    1, 3/2, 1/2, 1; and dkernel of a dU that is 1 at (ξ, ν) alone is G[ξ, k] G[ν, l]."""
    sums = np.array([1, 1.5, 0.5, 1])
    u = winograd.kernel_transform(np.ones((3, 3, 1, 1)))
    np.testing.assert_array_equal(u[:, 0, 0], np.outer(sums, sums).ravel())
    du = np.zeros((16, 1, 1))
    du[4 * 1 + 2] = 1.0                                 # (ξ, ν) = (1, 2)
    np.testing.assert_array_equal(winograd.kernel_transform_backward(du)[:, :, 0, 0],
                                  np.outer(winograd.G[1], winograd.G[2]))


@pytest.mark.parametrize("shape, filters, pad", CASES[:3])
def test_backward_transforms_are_the_adjoints(rng, shape, filters, pad):
    """<T(a), b> == <a, Tᵀ(b)> for the input and the kernel transforms (float64)."""
    x, kernel, _ = random_case(rng, shape, filters, np.float64)
    zh, zw = shape[1] + pad[0] + pad[1] - 2, shape[2] + pad[2] + pad[3] - 2
    th, tw = zh // 2, zw // 2
    v = winograd.input_transform(x, pad[0], pad[2], th, tw)
    dv = rng.standard_normal(v.shape)
    dx = winograd.input_transform_backward(dv, shape, pad[0], pad[2], th, tw)
    assert np.vdot(v, dv) == pytest.approx(np.vdot(x, dx), rel=1e-12)
    u = winograd.kernel_transform(kernel)
    du = rng.standard_normal(u.shape)
    assert np.vdot(u, du) == pytest.approx(np.vdot(kernel, winograd.kernel_transform_backward(du)), rel=1e-12)


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, filters, pad", CASES)
def test_forward_and_backward_equal_the_layers(rng, shape, filters, pad, dtype, input_grad):
    x, kernel, bias = random_case(rng, shape, filters, dtype)
    y_ref, argmax_ref, z_hw = conv_relu_pool_reference(x, kernel, bias, pad)
    y, argmax, v, u = winograd.forward(x, kernel, bias, pad, z_hw)
    assert y.dtype == dtype and 0 < (y > 0).mean() < 1
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    np.testing.assert_array_equal(argmax[y > 0], argmax_ref[y > 0])
    dy = rng.standard_normal(y.shape).astype(dtype)
    dkernel, dbias, dx = winograd.backward(dy, argmax, y, v, u, x.shape, pad, z_hw, input_grad)
    ref = conv_relu_maxpool_backward_reference(dy, argmax, y, x, kernel, z_hw, (1, 1), pad)
    assert dkernel.dtype == dtype
    np.testing.assert_allclose(dkernel, ref[0], **tol(dtype))
    np.testing.assert_allclose(dbias, ref[1], **tol(dtype))
    if input_grad:
        np.testing.assert_allclose(dx, ref[2], **tol(dtype))
    else:
        assert dx is None


@pytest.mark.parametrize("rows", [7, 25, 10 ** 6])
def test_products_in_blocks_of_rows_equal_the_layers(rng, monkeypatch, rows):
    """The matrix products run ROWS tiles at a time (blocks of equal size); any ROWS gives the
    layers' numbers."""
    monkeypatch.setattr(winograd, "ROWS", rows)
    assert len(winograd._blocks(50)) == {7: 8, 25: 2, 10 ** 6: 1}[rows]
    assert sum(b.stop - b.start for b in winograd._blocks(50)) == 50
    x, kernel, bias = random_case(rng, (2, 13, 13, 8), 6, np.float64)
    y_ref, argmax_ref, z_hw = conv_relu_pool_reference(x, kernel, bias, (0, 0, 0, 0))
    y, argmax, v, u = winograd.forward(x, kernel, bias, (0, 0, 0, 0), z_hw)      # 50 tiles
    np.testing.assert_allclose(y, y_ref, **tol(np.float64))
    dy = rng.standard_normal(y.shape)
    ref = conv_relu_maxpool_backward_reference(dy, argmax, y, x, kernel, z_hw, (1, 1), (0, 0, 0, 0))
    for a, b in zip(winograd.backward(dy, argmax, y, v, u, x.shape, (0, 0, 0, 0), z_hw), ref):
        np.testing.assert_allclose(a, b, **tol(np.float64))


def test_applies_only_where_tiles_are_pool_windows():
    ok = dict(kernel_size=(3, 3), conv_strides=(1, 1), pool_size=(2, 2), pool_strides=(2, 2), pool_pad=(0, 0, 0, 0))
    assert winograd.applies(1, **ok) and winograd.applies(32, **ok)
    assert not winograd.applies(3, **ok)                            # few channels: im2col is faster
    for change in [dict(kernel_size=(5, 5)), dict(conv_strides=(2, 2)), dict(pool_size=(3, 3)),
                   dict(pool_strides=(1, 1)), dict(pool_pad=(0, 1, 0, 1))]:
        assert not winograd.applies(32, **{**ok, **change}), change
