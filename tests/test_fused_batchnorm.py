"""Conv2D → BatchNormalization → ReLU → MaxPool2D fused (``layers/fused.py``) equals the four layers.

- each kernel of ``kernels/batchnorm_relu_pool.py`` equals its NumPy reference (the layers' own
  operations one after another), over pool geometries, dtypes and both ReLU branches;
- the block in the fast plan equals the four layers in the reference plan, forward, dL/dx, the
  gradients of the convolution and of the normalisation, and the moving averages, in training
  and in inference, run whole or split over threads;
- a model with the block passes a gradient check.
"""

import numpy as np
import pytest

from tinycnn import Sequential, plan
from tinycnn.gradcheck import check_model
from tinycnn.kernels import batchnorm_relu_pool as kernels
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinycnn.layers._geometry import paddings
from tinycnn.layers.fused import ConvBatchNormReLUMaxPool
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optimizers import SGD
from tinycnn.parallel import DataParallel
from tinycnn.plan import Plan

POOLS = [
    # z shape (N, H, W, C), pool (PH, PW), strides, padding
    ((2, 6, 6, 3), (2, 2), (2, 2), "valid"),
    ((3, 11, 11, 4), (2, 2), (2, 2), "valid"),      # bn-dropout's second block: row 10 unpooled
    ((2, 5, 7, 2), (3, 3), (2, 2), "same"),         # overlapping windows, -inf padding
    ((2, 6, 5, 2), (2, 3), (1, 2), "valid"),
]


def statistics(rng, z):
    """z's own mean and 1 / std per channel (so that x̂ takes both signs), and gamma, beta."""
    c, dtype = z.shape[-1], z.dtype
    mean, inv_std = z.mean(axis=(0, 1, 2)), 1 / np.sqrt(z.var(axis=(0, 1, 2)) + 1e-3)
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.uniform(-0.3, 0.3, c).astype(dtype)
    gamma[0] = -0.7                 # a negative scale turns the window's order around
    return mean.astype(dtype), inv_std.astype(dtype), gamma, beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, p, s, padding", POOLS)
