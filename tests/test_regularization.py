"""BatchNormalization, Dropout, RandomRotation and RandomTranslation: gradients, statistics,
hand-computed warps, the Numba kernel against its NumPy reference, seeding and configs.

The gradient checks and the kernel-against-reference tests run on every available device (the
``device`` fixture: "cpu", and "gpu" when CuPy has a CUDA device)."""

import json

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.backend import device_of, to_device, to_numpy
from tinycnn.gradcheck import check_layer
from tinycnn.kernels.affine import (affine_sample, affine_sample_backward, affine_sample_backward_reference,
                                    affine_sample_reference)
from tinycnn.layers.augmentation import (RandomRotation, RandomTranslation, rotation_transforms,
                                         translation_transforms)
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.normalization import BatchNormalization, channel_sums

TOL = 1e-6


def assert_all_close(errors):
    worst = max(errors.values())
    assert worst < TOL, f"gradient check failed: {errors}"


def built_batchnorm(rng, shape):
    """A float64 BatchNormalization with random (non-trivial) gamma and beta."""
    layer = BatchNormalization()
    layer.build(shape[1:], "float64")
    c = shape[-1]
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    layer.params["beta"][...] = rng.standard_normal(c)
    return layer


# ---------------------------------------------------------------------------------------------
# Gradient checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (6, 5)])
def test_batchnorm_gradients_in_training(rng, device, shape):
    layer = built_batchnorm(rng, shape)
    errors = check_layer(layer, rng.normal(1.0, 2.0, shape), device=device)
    assert set(errors) == {"x", "gamma", "beta"}
    assert_all_close(errors)


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (6, 5)])
def test_batchnorm_gradients_in_inference(rng, device, shape):
    layer = built_batchnorm(rng, shape)
    layer.state["moving_mean"][...] = rng.standard_normal(shape[-1])
    layer.state["moving_variance"][...] = rng.uniform(0.5, 2.0, shape[-1])
    assert_all_close(check_layer(layer, rng.standard_normal(shape), training=False, device=device))


class BatchNormIgnoringBatchStatistics(BatchNormalization):
    """A deliberately wrong backward: it treats the batch mean and variance as constants."""

    def backward(self, dout):
        super().backward(dout)
        return dout * self.params["gamma"] * self.inv_std


def test_checker_catches_a_batchnorm_backward_that_forgets_the_statistics(rng, device):
    layer = BatchNormIgnoringBatchStatistics()
    errors = check_layer(layer, rng.standard_normal((6, 5)), device=device)
    assert errors["x"] > 1e-2


def test_dropout_gradient_with_a_fixed_mask(rng, device):
    x = rng.standard_normal((4, 3, 3, 2))
    layer = Dropout(0.4, seed=0)
    layer.fixed_mask = rng.random(x.shape) >= 0.4
    errors = check_layer(layer, x, device=device)
    assert_all_close(errors)
    dx = layer.backward(to_device(np.ones_like(x), device))
    assert device_of(dx) == device
    np.testing.assert_allclose(to_numpy(dx), layer.fixed_mask / 0.6)   # dropped units pass no gradient


@pytest.mark.parametrize("layer", [
    RandomRotation((0.1, 0.1), fill_value=0.3),                     # lo == hi: a fixed angle
    RandomTranslation((0.13, 0.13), (-0.21, -0.21), fill_value=-1.0),
])
def test_augmentation_gradient(rng, device, layer):
    """With lo == hi the transform is the same on every forward, so x -> y is a fixed linear map."""
    assert_all_close(check_layer(layer, rng.standard_normal((2, 5, 6, 2)), device=device))


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------

