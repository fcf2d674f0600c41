"""The fast training step gives what the readable one gives.

- the fused bias + ReLU + max-pool kernels equal the three layers' NumPy references;
- a ConvReLUMaxPool block equals Conv2D, ReLU and MaxPool2D one after another, forward and
  backward, whichever way the model is written, and passes a gradient check of its own;
- the fused Adam kernel equals Adam's NumPy lines (``Adam.update`` in the reference mode), bit for
  bit, and can check without writing;
- splitting a batch over threads (data parallelism) gives the gradient of the whole batch;
- training a few steps in the fast mode (fused, fused Adam, two threads) and in the reference mode
  (``compile(fast=False)``: the layers' own code, NumPy Adam, one thread) ends with the same
  weights, to float32 rounding; and the reference mode really runs the layers' own code.
"""

import numpy as np
import pytest

from conftest import seed_model
from tinycnn import Sequential, plan
from tinycnn.gradcheck import check_model
from tinycnn.kernels import adam as adam_kernels
from tinycnn.kernels import bias_relu_pool as fused_kernels
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from tinycnn.layers._geometry import paddings
from tinycnn.layers.fused import Conv2DWithoutDx, ConvReLUMaxPool
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optimizers import SGD, Adam, NonFiniteUpdate
from tinycnn.parallel import DataParallel, can_split
from tinycnn.plan import Plan