def test_kernels_match_the_layers_references(rng, shape, p, s, padding, dtype):
    z = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    mean, inv_std, gamma, beta = statistics(rng, z)
    pad = paddings(shape[1], shape[2], p, s, padding)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)

    moments = kernels.channel_moments(z)
    assert moments.dtype == np.float64
    np.testing.assert_allclose(moments, kernels.channel_moments_reference(z), rtol=1e-12)
    m = z.size // shape[-1]                         # the variance as the layer takes it, in two passes
    np.testing.assert_allclose(moments[1] / m - (moments[0] / m) ** 2, z.astype(np.float64).var(axis=(0, 1, 2)),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    y_ref, arg_ref, xhat_ref = kernels.batchnorm_relu_maxpool_forward_reference(z, mean, inv_std, gamma, beta, *p,
                                                                                s, pad)
    y, arg, xhat = kernels.batchnorm_relu_maxpool_forward(z, mean, inv_std, gamma, beta, *p, s, pad)
    assert y.dtype == dtype and xhat.dtype == dtype and 0 < (y > 0).mean() < 1   # both ReLU branches run
    np.testing.assert_array_equal(y, y_ref)                         # the same operations, in order
    np.testing.assert_array_equal(arg[y > 0], arg_ref[y > 0])       # where a gradient flows
    np.testing.assert_array_equal(xhat[y > 0], xhat_ref[y > 0])
    np.testing.assert_array_equal((gamma * xhat + beta)[y > 0], y[y > 0])   # the x̂ whose v is the maximum

    dy = rng.standard_normal(y.shape).astype(dtype)
    sums = kernels.batchnorm_gradient_sums(dy, y, xhat)
    sums_ref = kernels.batchnorm_gradient_sums_reference(dy, y_ref, xhat_ref)
    for a, b in zip(sums, sums_ref):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, **tol)
    m = 3 * z.size // shape[-1]                     # as if z were a third of the batch
    dz = kernels.batchnorm_input_gradient(dy, arg, y, z, mean, inv_std, gamma, *sums_ref, m)
    dz_ref = kernels.batchnorm_input_gradient_reference(dy, arg_ref, y_ref, z, mean, inv_std, gamma, *sums_ref, m)
    assert dz.dtype == dtype
    np.testing.assert_allclose(dz, dz_ref, **tol)
    np.testing.assert_allclose(kernels.batchnorm_inference_gradient(dy, arg, y, shape, gamma, inv_std),
                               kernels.batchnorm_inference_gradient_reference(dy, arg_ref, y_ref, shape, gamma,
                                                                              inv_std), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update", [True, False])
def test_the_statistics_kernel_is_its_reference_bit_for_bit(rng, dtype, update):
    """From the whole batch's float64 sums: mean, 1 / std and the moving averages, the NumPy lines'
    numbers exactly. Channels whose Σ z² / M - mean² is negative (float rounding: the variance is
    0) or NaN (a NaN in z) are among them; so is an epsilon and a momentum that float32 rounds."""
    c, m = 9, 1234
    z = rng.standard_normal((m, c)) * rng.uniform(0.1, 30, c) + rng.uniform(-50, 50, c)
    total = np.stack([z.sum(axis=0), (z * z).sum(axis=0)])
    total[1, 0] = total[0, 0] ** 2 / m * (1 - 1e-15)            # Σ z² / M just below mean²
    total[:, 1] = np.nan
    before = [rng.random(c).astype(dtype) for _ in range(2)]
    moving, mine = [a.copy() for a in before], [a.copy() for a in before]
    want = kernels.batch_statistics_reference(total, m, 1.1e-3, 0.93, *moving, update)
    got = kernels.batch_statistics(total, m, 1.1e-3, 0.93, *mine, update)
    for a, b in zip(got + tuple(mine), want + tuple(moving)):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert np.isnan(got[0][1]) and got[1][0] == (1 / np.sqrt(dtype(0) + dtype(1.1e-3))).astype(dtype)  # var 0
    assert np.array_equal(mine[0][2:], before[0][2:]) != update         # the moving averages move iff update


def test_kernels_refuse_arrays_of_other_shapes(rng):
    z = rng.standard_normal((2, 4, 4, 3))
    mean, inv_std, gamma, beta = statistics(rng, z)
    with pytest.raises(ValueError, match="gamma"):
        kernels.batchnorm_relu_maxpool_forward(z, mean, inv_std, gamma[:2], beta, 2, 2, (2, 2), (0, 0, 0, 0))
    y, arg, xhat = kernels.batchnorm_relu_maxpool_forward(z, mean, inv_std, gamma, beta, 2, 2, (2, 2), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="xhat_max"):
        kernels.batchnorm_gradient_sums(y, y, xhat[:1])
    with pytest.raises(ValueError, match="argmax"):
        kernels.batchnorm_input_gradient(y, arg[:1], y, z, mean, inv_std, gamma, mean, mean, 10)
    with pytest.raises(ValueError, match="batch and the channels"):
        kernels.batchnorm_input_gradient(y, arg, y, z[:1], mean, inv_std, gamma, mean, mean, 10)


def model(dtype, channels=2, strides=1, padding="valid", pool=2, seed=0):
    m = Sequential([Conv2D(5, 3, strides=strides, padding=padding), BatchNormalization(momentum=0.8, epsilon=1e-3),
                    ReLU(), MaxPool2D(pool), Flatten(), Dense(3)], seed=seed)
    m.build((9, 8, channels), dtype)
    m.compile(SGD(0.1))
    bn = m.layers[1]
    bn.params["gamma"][...] = np.linspace(-0.5, 1.5, 5)          # one negative scale
    bn.params["beta"][...] = np.linspace(-0.3, 0.3, 5)
    bn.state["moving_mean"][...] = np.linspace(-0.2, 0.2, 5)
    bn.state["moving_variance"][...] = np.linspace(0.5, 2.0, 5)
    return m


TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def fast_and_reference(m, run, input_grad, layers):
    """run(plan, fast) in the fast plan (the block) and then in the reference plan (the four
    layers' own code), each from the same moving averages. Returns (those moving averages,
    [(what run returned, the gradients of ``layers``, the moving averages after)] fast first)."""
    state = {k: v.copy() for k, v in m.layers[1].state.items()}
    results = []
    for fast in (True, False):
        for k, v in state.items():
            m.layers[1].state[k][...] = v
        out = run(Plan(m.layers, SoftmaxCrossEntropy(), fast=fast, input_grad=input_grad), fast)
        results.append((out, {(layer.name, k): g.copy() for layer in layers for k, g in layer.grads.items()},
                        {k: v.copy() for k, v in m.layers[1].state.items()}))
    return state, results


def assert_gradients_close(grads, grads_ref, tol, bias_gradient_is_zero):
    """Every gradient to ``tol``; in training the convolution's bias gradient is 0 up to rounding
    (BatchNormalization subtracts the mean right after), so it is compared absolutely, against
    the scale of the kernel's."""
    scale = np.abs(grads_ref[("conv2d", "kernel")]).max() if bias_gradient_is_zero else 0
    for key in grads:
        atol = tol["atol"] + (tol["rtol"] * scale if key == ("conv2d", "bias") else 0)
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=tol["rtol"], atol=atol, err_msg=str(key))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels, strides, padding, pool", [
    (1, 1, "valid", 2), (8, 1, "valid", 2), (9, 1, "same", 3), (1, 1, "same", 3),     # Winograd
    (2, 1, "same", 2), (3, 2, "same", 2), (2, 1, "same", 3)])                        # im2col