def test_dropout_keeps_one_minus_rate_and_scales_them(rng):
    x = rng.uniform(1.0, 2.0, size=(500, 2000))       # 10^6 units, none of them 0
    y = Dropout(0.3, seed=1).forward(x, training=True)
    kept = y != 0
    # the kept fraction has standard deviation sqrt(0.3 * 0.7 / 1e6) = 4.6e-4: allow 6 of them
    assert abs(kept.mean() - 0.7) < 3e-3
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-12)
    assert abs(y.mean() - x.mean()) < 0.01 * x.mean()


def test_dropout_is_the_identity_at_inference(rng):
    x = rng.standard_normal((8, 10))
    layer = Dropout(0.5, seed=0)
    assert layer.forward(x) is x
    dout = rng.standard_normal(x.shape)
    assert layer.backward(dout) is dout


def test_dropout_same_seed_same_mask(rng):
    x = rng.standard_normal((16, 32)) + 5.0
    a, b, c = Dropout(0.5, seed=7), Dropout(0.5, seed=7), Dropout(0.5, seed=8)
    ya = a.forward(x, training=True)
    np.testing.assert_array_equal(ya, b.forward(x, training=True))
    assert not np.array_equal(ya, c.forward(x, training=True))
    assert not np.array_equal(ya, a.forward(x, training=True))     # a new mask every batch


def test_dropout_uses_the_model_seed():
    x = np.ones((4, 50), dtype=np.float32)

    def run(seed):
        model = Sequential([Dropout(0.5)], input_shape=(50,), seed=seed)
        return model.forward(x, training=True)

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    assert run(0).dtype == np.float32


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_rate_must_be_in_0_1(rate):
    with pytest.raises(ValueError, match="rate"):
        Dropout(rate)


# ---------------------------------------------------------------------------------------------
# BatchNormalization
# ---------------------------------------------------------------------------------------------

def test_batchnorm_training_output_is_standardised(rng):
    x = rng.normal(3.0, 2.0, size=(16, 5, 5, 4))
    layer = BatchNormalization()
    y = layer.forward(x, training=True)
    axes = (0, 1, 2)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-12)
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.var(axis=axes), var / (var + 1e-3), rtol=1e-12)  # ~1, eps aside


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (7, 3)])
def test_channel_sums_are_the_sums_over_every_axis_but_the_last(rng, shape):
    a = rng.standard_normal(shape)
    np.testing.assert_allclose(channel_sums(a), a.sum(axis=tuple(range(a.ndim - 1))), rtol=1e-12)
    np.testing.assert_allclose(channel_sums(a[::2]), a[::2].sum(axis=tuple(range(a.ndim - 1))), rtol=1e-12)


def test_batchnorm_float32_statistics_survive_a_large_mean(rng):
    # mean 1000, std 1: E[x^2] - E[x]^2 in float32 would cancel to garbage; two passes do not
    x = rng.normal(1000.0, 1.0, size=(32, 8, 8, 4)).astype(np.float32)
    y = BatchNormalization(epsilon=1e-5).forward(x, training=True)
    np.testing.assert_allclose(y.astype(np.float64).std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_batchnorm_moving_averages_by_hand():
    x = np.array([[1.0, 2.0],
                  [3.0, 6.0],
                  [5.0, 10.0],
                  [7.0, 2.0]])
    # column means 4 and 5; biased variances (9+1+1+9)/4 = 5 and (9+1+25+9)/4 = 11
    layer = BatchNormalization(momentum=0.9)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.state["moving_mean"], [0.4, 0.5])        # 0.9*0 + 0.1*(4, 5)
    np.testing.assert_allclose(layer.state["moving_variance"], [1.4, 2.0])    # 0.9*1 + 0.1*(5, 11)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.state["moving_mean"], [0.76, 0.95])      # 0.9*0.4 + 0.4 ...
    np.testing.assert_allclose(layer.state["moving_variance"], [1.76, 2.9])   # 0.9*1.4 + 0.5 ...
    # inference uses the moving averages: (1 - 0.76) / sqrt(1.76 + 0.001) for x[0, 0]
    y = layer.forward(x, training=False)
    assert y[0, 0] == pytest.approx((1 - 0.76) / np.sqrt(1.761))
    np.testing.assert_allclose(layer.state["moving_mean"], [0.76, 0.95])      # unchanged