POOLS = [
    # z shape (N, H, W, C), pool (PH, PW), strides, padding
    ((2, 6, 6, 3), (2, 2), (2, 2), "valid"),
    ((3, 11, 11, 4), (2, 2), (2, 2), "valid"),      # the seed model's odd edge: row 10 unused
    ((2, 5, 7, 2), (3, 3), (2, 2), "same"),         # overlapping windows, -inf padding
    ((2, 6, 5, 2), (2, 3), (1, 2), "valid"),
    ((2, 4, 4, 1), (1, 1), (1, 1), "valid"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, p, s, padding", POOLS)
def test_bias_relu_maxpool_kernels_match_the_layers_references(rng, shape, p, s, padding, dtype):
    z = rng.standard_normal(shape).astype(dtype)
    z[0, :, :, 0] -= 5                  # a channel that ReLU zeroes, and one that it passes
    z[-1, :, :, -1] += 5
    bias = rng.standard_normal(shape[-1]).astype(dtype)
    pad = paddings(shape[1], shape[2], p, s, padding)
    y_ref, arg_ref = fused_kernels.bias_relu_maxpool_forward_reference(z, bias, *p, s, pad)
    y, arg = fused_kernels.bias_relu_maxpool_forward(z, bias, *p, s, pad)
    assert y.dtype == dtype and 0 < (y > 0).mean() < 1          # both ReLU branches are exercised
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg[y > 0], arg_ref[y > 0])    # where a gradient flows
    dy = rng.standard_normal(y.shape).astype(dtype)
    dz_ref, db_ref = fused_kernels.maxpool_relu_backward_reference(dy, arg_ref, y_ref, shape)
    dz, db = fused_kernels.maxpool_relu_backward(dy, arg, y, shape)
    np.testing.assert_array_equal(dz, dz_ref)
    np.testing.assert_allclose(db, db_ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_fused_forward_by_hand():
    """One 2x2 window per channel, worked out by hand: bias is added before the maximum."""
    z = np.array([[[[1.0, -3.0], [4.0, -1.0]], [[2.0, -2.0], [0.5, -5.0]]]], dtype=np.float32)
    bias = np.array([-1.0, 0.5], dtype=np.float32)
    y, arg = fused_kernels.bias_relu_maxpool_forward(z, bias, 2, 2, (2, 2), (0, 0, 0, 0))
    # channel 0: max(1, 4, 2, 0.5) - 1 = 3 at (0, 1) -> position 1; channel 1: max(-3, -1, -2, -5) + 0.5 < 0 -> 0
    np.testing.assert_array_equal(y[0, 0, 0], [3.0, 0.0])
    assert arg[0, 0, 0, 0] == 1
    dz, db = fused_kernels.maxpool_relu_backward(np.array([[[[2.0, 7.0]]]], np.float32), arg, y, z.shape)
    expected = np.zeros_like(z)
    expected[0, 0, 1, 0] = 2.0                 # only the positive window's argmax gets dy
    np.testing.assert_array_equal(dz, expected)
    np.testing.assert_array_equal(db, [2.0, 0.0])


def conv_relu_pool_models(dtype, strides=1, padding="valid", pool=2, channels=2):
    """The same network written both ways, with the same weights. Which path the block takes:
    a stride-1 convolution with a 2×2 pool runs Winograd's F(2×2, 3×3) (kernels/winograd.py)
    with 1 input channel (its own kernels) or 8 (matrix products); otherwise im2col."""
    a = Sequential([Conv2D(5, 3, strides=strides, padding=padding, activation="relu"), MaxPool2D(pool),
                    Flatten(), Dense(3)], seed=0)
    b = Sequential([Conv2D(5, 3, strides=strides, padding=padding), ReLU(), MaxPool2D(pool),
                    Flatten(), Dense(3)], seed=0)
    for m in (a, b):
        m.build((9, 8, channels), dtype)
        m.compile(SGD(0.1))
    return a, b


@pytest.mark.parametrize("channels", [1, 2, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strides, padding, pool", [(1, "valid", 2), (1, "same", 2), (2, "same", 2), (1, "same", 3)])
def test_fused_block_equals_the_three_layers(rng, dtype, strides, padding, pool, channels):
    """The fast plan (fused block) against the reference plan (the layers' own forward and
    backward), forward, dL/dx and the Conv2D's gradients, on the same layers."""
    for model in conv_relu_pool_models(dtype, strides, padding, pool, channels):
        fast = Plan(model.layers, SoftmaxCrossEntropy(), fast=True, input_grad=True)
        reference = Plan(model.layers, SoftmaxCrossEntropy(), fast=False)
        block = fast.steps[0]
        assert isinstance(block, ConvReLUMaxPool) and not isinstance(reference.steps[0], ConvReLUMaxPool)
        x = rng.standard_normal((4, 9, 8, channels)).astype(dtype)
        y = np.array([0, 1, 2, 1])
        fused = fast.forward(x, training=True)
        assert block.winograd == (strides == 1 and pool == 2 and channels != 2)
        fast.loss.forward(fused, y)
        dx_fused = fast.backward(fast.loss.backward())
        grads_fused = {k: v.copy() for k, v in model.layers[0].grads.items()}
        logits = reference.forward(x, training=True)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
        if block.winograd:                             # other rounding (kernels/winograd.py)
            np.testing.assert_allclose(fused, logits, **tol)
        else:                                          # the same sums in the same order
            np.testing.assert_array_equal(fused, logits)
        reference.loss.forward(logits, y)
        dx = reference.backward(reference.loss.backward())
        np.testing.assert_allclose(dx_fused, dx, **tol)
        for k in ("kernel", "bias"):
            np.testing.assert_allclose(grads_fused[k], model.layers[0].grads[k], **tol)


@pytest.mark.parametrize("channels", [1, 2, 8])
def test_fused_model_passes_a_gradient_check(rng, channels):
    model, _ = conv_relu_pool_models("float64", channels=channels)
    assert isinstance(model.plan().steps[0], ConvReLUMaxPool)
    x = rng.standard_normal((3, 9, 8, channels))
    errors = check_model(model, x, np.array([0, 2, 1]))
    assert max(errors.values()) < 1e-6, errors


def test_plan_fuses_only_conv_relu_pool():
    kinds = lambda layers: [type(s).__name__ for s in plan.logit_steps(layers, input_grad=True)]  # noqa: E731
    built = lambda layers: Sequential(layers, input_shape=(12, 12, 1)).layers  # noqa: E731
    assert kinds(built([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(2, activation="softmax")])) \
        == ["ConvReLUMaxPool", "Flatten", "Dense"]
    assert kinds(built([Conv2D(4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2)])) \
        == ["ConvReLUMaxPool", "Flatten", "Dense"]
    # no ReLU, pooling first, or a ReLU with nothing after: the layers run as they are
    assert kinds(built([Conv2D(4, 3), MaxPool2D(2), ReLU(), Flatten(), Dense(2)])) \
        == ["Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dense"]
    assert kinds(built([Conv2D(4, 3, activation="relu"), Flatten(), Dense(2)])) == ["Conv2D", "Flatten", "Dense"]
    assert kinds(built([Conv2D(4, 3), ReLU(), BatchNormalization(), MaxPool2D(2), Flatten(), Dense(2)])) \
        == ["Conv2D", "ReLU", "BatchNormalization", "MaxPool2D", "Flatten", "Dense"]
    # only ReLU is fused: the block computes no other activation
    for activation in ("tanh", "sigmoid", "leaky_relu"):
        assert kinds(built([Conv2D(4, 3, activation=activation), MaxPool2D(2), Flatten(), Dense(2)]))[0] == "Conv2D"
    # the reference mode runs the layers as they are, the final softmax aside
    layers = built([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(2, activation="softmax")])
    steps = plan.logit_steps(layers, fast=False)
    assert steps[:3] == layers[:3] and steps[3].activation is None and steps[3].params is layers[3].params
    # the first trainable step skips its input gradient, in training only
    assert plan.logit_steps(seed_model().layers)[0].input_grad is False
    assert plan.logit_steps(seed_model().layers, input_grad=True)[0].input_grad is True
    unfused = built([Conv2D(4, 3), BatchNormalization(), ReLU(), Flatten(), Dense(2)])
    assert type(plan.logit_steps(unfused)[0]).__name__ == "Conv2DWithoutDx"
    assert plan.logit_steps(unfused, fast=False)[0] is unfused[0]
    # with BatchNormalization between the convolution and the ReLU, the four run as one block
    assert kinds(built([Conv2D(4, 3), BatchNormalization(), ReLU(), MaxPool2D(2), Flatten(), Dense(2)])) \
        == ["ConvBatchNormReLUMaxPool", "Flatten", "Dense"]


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_conv_without_dx_fills_the_gradients_conv2d_fills(rng, activation):
    """A first Conv2D that no block fuses (here BatchNormalization and a ReLU follow it, and no
    pooling) runs as Conv2DWithoutDx in the fast mode: the same forward and gradients, no dL/dx."""
    model = Sequential([Conv2D(4, 3, activation=activation), BatchNormalization(), ReLU(),
                        Flatten(), Dense(3)], input_shape=(9, 9, 2), seed=0)
    model.compile(SGD(0.1))
    fast = Plan(model.layers, SoftmaxCrossEntropy(), fast=True)
    assert isinstance(fast.steps[0], Conv2DWithoutDx)
    fast.loss = SoftmaxCrossEntropy()       # the loss's twin rounds its own way (test_cross_entropy_kernel.py)
    x, y = rng.standard_normal((4, 9, 9, 2)).astype(np.float32), np.array([0, 1, 2, 1])
    logits, loss = fast.loss_and_gradients(x, y)
    grads = {k: g.copy() for k, g in model.layers[0].grads.items()}
    reference = Plan(model.layers, SoftmaxCrossEntropy(), fast=False)
    assert reference.steps == model.layers
    logits_ref, loss_ref = reference.loss_and_gradients(x, y)
    np.testing.assert_array_equal(logits, logits_ref)
    for k in ("kernel", "bias"):
        np.testing.assert_array_equal(grads[k], model.layers[0].grads[k])
    assert fast.backward(fast.loss.backward()) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_equals_numpy_bit_for_bit(rng, dtype):
    """Three updates with the kernel (fast) and with Adam's NumPy lines (reference mode)."""
    start = rng.standard_normal((37, 11)).astype(dtype)
    params = [start, start.copy()]
    grads = [rng.standard_normal((37, 11)).astype(dtype) for _ in range(3)]
    optimizers = [Adam(1e-3), Adam(1e-3)]
    for t in range(3):
        for opt, p in zip(optimizers, params):
            opt.iterations = t + 1
            assert opt.update(("dense", "kernel"), p, grads[t], 1e-3, fast=opt is optimizers[0])
    np.testing.assert_array_equal(params[0], params[1])
    for key in optimizers[0].state:
        np.testing.assert_array_equal(optimizers[0].state[key], optimizers[1].state[key])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_in_one_pass_equals_the_checked_step_bit_for_bit(rng, dtype):
    """Optimizer.step three times: the fast mode writes each parameter in one pass
    (adam_update_and_keep), the reference mode checks every update, then writes (NumPy lines)."""
    models = []
    for fast in (True, False):
        model = Sequential([Dense(7), Dense(3)], input_shape=(5,), seed=0, dtype=dtype)
        model.compile(Adam(1e-2))
        models.append((model, fast))
    for t in range(3):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in models[0][0].get_weights()]
        for model, fast in models:
            layers = model._trainable_layers()
            chunks = iter(grads)
            for layer in layers:
                layer.grads = {k: next(chunks).copy() for k in layer.params}
            model.optimizer.step(layers, fast=fast)
    for a, b in zip(models[0][0].get_weights(), models[1][0].get_weights()):
        np.testing.assert_array_equal(a, b)
    for key in models[1][0].optimizer.state:
        np.testing.assert_array_equal(models[0][0].optimizer.state[key], models[1][0].optimizer.state[key])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 3e30])      # 3e30 squared overflows float32
@pytest.mark.parametrize("fast", [True, False])
def test_adam_check_changes_nothing_and_spots_non_finite(rng, bad, fast):
    opt = Adam(1e-3)
    opt.iterations = 1
    p, g = [rng.random(50).astype(np.float32) for _ in range(2)]
    g[17] = bad
    before = p.copy()
    assert opt.update(("d", "k"), p, g, 1e-3, write=False, fast=fast) is False
    np.testing.assert_array_equal(p, before)
    assert not any(s.any() for s in opt.state.values())           # m and v untouched too
    g[17] = 0.5
    assert opt.update(("d", "k"), p, g, 1e-3, write=False, fast=fast) is True


def test_adam_kernel_refuses_arrays_of_other_sizes(rng):
    """The kernel reads all four arrays by one index: its wrapper compares their shapes first."""
    p, m, v = [np.zeros(6, np.float32) for _ in range(3)]
    for grad in (np.zeros(4, np.float32), np.zeros(8, np.float32), np.zeros(6, np.float64)):
        with pytest.raises(ValueError, match="one shape and dtype"):
            adam_kernels.adam_update(p, grad, m, v, 1e-3, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError, match="one shape and dtype"):
        adam_kernels.adam_update(p, p.copy(), m, np.zeros(5, np.float32), 1e-3, 0.9, 0.999, 1e-7)
    for kept in (np.zeros((3, 5), np.float32), np.zeros((3, 6), np.float64), np.zeros((2, 6), np.float32)):
        with pytest.raises(ValueError, match="kept of shape"):
            adam_kernels.adam_update_and_keep(p, p.copy(), m, v, 1e-3, 0.9, 0.999, 1e-7, kept)


@pytest.mark.parametrize("optimizer", [Adam(1e-3), SGD(0.1, momentum=0.9)])
def test_optimizer_refuses_a_non_finite_step_whole(optimizer):
    """The second parameter's gradient is bad: the first must not have been updated either."""
    model = Sequential([Dense(3), Dense(2)], input_shape=(4,), seed=0)
    model.compile(optimizer)
    layers = model._trainable_layers()
    for layer in layers:
        layer.grads = {k: np.full_like(p, 0.1) for k, p in layer.params.items()}
    optimizer.step(layers)                          # one good step: the state exists
    before = model.get_weights()
    state = {k: v.copy() for k, v in optimizer.state.items()}
    layers[1].grads["kernel"][0, 0] = np.inf
    with pytest.raises(NonFiniteUpdate, match="dense_1/kernel") as err:
        optimizer.step(layers)
    assert err.value.key == ("dense_1", "kernel")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(np.array_equal(state[k], optimizer.state[k]) for k in state)
    assert optimizer.iterations == 1


def test_fit_refuses_the_step_that_overflows_adam():
    """Inputs scaled by 1e20: the loss stays finite, but Adam's v = g*g overflows."""
    model = Sequential([Flatten(), Dense(10, activation="softmax")], input_shape=(6, 6, 1), seed=0)
    model.compile(Adam(1e-3))
    rng = np.random.default_rng(0)
    x = (rng.random((64, 6, 6, 1)) * 1e20).astype(np.float32)
    y = rng.integers(0, 10, 64)
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1.*dense/kernel.*reach 1e\+20") as err:
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert err.value.history is model.history and model.history.epoch == []
    assert np.isfinite(model.predict(x[:4])).all()


@pytest.mark.parametrize("chunk", [2, 16])      # 2: every share is worked through in chunks
def test_data_parallel_gradient_is_the_whole_batch_gradient(rng, chunk):
    model = seed_model(input_shape=(14, 14, 1), dtype="float64")
    model.compile(Adam())
    x = rng.random((10, 14, 14, 1))
    y = rng.integers(0, 10, 10)
    whole = model.plan()
    whole_logits, whole_loss = whole.loss_and_gradients(x, y)
    serial = {(layer.name, k): g.copy() for layer in model.layers for k, g in layer.grads.items()}
    with DataParallel(model, 3, chunk=chunk) as parallel:    # shares of 3, 3 and 4 samples
        logits, loss = parallel.train_step(x, y)
        np.testing.assert_allclose(parallel.logits(x), whole.forward(x, training=False), rtol=1e-12)
    np.testing.assert_allclose(logits, whole_logits, rtol=1e-12)
    assert loss == pytest.approx(whole_loss, rel=1e-12)
    for layer in model.layers:
        for k, g in layer.grads.items():
            np.testing.assert_allclose(g, serial[(layer.name, k)], rtol=1e-10, atol=1e-14)


def test_only_per_sample_layers_are_split():
    """Dropout (per-sample masks) and BatchNormalization (a twin across the shares) split too;
    a layer with per_sample = False and no such twin does not."""
    base = [Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten()]
    assert can_split(Sequential(base + [Dense(2)], input_shape=(8, 8, 1)).layers)
    assert can_split(Sequential(base + [Dropout(0.5), Dense(2)], input_shape=(8, 8, 1)).layers)
    assert can_split(Sequential([Conv2D(4, 3), BatchNormalization()] + base[1:] + [Dense(2)],
                                input_shape=(8, 8, 1)).layers)

    class KeptWhole(ReLU):
        per_sample = False

    assert not can_split(Sequential(base + [KeptWhole(), Dense(2)], input_shape=(8, 8, 1)).layers)


def test_fast_and_reference_training_end_with_the_same_weights():
    """Ten Adam steps of the Keras MNIST CNN: the fast mode (fused kernels, fused Adam, two
    threads) against the reference mode (compile(fast=False): the layers one by one, NumPy Adam,
    one thread). Only float32 rounding may differ."""
    rng = np.random.default_rng(0)
    x = rng.random((320, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 320)

    def train(fast):
        model = seed_model()
        model.compile(Adam(1e-3), fast=fast)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0, threads=2)
        return model

    fast, reference = train(True), train(False)
    assert isinstance(fast.plan().steps[0], ConvReLUMaxPool)
    assert reference.plan().steps[:5] == reference.layers[:5]
    for a, b in zip(fast.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(seed_model().get_weights(), fast.get_weights()))   # it trained
    assert fast.evaluate(x, y) == pytest.approx(reference.evaluate(x, y), rel=1e-4)
    np.testing.assert_allclose(fast.predict(x[:8]), reference.predict(x[:8]), rtol=1e-4, atol=1e-6)


def calls_during_fit(monkeypatch, fast, threads=2):
    """How often each readable layer's forward and backward, the fused block's, im2col and the
    Adam kernel run during a fit of the Keras MNIST CNN, counted by wrapping them."""
    from tinycnn import optimizers
    from tinycnn.layers import conv, fused
    counts = {}

    def counted(owner, name, label):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            counts[label] = counts.get(label, 0) + 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)

    for cls in (Conv2D, MaxPool2D, Dense, ConvReLUMaxPool):
        counted(cls, "forward", f"{cls.__name__}.forward")
        counted(cls, "backward", f"{cls.__name__}.backward")
    counted(conv, "im2col", "im2col")
    counted(fused, "im2col", "im2col")
    counted(optimizers, "adam_update", "adam kernel")
    counted(optimizers, "adam_update_and_keep", "adam kernel, one pass")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)
    model = seed_model()
    model.compile(Adam(1e-3), fast=fast)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0, threads=threads)
    return counts


def test_the_reference_mode_runs_the_layers_own_code(monkeypatch):
    counts = calls_during_fit(monkeypatch, fast=False)
    # two batches: both Conv2D and both MaxPool2D forward and backward each time, as do both Dense
    assert counts["Conv2D.forward"] == counts["MaxPool2D.forward"] == counts["Dense.forward"] == 4
    assert counts["Conv2D.backward"] == counts["MaxPool2D.backward"] == counts["Dense.backward"] == 4
    assert counts["im2col"] == 4
    assert "ConvReLUMaxPool.forward" not in counts
    assert "adam kernel" not in counts and "adam kernel, one pass" not in counts


def test_the_fast_mode_runs_the_fused_blocks(monkeypatch):
    counts = calls_during_fit(monkeypatch, fast=True)
    assert "Conv2D.forward" not in counts and "MaxPool2D.backward" not in counts and "im2col" not in counts
    assert counts["ConvReLUMaxPool.forward"] >= 4 and counts["ConvReLUMaxPool.backward"] >= 4
    assert counts["adam kernel, one pass"] == 2 * 8    # 2 steps x 8 parameters, each written once
    assert "adam kernel" not in counts                  # never checked first, in a second pass