def test_the_block_equals_the_four_layers(rng, dtype, training, channels, strides, padding, pool):
    """The fast plan (the block) against the reference plan (the four layers' own forward and
    backward), on the same layers: the output, dL/dx, every gradient, the moving averages. The
    block's convolution is Winograd's (kernels/winograd_conv.py) for 3×3 stride-1 convolutions
    with one input channel or at least winograd.MIN_CHANNELS, im2col's otherwise."""
    m = model(dtype, channels, strides, padding, pool)
    x = rng.standard_normal((4, 9, 8, channels)).astype(dtype)
    labels = np.array([0, 1, 2, 1])
    tol = TOLERANCE[dtype]

    def run(p, fast):
        assert isinstance(p.steps[0], ConvBatchNormReLUMaxPool) == fast
        logits = p.forward(x, training=training)
        if fast:
            assert p.steps[0].winograd == (strides == 1 and channels in (1, 8, 9))
        p.loss.forward(logits, labels)
        return logits, p.backward(p.loss.backward())

    state, (((logits, dx), grads, moving), ((logits_ref, dx_ref), grads_ref, moving_ref)) = fast_and_reference(
        m, run, input_grad=True, layers=m.layers[:2])
    np.testing.assert_allclose(logits, logits_ref, **tol)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    assert grads.keys() == grads_ref.keys() == {("conv2d", "kernel"), ("conv2d", "bias"),
                                                ("batch_normalization", "gamma"), ("batch_normalization", "beta")}
    assert_gradients_close(grads, grads_ref, tol, bias_gradient_is_zero=training)
    for k in moving:
        np.testing.assert_allclose(moving[k], moving_ref[k], **tol)
    if not training:
        for k in moving:
            np.testing.assert_array_equal(moving[k], state[k])      # inference leaves them alone


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [2, 3])
def test_the_first_block_in_training_equals_the_four_layers(rng, dtype, pool):
    """The block as the first step with parameters in training (no dx): one input channel, so
    Winograd's one-channel kernels; with a 2×2 pool, whose windows are their tiles, the kernel
    that never writes dz. Every gradient and the moving averages against the layers'."""
    m = model(dtype, 1, pool=pool)
    x, labels = rng.standard_normal((4, 9, 8, 1)).astype(dtype), np.array([0, 1, 2, 1])
    tol = TOLERANCE[dtype]

    def run(p, fast):
        p.loss_and_gradients(x, labels)
        if fast:
            assert p.steps[0].winograd and p.steps[0].v.shape[0] == 16 and p.steps[0].dz_in_tiles == (pool == 2)

    _, ((_, grads, moving), (_, grads_ref, moving_ref)) = fast_and_reference(m, run, input_grad=False,
                                                                            layers=m.layers)
    assert grads.keys() == grads_ref.keys()
    assert_gradients_close(grads, grads_ref, tol, bias_gradient_is_zero=True)
    for k in moving:
        np.testing.assert_allclose(moving[k], moving_ref[k], **tol)


