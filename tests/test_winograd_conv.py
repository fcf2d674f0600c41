"""A 3×3 convolution by Winograd's algorithm, z written whole (tinycnn/kernels/winograd_conv.py),
computes what im2col computes.

- a case worked out by hand: a 5×5 image, a kernel of ones (z 3×3: tiles partly outside it), on
  both paths (F(4×4, 3×3), and the one-channel F(2×2, 3×3) kernels);
- each Numba kernel equals its NumPy reference, on random shapes, paddings and both dtypes;
- each backward transform is its forward transform's adjoint: <T a, b> = <a, Tᵀ b>;
- forward and backward equal im2col's convolution and its backward (dkernel, dbias, dx), on both
  paths, whatever the grouping of the images;
- applies() picks it for 3×3 stride-1 convolutions with one channel or winograd.MIN_CHANNELS.
The block that runs it inside a model (Conv2D → BatchNormalization → ReLU → MaxPool2D) is tested
against the four layers in test_fused_batchnorm.py.
"""

import numpy as np
import pytest

from tinycnn.kernels import winograd, winograd_conv
from tinycnn.kernels.im2col import col2im_reference, im2col_reference

CASES = [
    # x shape (N, H, W, C), filters, padding (PT, PB, PL, PR)
    ((2, 13, 13, 8), 6, (0, 0, 0, 0)),        # bn-dropout's second convolution, smaller: z 11×11, odd
    ((2, 9, 8, 9), 5, (1, 1, 1, 1)),          # "same": z 9×8, odd one way only
    ((1, 6, 8, 8), 3, (0, 1, 1, 0)),          # padding on one side only
    ((3, 10, 10, 1), 7, (0, 0, 0, 0)),        # one input channel: its own kernels; z 8×8, even
    ((2, 7, 9, 1), 4, (1, 1, 1, 1)),          # one channel, odd z
]


def close(actual, desired, dtype):
    """Equal to rounding: F(4×4, 3×3)'s transforms multiply by up to 8 and 1/24, so its float32
    errors scale with the largest number of the array, a few units in its fifth digit."""
    r = 3e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, desired, rtol=r, atol=r * np.abs(desired).max())


def random_case(rng, shape, filters, pad, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    kernel = (rng.standard_normal((3, 3, shape[3], filters)) * 0.3).astype(dtype)
    bias = rng.standard_normal(filters).astype(dtype)
    z_hw = (shape[1] + pad[0] + pad[1] - 2, shape[2] + pad[2] + pad[3] - 2)
    return x, kernel, bias, z_hw


def im2col_conv(x, kernel, bias, pad, z_hw):
    """The layers' own convolution: (z, cols)."""
    cols = im2col_reference(x, 3, 3, (1, 1), pad)
    z = cols @ kernel.reshape(-1, kernel.shape[3]) + bias
    return z.reshape(x.shape[0], *z_hw, -1), cols


@pytest.mark.parametrize("input_grad", [True, False])    # F(4×4, 3×3); the one-channel F(2×2, 3×3)
def test_winograd_conv_by_hand(input_grad):
    """x = 0..24 in a 5×5 image, a kernel of ones, bias 1: each 3×3 sum of a plane that grows by
    5 a row and 1 a column is 9 times its centre, so z[i, j] = 9 * (5 (i + 1) + j + 1) + 1. z is
    3×3: one 4×4 tile, or four 2×2 tiles, reach beyond it."""
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5, 1)
    z, v, u = winograd_conv.forward(x, np.ones((3, 3, 1, 1)), np.array([1.0]), (0, 0, 0, 0), (3, 3), input_grad)
    assert v.shape[0] == (36 if input_grad else 16)
    np.testing.assert_allclose(z[0, :, :, 0], [[55, 64, 73], [100, 109, 118], [145, 154, 163]])
    # Backward: dz = 1 at z's last pixel (2, 2) only. dkernel[a, b] = x[2 + a, 2 + b], dbias = 1,
    # dx = the kernel (ones) where it read: x[2:, 2:]
    dz = np.zeros_like(z)
    dz[0, 2, 2, 0] = 1.0
    dkernel, dbias, dx = winograd_conv.backward(dz, v, u, x.shape, (0, 0, 0, 0), input_grad)
    np.testing.assert_allclose(dkernel[:, :, 0, 0], [[12, 13, 14], [17, 18, 19], [22, 23, 24]])
    np.testing.assert_allclose(dbias, [1.0])
    if input_grad:
        expected = np.zeros((5, 5))
        expected[2:, 2:] = 1
        np.testing.assert_allclose(dx[0, :, :, 0], expected, atol=1e-14)
    else:
        assert dx is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, filters, pad", CASES)
