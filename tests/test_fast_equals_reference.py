"""The fast mode computes what the reference mode computes, for every model shape fit can meet.

``plan.Plan(layers, loss, fast=True)`` may run a Conv2D, its activation and the pooling after it as
one fused block (``layers/fused.py``), and skips the first layer's input gradient;
``fast=False`` runs each layer's own ``forward`` and ``backward``. Whatever the plan fuses or
leaves alone, the two must give the same logits, the same loss and the same gradients. Here that
is checked over every activation (as ``activation=...`` on the Conv2D, as a layer of its own
after it, and after a BatchNormalization), both paddings and strides of the convolution, and
every pooling layer with its paddings, on both of the fused block's paths (Winograd for one
input channel, im2col for three). A block that fused an activation it does not compute (tanh,
say) would give other logits here.

Then ``fit`` itself, fast (fused blocks, fused Adam, two threads) against ``compile(fast=False)``,
for each activation: the same weights after a few steps.
"""

import zlib

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.layers import (AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten, GlobalAveragePooling2D,
                            LeakyReLU, MaxPool2D, ReLU, Sigmoid, Tanh)
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optimizers import Adam
from tinycnn.plan import Plan

#: activation="..." names, and the layer that stands for each when written as a layer of its own.
ACTIVATIONS = {
    None: None,
    "relu": ReLU,
    "leaky_relu": lambda: LeakyReLU(alpha=0.1),
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}

#: Every pooling layer, with the geometries fit can meet (MaxPool2D(2) is the one the block fuses).
POOLS = {
    "max2": lambda: MaxPool2D(2),
    "max2-same": lambda: MaxPool2D(2, padding="same"),
    "max3-stride2-same": lambda: MaxPool2D(3, strides=2, padding="same"),
    "max2-stride1": lambda: MaxPool2D(2, strides=1),
    "average2": lambda: AveragePooling2D(2),
    "average3-same": lambda: AveragePooling2D(3, strides=2, padding="same"),
    "global-average": lambda: GlobalAveragePooling2D(),
}

CONVS = [(1, "valid"), (1, "same"), (2, "same")]        # (strides, padding)


def models(activation, strides, padding, pool, channels):
    """The same network with the activation as Conv2D's argument, as a layer of its own after it
    (when there is one), and after a BatchNormalization; all with the same weights, in float64."""
    def network(separate, batchnorm=False):
        conv = Conv2D(4, 3, strides=strides, padding=padding, activation=None if separate else activation)
        norm = [BatchNormalization()] if batchnorm else []
        act = [ACTIVATIONS[activation]()] if separate and activation is not None else []
        tail = [] if pool == "global-average" else [Flatten()]
        return Sequential([conv, *norm, *act, POOLS[pool](), *tail, Dense(3, activation="softmax")], seed=0)

    variants = [network(False), network(True, batchnorm=True)] + ([network(True)] if activation is not None else [])
    for model in variants:
        model.build((9, 8, channels), "float64")
    return variants


def loss_and_gradients(model, fast, x, y):
    plan = Plan(model.layers, SoftmaxCrossEntropy(), fast=fast, input_grad=True)
    logits, loss = plan.loss_and_gradients(x, y)
    dx = plan.backward(plan.loss.backward())          # once more, to see dL/dx
    grads = {(layer.name, k): g.copy() for layer in model.layers for k, g in layer.grads.items()}
    return plan, logits, loss, dx, grads


@pytest.mark.parametrize("channels", [1, 3])             # 1: the Winograd block; 3: the im2col block
@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("strides, padding", CONVS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_fast_plan_equals_the_layers_one_by_one(activation, strides, padding, pool, channels):
    rng = np.random.default_rng(zlib.crc32(repr((activation, strides, padding, pool, channels)).encode()))
    x = rng.standard_normal((5, 9, 8, channels))
    y = np.array([0, 1, 2, 1, 0])
    for model in models(activation, strides, padding, pool, channels):
        fast = loss_and_gradients(model, True, x, y)
        reference = loss_and_gradients(model, False, x, y)
        assert [type(s) for s in reference[0].steps] == [type(layer) for layer in model.layers[:-1]] + [Dense]
        np.testing.assert_allclose(fast[1], reference[1], rtol=1e-10, atol=1e-12, err_msg="logits")
        assert fast[2] == pytest.approx(reference[2], rel=1e-10)
        np.testing.assert_allclose(fast[3], reference[3], rtol=1e-9, atol=1e-12, err_msg="dL/dx")
        assert fast[4].keys() == reference[4].keys()
        for key in fast[4]:
            np.testing.assert_allclose(fast[4][key], reference[4][key], rtol=1e-9, atol=1e-12, err_msg=str(key))


def test_the_fused_block_is_met_by_these_cases():
    """The cases above do reach the fused block (else they would compare the layers with
    themselves): with ReLU before MaxPool2D(2), on both of its paths."""
    for channels, winograd in ((1, True), (3, False)):
        for model in models("relu", 1, "valid", "max2", channels):
            if any(isinstance(layer, BatchNormalization) for layer in model.layers):
                continue
            plan = Plan(model.layers, SoftmaxCrossEntropy(), fast=True, input_grad=True)
            block = plan.steps[0]
            assert type(block).__name__ == "ConvReLUMaxPool"
            block.forward(np.zeros((1, 9, 8, channels)), training=True)
            assert block.winograd is winograd


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_fast_fit_ends_with_the_reference_fits_weights(activation):
    """Four Adam steps, fast (fused blocks and Adam kernel, two threads) and reference mode."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 10, 10, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)

    def trained(fast):
        model = Sequential([Conv2D(4, 3, activation=activation), MaxPool2D(2),
                            Conv2D(4, 3, padding="same", activation=activation), MaxPool2D(2),
                            Flatten(), Dense(3, activation="softmax")], seed=1)
        model.compile(Adam(1e-2), fast=fast)
        history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0, threads=2)
        return model, history.history["loss"][0]

    (fast, fast_loss), (reference, reference_loss) = trained(True), trained(False)
    assert fast_loss == pytest.approx(reference_loss, rel=1e-4)
    for a, b in zip(fast.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