def test_batchnorm_inference_does_not_depend_on_the_batch(rng):
    layer = BatchNormalization(momentum=0.5)
    for _ in range(3):
        layer.forward(rng.normal(2.0, 3.0, size=(8, 4, 4, 3)), training=True)
    batch = rng.normal(2.0, 3.0, size=(5, 4, 4, 3))
    together = layer.forward(batch, training=False)
    for i in range(len(batch)):
        np.testing.assert_array_equal(layer.forward(batch[i:i + 1], training=False)[0], together[i])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_keeps_float32(rng, training):
    # NumPy float64 hyperparameters: a float64 scalar times a float32 array is float64 in NumPy 2
    layer = BatchNormalization(momentum=np.float64(0.9), epsilon=np.float64(1e-3))
    x = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    y = layer.forward(x, training=training)
    dx = layer.backward(np.ones_like(y))
    arrays = [y, dx, *layer.params.values(), *layer.grads.values(), *layer.state.values()]
    assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]


def test_batchnorm_counts_moving_averages_as_non_trainable():
    layer = BatchNormalization()
    layer.build((6, 6, 32), "float32")
    assert layer.count_params() == 128
    assert sum(p.size for p in layer.params.values()) == 64


# ---------------------------------------------------------------------------------------------
# Augmentation: hand-made cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [RandomRotation(0.3, seed=0), RandomTranslation(0.2, 0.2, seed=0)])
def test_augmentation_is_the_identity_at_inference(rng, layer):
    x = rng.standard_normal((3, 5, 5, 2))
    assert layer.forward(x) is x
    assert layer.forward(x, training=False) is x


@pytest.mark.parametrize("size", [3, 4])
def test_quarter_turn_is_rot90_counter_clockwise(size):
    """factor=(0.25, 0.25) is +90°: np.rot90, which turns row 0 into the left column.

    For 3x3:  0 1 2        2 5 8
              3 4 5   ->   1 4 7     (the top row, read right to left, becomes the left column)
              6 7 8        0 3 6
    """
    x = np.arange(2 * size * size, dtype=np.float64).reshape(1, size, size, 2)
    y = RandomRotation((0.25, 0.25)).forward(x, training=True)
    np.testing.assert_allclose(y, np.rot90(x, k=1, axes=(1, 2)), atol=1e-12)
    if size == 3:
        np.testing.assert_allclose(y[0, :, :, 0], [[4, 10, 16], [2, 8, 14], [0, 6, 12]], atol=1e-12)
    y = RandomRotation((-0.25, -0.25)).forward(x, training=True)       # clockwise
    np.testing.assert_allclose(y, np.rot90(x, k=-1, axes=(1, 2)), atol=1e-12)


def test_rotation_by_45_degrees_by_hand():
    """A one-pixel dot at the centre of a 3x3 image, turned by 45°.

    The pixel right of the centre, (row 1, col 2), is 1 unit from the centre; it reads the input
    at sx = 1 + cos45 = 1.7071, sy = 1 + sin45 = 1.7071, between rows/cols 1 and 2, so the centre
    gets the weight (1 - 0.7071)² = 0.0858; by symmetry so do its other three neighbours. The
    corners read points √2 = 1.414 from the centre along an axis, e.g. (row 0, col 0) reads
    (sy, sx) = (-0.414, 1): 0.414 of row -1 (outside: fill) and 0.586 of input (0, 1) = 0.
    """
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 1.0
    a = (1 - np.sqrt(0.5)) ** 2
    y = RandomRotation((0.125, 0.125)).forward(x, training=True)
    np.testing.assert_allclose(y[0, :, :, 0], [[0, a, 0], [a, 1, a], [0, a, 0]], atol=1e-12)
    # with fill_value=1 the corners are 0.414 = sqrt(2) - 1 fill; the centre stays 1
    y = RandomRotation((0.125, 0.125), fill_value=1.0).forward(x, training=True)
    f = np.sqrt(2) - 1
    np.testing.assert_allclose(y[0, :, :, 0], [[f, a, f], [a, 1, a], [f, a, f]], atol=1e-12)