def test_kernels_match_their_references(rng, shape, filters, pad, dtype):
    x, kernel, bias, z_hw = random_case(rng, shape, filters, pad, dtype)
    n, c = shape[0], shape[3]
    th, tw = winograd_conv.tiles(z_hw)
    v = winograd_conv.input_transform(x, pad, th, tw)
    close(v, winograd_conv.input_transform_reference(x, pad, th, tw), dtype)
    m = np.matmul(v, winograd_conv.kernel_transform(kernel))
    z = winograd_conv.output_transform(m, bias, n, *z_hw)
    assert z.dtype == dtype and z.shape == (n, *z_hw, filters)
    close(z, winograd_conv.output_transform_reference(m, bias, n, *z_hw), dtype)
    dz = rng.standard_normal(z.shape).astype(dtype)
    dm, dbias = winograd_conv.output_transform_backward(dz)
    dm_ref, dbias_ref = winograd_conv.output_transform_backward_reference(dz)
    assert dm.shape == dm_ref.shape == (36, n * th * tw, filters)
    close(dm, dm_ref, dtype)
    close(dbias, dbias_ref, dtype)
    dv = rng.standard_normal(v.shape).astype(dtype)
    close(winograd_conv.input_transform_backward(dv, shape, pad, th, tw),
                               winograd_conv.input_transform_backward_reference(dv, shape, pad, th, tw), dtype)
    if c == 1:                                          # the one-channel kernels, without dx
        z1, v1, u1 = winograd_conv.forward(x, kernel, bias, pad, z_hw, input_grad=False)
        close(z1, winograd_conv.one_channel_forward_reference(x, kernel, bias, pad, z_hw), dtype)
        dkernel, dbias1, _ = winograd_conv.backward(dz, v1, u1, shape, pad, input_grad=False)
        for a, b in zip((dkernel, dbias1), winograd_conv.one_channel_kernel_backward_reference(dz, x, pad)):
            close(a, b, dtype)


