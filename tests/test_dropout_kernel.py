"""Dropout's one-pass kernel (``kernels/dropout.py``) and the twin the fast mode runs
(``layers/fused.OnePassDropout``) draw the layer's own masks and compute its own y and scale, bit
for bit: the layer (``layers/dropout.py``, NumPy's Philox) is the reference."""

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.kernels.dropout import dropout_forward
from tinycnn.layers import Dense, Dropout, Flatten
from tinycnn.layers.fused import OnePassDropout
from tinycnn.plan import Plan


def built(rate, shape, dtype, seed=3):
    layer = Dropout(rate, seed=seed)
    layer.build(shape[1:], dtype)
    return layer


def the_layers(layer, x, batch, first_sample):
    """The layer's own forward for samples first_sample ... of batch ``batch``: (y, scale)."""
    layer.position = (batch, first_sample)
    y = layer.forward(x, training=True)
    layer.position = None
    return y, layer.scale


# Units a multiple of 4 and not (the last counter's numbers are partly used), one sample, a
# sample past the first, both dtypes, rates near both ends.
CASES = [((16, 5, 5, 64), 0, 0.25, "float32"), ((16, 128), 16, 0.5, "float32"), ((7, 3, 5), 3, 0.3, "float64"),
         ((1, 1), 0, 0.9, "float32"), ((5, 6), 1000, 0.1, "float64"), ((9, 2, 3, 1), 2, 0.05, "float32")]


@pytest.mark.parametrize("shape, first_sample, rate, dtype", CASES)
def test_the_kernel_draws_the_layers_mask_and_computes_its_y(rng, shape, first_sample, rate, dtype):
    layer = built(rate, shape, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    batch = int(rng.integers(1, 10_000))
    y, scale = dropout_forward(x, layer._key, batch, first_sample, rate)
    want_y, want_scale = the_layers(layer, x, batch, first_sample)
    assert y.dtype == scale.dtype == np.dtype(dtype) and y.shape == scale.shape == shape
    np.testing.assert_array_equal(scale, want_scale)
    np.testing.assert_array_equal(y, want_y)
    assert 0 < np.count_nonzero(scale) < scale.size or scale.size < 10       # it drops, and keeps


def test_the_kernels_masks_keep_one_minus_rate_and_differ_by_batch_and_sample(rng):
    """Worked out by hand: 1 - rate of the units kept (4000 units: within 4 standard deviations),
    each kept one scaled by exactly 1 / (1 - rate); another batch or another first sample draws
    another mask."""
    x = np.ones((10, 400), dtype=np.float32)
    _, scale = dropout_forward(x, 12345, 0, 0, 0.25)
    kept = np.count_nonzero(scale)
    assert abs(kept - 3000) < 4 * np.sqrt(4000 * 0.25 * 0.75)
    assert set(np.unique(scale)) == {np.float32(0), np.float32(1 / 0.75)}
    assert not np.array_equal(dropout_forward(x, 12345, 1, 0, 0.25)[1], scale)
    assert not np.array_equal(dropout_forward(x, 12345, 0, 1, 0.25)[1], scale)
    np.testing.assert_array_equal(dropout_forward(x[:9], 12345, 0, 1, 0.25)[1], scale[1:])   # sample 1 is sample 1


def test_the_kernel_passes_nan_and_inf_as_the_layer_does():
    x = np.array([[np.nan, np.inf, -np.inf, -0.0, 1.0] * 20], dtype=np.float32)
    layer = built(0.5, x.shape, "float32")
    y, scale = dropout_forward(x, layer._key, 4, 0, 0.5)
    with np.errstate(invalid="ignore"):                 # inf * 0, in NumPy's multiply
        want_y, _ = the_layers(layer, x, 4, 0)
    np.testing.assert_array_equal(y, want_y)            # NaN where both are NaN, signs of zeros aside
    assert np.array_equal(np.signbit(y), np.signbit(want_y))


def test_the_fast_mode_runs_the_twin_and_it_equals_the_layer(rng):
    """Training forwards through the fast plan and the reference plan of one model draw the same
    masks, batch after batch, and both count the batches; backward is the layer's; inference and a
    fixed mask run the layer's own code."""
    model = Sequential([Flatten(), Dense(12), Dropout(0.5), Dense(3)], input_shape=(4, 5), seed=0)
    fast, reference = Plan(model.layers, fast=True), Plan(model.layers, fast=False)
    twin = fast.steps[2]
    assert isinstance(twin, OnePassDropout) and twin.layer is model.layers[2]
    assert reference.steps[2] is model.layers[2]
    x = rng.standard_normal((6, 4, 5)).astype(np.float32)
    layer = model.layers[2]
    for batch in range(3):
        y_fast = fast.forward(x, training=True)
        scale_fast = layer.scale
        layer.batches -= 1                  # the same batch again, by the layer's own code
        y_ref = reference.forward(x, training=True)
        np.testing.assert_array_equal(y_fast, y_ref)
        np.testing.assert_array_equal(scale_fast, layer.scale)
        assert layer.batches == batch + 1
    dout = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_array_equal(fast.backward(dout, stop=1), reference.backward(dout, stop=1))
    np.testing.assert_array_equal(fast.forward(x), reference.forward(x))       # inference: no dropout
    layer.fixed_mask = np.ones((6, 12), dtype=bool)
    np.testing.assert_array_equal(fast.forward(x, training=True), reference.forward(x, training=True))


@pytest.mark.parametrize("chunks", [[6], [2, 4], [1, 2, 3]])
def test_the_twin_split_in_chunks_draws_the_whole_batchs_masks(rng, chunks):
    """As DataParallel runs it: each chunk told where it starts (``position``) draws those samples'
    masks of the whole batch, and counts nothing."""
    layer = built(0.4, (6, 3, 7), "float32")
    x = rng.standard_normal((6, 3, 7)).astype(np.float32)
    whole_y, whole_scale = the_layers(layer, x, 9, 0)
    twin, start, ys, scales = OnePassDropout(layer), 0, [], []
    for size in chunks:
        layer.position = (9, start)
        ys.append(twin.forward(x[start:start + size], training=True))
        scales.append(layer.scale)
        start += size
    layer.position = None
    np.testing.assert_array_equal(np.concatenate(ys), whole_y)
    np.testing.assert_array_equal(np.concatenate(scales), whole_scale)
    assert layer.batches == 0
