"""Every activation's value and gradient where its formula changes, as its docstring promises.

Finite differences cannot check a gradient at a kink (they average the two sides), and random
inputs never land on exactly 0, so ``tests/test_gradients.py`` cannot see these points. Each
value below is what ``layers/activations.py`` says, at the exact point:

- ReLU: max(x, 0); the gradient is 1 where x > 0 and 0 elsewhere, 0 at exactly 0 (as PyTorch
  and TensorFlow); NaN stays NaN, -inf gives 0.
- LeakyReLU: x where x > 0, alpha * x elsewhere; the gradient is alpha at 0.
- Sigmoid: 1/2 at 0 with its largest gradient, 1/4; exp(-x) overflowing still gives the right
  0, without a warning.
- Tanh: 0 at 0 with gradient 1; +-1 far out with gradient 0.
- Softmax: rows of probabilities, the same for logits shifted by a constant, finite for logits
  of 1000.

And ReLU at exactly 0 on the fast path: a Conv2D whose output is exactly 0 sends no gradient
through the fused Conv2D → ReLU → MaxPool2D block, on both of its paths, as the ReLU layer does.
"""

import warnings

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.layers import Conv2D, Dense, Flatten, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.plan import Plan

DTYPES = [np.float32, np.float64]
INF = np.inf


def value_and_gradient(layer, x):
    """(y, dy/dx) entry by entry: forward, then backward of ones."""
    x = np.asarray(x)
    y = layer.forward(x[None, :], training=True)
    return y[0], layer.backward(np.ones_like(y))[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_at_zero_and_beyond(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([-INF, -1, -tiny, -0.0, 0.0, tiny, 1, INF], dtype=dtype)
    y, dy = value_and_gradient(ReLU(), x)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 0, tiny, 1, INF])
    np.testing.assert_array_equal(dy, [0, 0, 0, 0, 0, 1, 1, 1])
    assert y.dtype == dtype and dy.dtype == dtype


def test_relu_keeps_nan():
    y, _ = value_and_gradient(ReLU(), np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(y[0]) and list(y[1:]) == [0.0, 2.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.3, 0.01])
def test_leaky_relu_at_zero_and_beyond(dtype, alpha):
    a = dtype(alpha)
    tiny = np.finfo(dtype).tiny
    x = np.array([-INF, -2, -tiny, -0.0, 0.0, tiny, 2, INF], dtype=dtype)
    y, dy = value_and_gradient(LeakyReLU(alpha), x)
    np.testing.assert_array_equal(y, [-INF, -2 * a, -tiny * a, 0, 0, tiny, 2, INF])
    np.testing.assert_array_equal(dy, [a, a, a, a, a, 1, 1, 1])
    assert LeakyReLU().alpha == 0.3                       # Keras's default


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_at_zero_and_far_out(dtype):
    big = 1000.0 if dtype == np.float64 else 100.0        # exp(-big) overflows: 1 / (1 + inf) = 0
    x = np.array([-big, -2.0, 0.0, 2.0, big], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # the overflow is silenced, not reported
        y, dy = value_and_gradient(Sigmoid(), x)
    assert y[2] == 0.5 and dy[2] == 0.25
    assert y[0] == 0 and dy[0] == 0 and y[-1] == 1 and dy[-1] == 0
    assert y[1] == pytest.approx(1 / (1 + np.exp(2.0)), rel=1e-6)
    assert y[1] + y[3] == pytest.approx(1.0, rel=1e-6)     # sigmoid(-x) = 1 - sigmoid(x)
    assert dy[1] == pytest.approx(y[1] * (1 - y[1]), rel=1e-6) and dy[1] == pytest.approx(dy[3], rel=1e-6)
    assert (dy <= 0.25).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_at_zero_and_far_out(dtype):
    x = np.array([-50.0, -0.5, 0.0, 0.5, 50.0], dtype=dtype)
    y, dy = value_and_gradient(Tanh(), x)
    np.testing.assert_array_equal(y[[0, 2, 4]], [-1, 0, 1])
    np.testing.assert_array_equal(dy[[0, 2, 4]], [0, 1, 0])
    assert y[3] == pytest.approx(np.tanh(0.5), rel=1e-6) and y[1] == -y[3]
    assert dy[3] == pytest.approx(1 - np.tanh(0.5) ** 2, rel=1e-6) and dy[1] == dy[3]


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_and_large_logits(dtype):
    x = np.array([[0.0, 0.0, 0.0, 0.0], [1000.0, 0.0, -1000.0, 1000.0], [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    layer = Softmax()
    y = layer.forward(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[0], 0.25, rtol=1e-6)
    np.testing.assert_allclose(y[1], [0.5, 0, 0, 0.5], atol=1e-7)
    np.testing.assert_allclose(layer.forward(x[2:] + 500.0), y[2:], rtol=1e-5)
    e = np.exp(x[2] - x[2].max())
    np.testing.assert_allclose(y[2], e / e.sum(), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_gradient_is_its_jacobian(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(dtype)
    dout = rng.standard_normal((3, 5)).astype(dtype)
    layer = Softmax()
    y = layer.forward(x)
    dx = layer.backward(dout)
    for n in range(3):
        jacobian = np.diag(y[n]) - np.outer(y[n], y[n])        # dy_i/dx_j = y_i (δ_ij - y_j)
        np.testing.assert_allclose(dx[n], jacobian.T @ dout[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])       # 1: the Winograd block; 3: the im2col block
@pytest.mark.parametrize("bias", [0.0, -1.0])
def test_relu_at_zero_sends_no_gradient_on_the_fused_path(channels, bias):
    """A convolution whose kernel is zero outputs exactly its bias: 0 (the kink) or -1. Either
    way ReLU passes no gradient, so the Conv2D gets none, in the fused block as in the layers."""
    model = Sequential([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3)], seed=0)
    model.build((8, 8, channels), "float64")
    conv = model.layers[0]
    conv.params["kernel"][...] = 0
    conv.params["bias"][...] = bias
    x = np.random.default_rng(0).standard_normal((2, 8, 8, channels))
    y = np.array([0, 2])
    for fast in (True, False):
        plan = Plan(model.layers, SoftmaxCrossEntropy(), fast=fast)
        assert (type(plan.steps[0]).__name__ == "ConvReLUMaxPool") is fast
        plan.loss_and_gradients(x, y)
        np.testing.assert_array_equal(conv.grads["kernel"], 0, err_msg=f"fast={fast}")
        np.testing.assert_array_equal(conv.grads["bias"], 0, err_msg=f"fast={fast}")
        assert np.abs(model.layers[-1].grads["bias"]).sum() > 0          # a gradient did reach Dense
