"""NaN and inf go through the fast paths exactly as through the layers they replace.

A NaN or an infinite weight must reach the loss the same way whichever path runs: otherwise
``evaluate`` (fused blocks) could report an ordinary loss for a model whose ``predict`` is all NaN.
The rules, the layers' own (NumPy's): ReLU keeps NaN (max(NaN, 0) is NaN) and maps -inf to 0; a
max-pool window holding a NaN has NaN as its maximum, the first NaN in reading order its argmax.
"""

import numpy as np
import pytest

from conftest import seed_model
from tinycnn.kernels import bias_relu_pool as fused_kernels
from tinycnn.kernels import pooling, winograd
from tinycnn.layers import ReLU

SPECIAL = [np.nan, np.inf, -np.inf]


def test_relu_keeps_nan_and_maps_minus_inf_to_zero():
    x = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 2.0]])
    relu = ReLU()
    np.testing.assert_array_equal(relu.forward(x), [[np.nan, np.inf, 0.0, 0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]])


def with_specials(rng, shape, dtype):
    """Random values with NaN, inf and -inf at random places, first and later in windows."""
    z = rng.standard_normal(shape).astype(dtype)
    flat = z.reshape(-1)
    where = rng.choice(flat.size, size=flat.size // 5, replace=False)
    flat[where] = rng.choice(SPECIAL, size=where.size)
    return z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool, stride", [(2, 2), (3, 2)])
def test_maxpool_kernel_treats_nan_as_its_reference_does(rng, dtype, pool, stride):
    x = with_specials(rng, (3, 8, 8, 4), dtype)
    y_ref, arg_ref = pooling.maxpool_forward_reference(x, pool, pool, (stride, stride), (0, 0, 0, 0))
    y, arg = pooling.maxpool_forward(x, pool, pool, (stride, stride), (0, 0, 0, 0))
    assert np.isnan(y_ref).any() and np.isinf(y_ref).any()
    np.testing.assert_array_equal(y, y_ref)                   # NaN where the reference has NaN
    np.testing.assert_array_equal(arg, arg_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_bias_relu_pool_treats_nan_and_inf_as_the_layers_do(rng, dtype):
    z = with_specials(rng, (3, 8, 8, 4), dtype)
    bias = rng.standard_normal(4).astype(dtype)
    y_ref, arg_ref = fused_kernels.bias_relu_maxpool_forward_reference(z, bias, 2, 2, (2, 2), (0, 0, 0, 0))
    y, arg = fused_kernels.bias_relu_maxpool_forward(z, bias, 2, 2, (2, 2), (0, 0, 0, 0))
    assert np.isnan(y_ref).any() and np.isinf(y_ref).any()
    np.testing.assert_array_equal(y, y_ref)
    live = ~(y_ref <= 0)                                       # positive or NaN: argmax matters
    np.testing.assert_array_equal(arg[live], arg_ref[live])


@pytest.mark.parametrize("channels", [1, 8])
def test_winograd_lets_a_nan_through_as_the_layers_do(rng, channels):
    """One NaN input pixel: every pooled output whose window reads it is NaN in both."""
    x = rng.standard_normal((2, 10, 10, channels))
    x[0, 4, 5, 0] = np.nan
    kernel = rng.standard_normal((3, 3, channels, 5))
    bias = rng.standard_normal(5)
    from tinycnn.kernels.im2col import im2col_reference
    z = (im2col_reference(x, 3, 3, (1, 1), (0, 0, 0, 0)) @ kernel.reshape(-1, 5)).reshape(2, 8, 8, 5)
    y_ref, _ = fused_kernels.bias_relu_maxpool_forward_reference(z, bias, 2, 2, (2, 2), (0, 0, 0, 0))
    y, _, _, _ = winograd.forward(x, kernel, bias, (0, 0, 0, 0), (8, 8))
    assert np.isnan(y_ref).sum() > 0
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("where", [0, 2], ids=["first conv", "second conv"])
def test_evaluate_predict_and_the_reference_mode_agree_on_a_non_finite_weight(bad, where):
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)
    results = {}
    for fast in (True, False):
        model = seed_model()
        model.compile("adam", fast=fast)
        model.layers[where].params["kernel"][1, 1, 0, 3] = bad
        loss, _ = model.evaluate(x, y)
        results[fast] = loss, model.predict(x)
    (loss_fast, p_fast), (loss_ref, p_ref) = results[True], results[False]
    assert not np.isfinite(loss_fast) and not np.isfinite(loss_ref)
    np.testing.assert_array_equal(np.isnan(p_fast), np.isnan(p_ref))
    assert np.isnan(p_fast).any()