@pytest.mark.parametrize("shape, filters, pad", CASES[:3])
def test_backward_transforms_are_the_adjoints(rng, shape, filters, pad):
    """<Aᵀ M A cropped, dz> = <M, A dz Aᵀ> and <Bᵀ d B, dV> = <x, B dV Bᵀ> for any arguments."""
    x, _, _, z_hw = random_case(rng, shape, filters, pad, np.float64)
    th, tw = winograd_conv.tiles(z_hw)
    m = rng.standard_normal((36, shape[0] * th * tw, filters))
    dz = rng.standard_normal((shape[0], *z_hw, filters))
    z = winograd_conv.output_transform(m, np.zeros(filters), shape[0], *z_hw)
    dm, _ = winograd_conv.output_transform_backward(dz)
    assert np.vdot(z, dz) == pytest.approx(np.vdot(m, dm), rel=1e-12)
    v = winograd_conv.input_transform(x, pad, th, tw)
    dv = rng.standard_normal(v.shape)
    assert np.vdot(v, dv) == pytest.approx(np.vdot(x, winograd_conv.input_transform_backward(dv, shape, pad, th, tw)),
                                           rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, filters, pad", CASES)
def test_forward_and_backward_equal_im2col(rng, shape, filters, pad, dtype):
    x, kernel, bias, z_hw = random_case(rng, shape, filters, pad, dtype)
    z_ref, cols = im2col_conv(x, kernel, bias, pad, z_hw)
    dz = rng.standard_normal(z_ref.shape).astype(dtype)
    dkernel_ref = (cols.T @ dz.reshape(-1, filters)).reshape(kernel.shape)
    dx_ref = col2im_reference(dz.reshape(-1, filters) @ kernel.reshape(-1, filters).T, x.shape, 3, 3, (1, 1), pad)
    for input_grad in (True, False):
        z, v, u = winograd_conv.forward(x, kernel, bias, pad, z_hw, input_grad)
        assert z.dtype == dtype
        close(z, z_ref, dtype)
        dkernel, dbias, dx = winograd_conv.backward(dz, v, u, x.shape, pad, input_grad)
        close(dkernel, dkernel_ref, dtype)
        close(dbias, dz.sum(axis=(0, 1, 2)), dtype)
        if input_grad:
            close(dx, dx_ref, dtype)
        else:
            assert dx is None


@pytest.mark.parametrize("group_tiles", [1, 18, 10 ** 6])      # one image at a time, two, all three
def test_any_grouping_of_the_images_gives_the_same_numbers(rng, monkeypatch, group_tiles):
    """forward and backward work through the batch GROUP_TILES tiles (whole images) at a time;
    the numbers do not depend on it but for the order of dU's additions."""
    x, kernel, bias, z_hw = random_case(rng, (3, 13, 13, 8), 4, (0, 0, 0, 0), np.float64)    # 9 tiles an image
    z_ref, cols = im2col_conv(x, kernel, bias, (0, 0, 0, 0), z_hw)
    dz = rng.standard_normal(z_ref.shape)
    monkeypatch.setattr(winograd_conv, "GROUP_TILES", group_tiles)
    assert len(winograd_conv._groups(3, 9)) == {1: 3, 18: 2, 10 ** 6: 1}[group_tiles]
    z, v, u = winograd_conv.forward(x, kernel, bias, (0, 0, 0, 0), z_hw)
    np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)
    dkernel, dbias, dx = winograd_conv.backward(dz, v, u, x.shape, (0, 0, 0, 0))
    np.testing.assert_allclose(dkernel, (cols.T @ dz.reshape(-1, 4)).reshape(kernel.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, col2im_reference(dz.reshape(-1, 4) @ kernel.reshape(-1, 4).T, x.shape, 3, 3,
                                                    (1, 1), (0, 0, 0, 0)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, filters", [((3, 12, 10, 1), 5), ((2, 13, 11, 1), 4), ((3, 7, 7, 1), 3)])
def test_the_one_channel_batchnorm_backward_equals_its_steps(rng, shape, filters, dtype):
    """BatchNormalization's, ReLU's and a 2×2 max-pool's backward computed tile by tile inside the
    one-channel dU kernel equals batchnorm_input_gradient then backward, and the reference; z even
    and odd (the last tiles then have no pool window)."""
    from tinycnn.kernels import batchnorm_relu_pool as bn
    x, kernel, bias, z_hw = random_case(rng, shape, filters, (0, 0, 0, 0), dtype)
    z, v, u = winograd_conv.forward(x, kernel, bias, (0, 0, 0, 0), z_hw, input_grad=False)
    mean = z.mean(axis=(0, 1, 2)).astype(dtype)
    inv_std = (1 / np.sqrt(z.var(axis=(0, 1, 2)) + 1e-3)).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, filters).astype(dtype), rng.uniform(-0.3, 0.3, filters).astype(dtype)
    gamma[0] = -0.7
    y, argmax, xhat_max = bn.batchnorm_relu_maxpool_forward(z, mean, inv_std, gamma, beta, 2, 2, (2, 2), (0, 0, 0, 0))
    assert 0 < (y > 0).mean() < 1
    dy = rng.standard_normal(y.shape).astype(dtype)
    dbeta, dgamma = bn.batchnorm_gradient_sums(dy, y, xhat_max)
    m = 3 * z[..., 0].size                          # as if z were a third of the batch
    fused = winograd_conv.one_channel_batchnorm_backward(dy, argmax, y, z, v, mean, inv_std, gamma, dbeta, dgamma, m)
    dz = bn.batchnorm_input_gradient(dy, argmax, y, z, mean, inv_std, gamma, dbeta, dgamma, m)
    steps = winograd_conv.backward(dz, v, u, x.shape, (0, 0, 0, 0), input_grad=False)[:2]
    reference = winograd_conv.one_channel_batchnorm_backward_reference(dy, argmax, y, z, x, (0, 0, 0, 0), mean,
                                                                       inv_std, gamma, dbeta, dgamma, m)
    for a, b, r in zip(fused, steps, reference):
        assert a.dtype == dtype
        close(a, b, dtype)
        close(a, r, dtype)


def test_backward_refuses_arrays_of_other_shapes(rng):
    x, kernel, bias, z_hw = random_case(rng, (2, 9, 9, 8), 3, (0, 0, 0, 0), np.float32)
    z, v, u = winograd_conv.forward(x, kernel, bias, (0, 0, 0, 0), z_hw)
    with pytest.raises(ValueError, match="V"):
        winograd_conv.backward(z[:1], v, u, x.shape, (0, 0, 0, 0))
    with pytest.raises(ValueError, match="kernel"):
        winograd_conv.forward(x, kernel[..., :2], bias, (0, 0, 0, 0), z_hw)
    x1, kernel1, bias1, z_hw1 = random_case(rng, (2, 9, 9, 1), 3, (0, 0, 0, 0), np.float32)
    z1, v1, u1 = winograd_conv.forward(x1, kernel1, bias1, (0, 0, 0, 0), z_hw1, input_grad=False)
    with pytest.raises(ValueError, match="input_grad=True"):                # the one-channel path has no dx
        winograd_conv.backward(z1, v1, u1, x1.shape, (0, 0, 0, 0), input_grad=True)


@pytest.mark.parametrize("channels, kernel, strides, expected", [
    (1, (3, 3), (1, 1), True), (winograd.MIN_CHANNELS, (3, 3), (1, 1), True), (64, (3, 3), (1, 1), True),
    (winograd.MIN_CHANNELS - 1, (3, 3), (1, 1), False),       # im2col's one product is faster
    (8, (3, 3), (2, 2), False), (8, (5, 5), (1, 1), False), (8, (3, 1), (1, 1), False),
])
def test_applies_to_3x3_stride_1_convolutions(channels, kernel, strides, expected):
    assert winograd_conv.applies(channels, kernel, strides) is expected