def test_half_pixel_translation_by_hand():
    """Shift right by 0.5 px: out[c] = 0.5 * in[c - 1] + 0.5 * in[c], in[-1] being the fill (2).

    in = 0 2 4 8  ->  out = 0.5*2+0.5*0, 0.5*0+0.5*2, 0.5*2+0.5*4, 0.5*4+0.5*8 = 1 1 3 6
    """
    x = np.array([0.0, 2.0, 4.0, 8.0]).reshape(1, 1, 4, 1)
    layer = RandomTranslation((0.0, 0.0), (0.125, 0.125), fill_value=2.0)   # 0.125 * W = 0.5 px
    np.testing.assert_allclose(layer.forward(x, training=True).ravel(), [1, 1, 3, 6])


def test_integer_translation_is_a_shifted_array_with_fill(rng):
    x = rng.standard_normal((2, 4, 4, 3))
    # height 0.25 * 4 = 1 row down, width -0.5 * 4 = 2 columns left
    layer = RandomTranslation((0.25, 0.25), (-0.5, -0.5), fill_value=-7.0)
    expected = np.full_like(x, -7.0)
    expected[:, 1:, :2] = x[:, :-1, 2:]
    np.testing.assert_allclose(layer.forward(x, training=True), expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Augmentation: the kernel, the adjoint, randomness
# ---------------------------------------------------------------------------------------------

def random_transforms(rng, n, h, w):
    """Rotations plus translations of up to half the image: many points fall outside."""
    rot = rotation_transforms(rng.uniform(-np.pi, np.pi, n), h, w)
    rot[:, 2] += rng.uniform(-w / 2, w / 2, n)
    rot[:, 5] += rng.uniform(-h / 2, h / 2, n)
    return rot


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_warp_equals_the_numpy_reference(rng, device, dtype):
    x = rng.standard_normal((4, 7, 9, 3)).astype(dtype)
    t = random_transforms(rng, 4, 7, 9)
    y = affine_sample(to_device(x, device), t, 0.5)
    assert y.dtype == dtype and device_of(y) == device
    np.testing.assert_allclose(to_numpy(y), affine_sample_reference(x, t, 0.5), rtol=1e-6, atol=1e-6)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = affine_sample_backward(to_device(dout, device), t)
    assert dx.dtype == dtype and device_of(dx) == device
    np.testing.assert_allclose(to_numpy(dx), affine_sample_backward_reference(dout, t), rtol=1e-5, atol=1e-6)


def test_warp_backward_is_the_adjoint(rng, device):
    """<A x, g> == <x, A^T g> for random transforms (fill 0: then the warp is linear)."""
    x = rng.standard_normal((3, 6, 5, 2))
    g = rng.standard_normal(x.shape)
    t = random_transforms(rng, 3, 6, 5)
    xd, gd = to_device(x, device), to_device(g, device)
    lhs = float((affine_sample(xd, t, 0.0) * gd).sum())
    assert lhs == pytest.approx(float((xd * affine_sample_backward(gd, t)).sum()), rel=1e-10)
    assert lhs == pytest.approx(np.sum(x * affine_sample_backward_reference(g, t)), rel=1e-10)


def test_layer_backward_uses_the_transforms_of_its_forward(rng):
    x = rng.standard_normal((3, 5, 5, 1))
    layer = RandomRotation(0.5, seed=4)
    layer.forward(x, training=True)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(g), affine_sample_backward_reference(g, layer.transforms))


