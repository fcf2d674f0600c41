"""Every backward pass, proven against central differences in float64 (max rel. error < 1e-6),
on every available device (the ``device`` fixture: "cpu", and "gpu" when CuPy has a CUDA device)."""

import numpy as np
import pytest

from conftest import seed_model
from tinycnn.gradcheck import check_layer, check_loss, check_model, rel_error
from tinycnn.layers import (AveragePooling2D, Conv2D, Dense, Flatten, GlobalAveragePooling2D, LeakyReLU,
                            MaxPool2D, ReLU, Reshape, Sigmoid, Softmax, Tanh)
from tinycnn.losses import SoftmaxCrossEntropy

TOL = 1e-6


def assert_all_close(errors):
    worst = max(errors.values())
    assert worst < TOL, f"gradient check failed: {errors}"


def distinct_values(rng, shape, spacing=0.01):
    """Distinct values far apart compared with h = 1e-5: no ties for max-pooling."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * spacing).reshape(shape).astype(np.float64)


@pytest.mark.parametrize("kernel_size, strides, padding, shape", [
    (3, 1, "valid", (2, 6, 6, 3)),
    (3, 2, "valid", (2, 7, 7, 2)),
    (3, 1, "same", (2, 5, 5, 2)),
    (3, 2, "same", (2, 6, 5, 2)),
    ((2, 3), 1, "valid", (2, 5, 6, 2)),
    ((3, 2), (2, 1), "same", (1, 5, 4, 3)),   # non-square kernel and stride, batch 1
    (1, 1, "valid", (3, 4, 4, 4)),
])
def test_conv2d(rng, device, kernel_size, strides, padding, shape):
    layer = Conv2D(4, kernel_size, strides=strides, padding=padding, seed=0)
    assert_all_close(check_layer(layer, rng.standard_normal(shape), device=device))
    assert set(layer.grads) == {"kernel", "bias"}


@pytest.mark.parametrize("pool_size, strides, padding, shape", [
    (2, None, "valid", (2, 6, 6, 3)),
    (2, None, "same", (2, 5, 5, 2)),
    (3, 2, "valid", (2, 7, 7, 2)),              # overlapping windows
    (3, 2, "same", (1, 6, 6, 2)),
    ((2, 3), (1, 2), "valid", (2, 5, 7, 2)),
])
def test_maxpool(rng, device, pool_size, strides, padding, shape):
    layer = MaxPool2D(pool_size, strides=strides, padding=padding)
    assert_all_close(check_layer(layer, distinct_values(rng, shape), device=device))


@pytest.mark.parametrize("pool_size, strides, padding, shape", [
    ((2, 2), None, "valid", (2, 6, 6, 3)),
    (2, None, "same", (2, 5, 5, 2)),           # the last row and column: windows of 2 and 1 pixels
    (3, 2, "valid", (2, 7, 7, 2)),              # overlapping windows
    (3, 1, "same", (1, 5, 6, 2)),               # overlapping, every edge window partly padding
    ((2, 3), (1, 2), "valid", (2, 5, 7, 2)),    # non-square window and stride
    ((3, 2), (2, 1), "same", (2, 6, 5, 3)),
])
def test_average_pooling(rng, device, pool_size, strides, padding, shape):
    layer = AveragePooling2D(pool_size, strides=strides, padding=padding)
    assert_all_close(check_layer(layer, rng.standard_normal(shape), device=device))


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling(rng, device, keepdims):
    layer = GlobalAveragePooling2D(keepdims=keepdims)
    assert_all_close(check_layer(layer, rng.standard_normal((2, 5, 4, 3)), device=device))


def test_dense(rng, device):
    assert_all_close(check_layer(Dense(5, seed=0), rng.standard_normal((4, 7)), device=device))


def test_dense_with_relu(rng, device):
    layer = Dense(5, activation="relu", seed=0)
    assert_all_close(check_layer(layer, rng.standard_normal((4, 7)), device=device))


def test_relu_away_from_zero(rng, device):
    x = rng.choice([-1, 1], size=(3, 4, 5)) * rng.uniform(0.1, 1.0, size=(3, 4, 5))
    assert_all_close(check_layer(ReLU(), x, device=device))


@pytest.mark.parametrize("layer", [LeakyReLU(), LeakyReLU(alpha=0.05), Sigmoid(), Tanh()],
                         ids=["leaky_relu", "leaky_relu_0.05", "sigmoid", "tanh"])
def test_activations(rng, device, layer):
    # away from 0, where LeakyReLU has a kink (Sigmoid and Tanh are smooth everywhere)
    x = rng.choice([-1, 1], size=(3, 4, 5)) * rng.uniform(0.1, 2.0, size=(3, 4, 5))
    assert_all_close(check_layer(layer, x, device=device))


@pytest.mark.parametrize("activation", ["leaky_relu", "sigmoid", "tanh"])
def test_dense_with_each_new_activation(rng, device, activation):
    layer = Dense(5, activation=activation, seed=0)
    assert_all_close(check_layer(layer, rng.standard_normal((4, 7)), device=device))


def test_softmax(rng, device):
    assert_all_close(check_layer(Softmax(), rng.standard_normal((4, 6)), device=device))


def test_flatten_and_reshape(rng, device):
    assert_all_close(check_layer(Flatten(), rng.standard_normal((2, 3, 4, 2)), device=device))
    assert_all_close(check_layer(Reshape((6, 4)), rng.standard_normal((2, 3, 4, 2)), device=device))


def test_softmax_cross_entropy(rng, device):
    logits = rng.standard_normal((5, 10))
    labels = rng.integers(0, 10, size=5)
    assert check_loss(SoftmaxCrossEntropy(), logits, labels, device=device) < TOL


#: A whole model's loss goes through thousands of float64 additions, so its central differences
#: carry an absolute noise of about 1e-11 (machine epsilon times the loss, over h, times the
#: rounding of those sums). A sampled entry whose gradient is itself about 1e-6 -- there are
#: some among the 18,432 of the second convolution's kernel -- then shows a relative error of a
#: few 1e-6 with a correct backward, while a wrong one is off by order 1.
MODEL_TOL = 1e-5


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_seed_model_end_to_end(rng, device, fast):
    """The whole Keras MNIST CNN, loss included: dL/dx and samples of every parameter gradient,
    in both modes (fused blocks, or the layers' own code)."""
    model = seed_model(dtype="float64", seed=3)
    model.compile("adam", fast=fast)
    x = rng.uniform(0, 1, size=(2, 28, 28, 1))
    y = np.array([3, 7])
    errors = check_model(model, x, y, samples=40, device=device)
    assert len(errors) == 1 + 8  # x and kernel/bias of four layers
    assert max(errors.values()) < MODEL_TOL, f"gradient check failed: {errors}"


class PermutedDense(Dense):
    """A deliberately wrong backward: it reverses dout along the batch before using it."""

    def backward(self, dout):
        return super().backward(dout[::-1].copy())


def test_checker_catches_a_wrong_backward(rng, device):
    errors = check_layer(PermutedDense(4, seed=0), rng.standard_normal((3, 5)), device=device)
    assert errors["x"] > 1e-2 and errors["kernel"] > 1e-2


def test_rel_error_definition():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    # |1 - 3| / (1 + 3) = 0.5 ; |0 - 0| / max(1e-8, 0) = 0
    assert rel_error([1.0, 0.0], [3.0, 0.0]) == pytest.approx(0.5)