@pytest.mark.parametrize("channels", [2, 8])         # im2col, Winograd
@pytest.mark.parametrize("threads", [2, 3])
def test_the_block_split_over_threads_equals_the_layers_on_the_whole_batch(rng, threads, channels):
    m = model(np.float64, channels)
    x, labels = rng.standard_normal((11, 9, 8, channels)), rng.integers(0, 3, 11)
    start = {k: v.copy() for k, v in m.layers[1].state.items()}
    logits_ref, loss_ref = Plan(m.layers, SoftmaxCrossEntropy(), fast=False).loss_and_gradients(x, labels)
    grads_ref = {(layer.name, k): g.copy() for layer in m.layers for k, g in layer.grads.items()}
    moving_ref = {k: v.copy() for k, v in m.layers[1].state.items()}
    for k, v in start.items():
        m.layers[1].state[k][...] = v
    with DataParallel(m, threads) as parallel:
        assert isinstance(parallel.plans[-1].steps[0], ConvBatchNormReLUMaxPool)
        logits, loss = parallel.train_step(x, labels)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-11)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for layer in m.layers:
        for k, g in layer.grads.items():
            np.testing.assert_allclose(g, grads_ref[(layer.name, k)], rtol=1e-9, atol=1e-13)
    for k, v in m.layers[1].state.items():
        np.testing.assert_allclose(v, moving_ref[k], rtol=1e-12)


@pytest.mark.parametrize("channels", [1, 3, 8])      # Winograd, im2col, Winograd with dx
def test_a_model_with_the_block_passes_a_gradient_check(rng, channels):
    """All but the convolution's bias, whose true gradient is 0 (BatchNormalization subtracts
    the mean right after it): there both gradients are rounding noise, and their relative error
    means nothing, for the four layers as for the block. Its gradient must be 0, up to rounding."""
    m = model("float64", channels)
    assert isinstance(m.plan().steps[0], ConvBatchNormReLUMaxPool)
    x, y = rng.standard_normal((3, 9, 8, channels)), np.array([0, 2, 1])
    errors = check_model(m, x, y)
    if channels == 8:
        # With eight channels, the worst element of dL/dx is one near 0, where a step of 1e-5
        # measures the loss's float64 rounding more than the gradient: its error grows as the step
        # shrinks (7e-5 at 1e-5, 7e-4 at 1e-6; im2col's path 1e-5 and 2e-4). At 1e-3 it is 1.4e-6
        # (im2col's 8.5e-7). A wrong dx gives errors near 1; the block's dx equals the layers'
        # to 1e-11 in test_the_block_equals_the_four_layers.
        assert check_model(m, x, y, h=1e-3)["x"] < 1e-5
        del errors["x"]
    del errors["conv2d/bias"]
    assert max(errors.values()) < 1e-6, errors
    assert np.abs(m.layers[0].grads["bias"]).max() < 1e-14


def test_only_that_order_is_fused():
    def kinds(layers):
        return [type(s).__name__ for s in plan.logit_steps(Sequential(layers, input_shape=(12, 12, 1)).layers)]
    assert kinds([Conv2D(4, 3), BatchNormalization(), ReLU(), MaxPool2D(2), Flatten(), Dense(2)])[0] \
        == "ConvBatchNormReLUMaxPool"
    assert kinds([Conv2D(4, 3, activation="relu"), BatchNormalization(), MaxPool2D(2), Flatten(), Dense(2)])[:3] \
        == ["Conv2DWithoutDx", "BatchNormalization", "MaxPool2D"]
    assert kinds([Conv2D(4, 3), BatchNormalization(), MaxPool2D(2), ReLU(), Flatten(), Dense(2)])[:2] \
        == ["Conv2DWithoutDx", "BatchNormalization"]