@pytest.mark.parametrize("make", [lambda s: RandomRotation(0.2, seed=s),
                                  lambda s: RandomTranslation(0.2, (-0.1, 0.3), seed=s)])
def test_augmentation_seeded_reproducibility(rng, make):
    x = rng.standard_normal((4, 6, 6, 2))
    y = make(3).forward(x, training=True)
    np.testing.assert_array_equal(y, make(3).forward(x, training=True))
    assert not np.array_equal(y, make(4).forward(x, training=True))


@pytest.mark.parametrize("layer", [RandomRotation(0.5, seed=0), RandomTranslation(0.3, 0.3, seed=0)])
def test_every_image_gets_its_own_transform(rng, layer):
    n = 6
    x = np.repeat(rng.standard_normal((1, 6, 6, 1)), n, axis=0)       # n copies of one image
    y = layer.forward(x, training=True)
    assert len({tuple(t) for t in layer.transforms}) == n
    for i in range(n):
        for j in range(i + 1, n):
            assert not np.allclose(y[i], y[j]), f"images {i} and {j} got the same transform"


def test_augmentation_keeps_float32(rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    for layer in (RandomRotation(0.2, seed=0), RandomTranslation(0.2, 0.2, seed=0)):
        y = layer.forward(x, training=True)
        assert y.dtype == np.float32 and layer.backward(y).dtype == np.float32


def test_bad_factors_are_refused():
    with pytest.raises(ValueError, match="lower bound"):
        RandomRotation((0.3, 0.1))
    with pytest.raises(ValueError, match=">= 0"):
        RandomRotation(-0.1)
    with pytest.raises(ValueError, match="height_factor"):
        RandomTranslation(1.5, 0.1)
    with pytest.raises(ValueError, match="images"):
        RandomRotation(0.1).forward(np.zeros((2, 5)), training=True)


def test_translation_factor_semantics():
    """A float f draws shifts in [-f*H, f*H]: with f = 0.5 on H = 8 every |shift| <= 4 px."""
    layer = RandomTranslation(0.5, (0.0, 0.25), seed=0)
    layer.forward(np.zeros((200, 8, 4, 1)), training=True)
    dy, dx = -layer.transforms[:, 5], -layer.transforms[:, 2]
    assert dy.min() < -3 and dy.max() > 3 and np.all(np.abs(dy) <= 4)
    assert dx.min() >= 0 and dx.max() <= 1 and dx.max() > 0.9


# ---------------------------------------------------------------------------------------------
# Configs and shapes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn"),
    Dropout(0.25, seed=3),
    RandomRotation((-0.1, 0.2), fill_value=0.5, seed=1),
    RandomRotation(0.1),
    RandomTranslation(0.1, (-0.2, 0.3), fill_value=-1.0, seed=2, name="shift"),
])
def test_config_round_trip(layer):
    config = layer.get_config()
    config = json.loads(json.dumps(config))            # what save/load does to it
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == layer.get_config()
    assert rebuilt.name == layer.name
    assert layer.output_shape((5, 5, 3)) == (5, 5, 3)


def test_rebuilt_augmentation_draws_the_same_transforms(rng):
    x = rng.standard_normal((3, 5, 5, 1))
    layer = RandomTranslation(0.2, 0.2, seed=5)
    rebuilt = RandomTranslation.from_config(layer.get_config())
    np.testing.assert_array_equal(layer.forward(x, training=True), rebuilt.forward(x, training=True))


def test_transform_helpers_agree_with_each_other():
    """A zero rotation and a zero translation are both the identity matrix [1, 0, 0, 0, 1, 0]."""
    np.testing.assert_allclose(rotation_transforms([0.0], 5, 7), [[1, 0, 0, 0, 1, 0]], atol=1e-15)
    np.testing.assert_array_equal(translation_transforms([0.0], [0.0]), [[1, 0, 0, 0, 1, 0]])
