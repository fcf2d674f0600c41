"""Optimizer updates against values worked out by hand, over three steps.

One scalar parameter p = 1.0, learning rate 0.1, gradients 0.5, -0.25, 1.0.
"""

import numpy as np
import pytest

from tinycnn.layers import Layer
from tinycnn.optimizers import SGD, Adam

GRADS = [0.5, -0.25, 1.0]


class OneParam(Layer):
    def __init__(self, dtype=np.float64):
        super().__init__(name="one")
        self.params = {"w": np.array([1.0], dtype=dtype)}


def run(optimizer, dtype=np.float64):
    layer = OneParam(dtype)
    values = []
    for g in GRADS:
        layer.grads = {"w": np.array([g], dtype=dtype)}
        optimizer.step([layer])
        values.append(float(layer.params["w"][0]))
    return values, layer


def test_sgd_plain():
    # p -= 0.1 * g:  1 - 0.05 = 0.95;  0.95 + 0.025 = 0.975;  0.975 - 0.1 = 0.875
    assert run(SGD(0.1))[0] == pytest.approx([0.95, 0.975, 0.875], abs=1e-12)


def test_sgd_momentum():
    # v = 0.9 v - 0.1 g ; p += v
    # v1 = -0.05            p1 = 0.95
    # v2 = -0.045 + 0.025 = -0.02    p2 = 0.93
    # v3 = -0.018 - 0.1 = -0.118     p3 = 0.812
    assert run(SGD(0.1, momentum=0.9))[0] == pytest.approx([0.95, 0.93, 0.812], abs=1e-12)


def test_sgd_nesterov():
    # p += 0.9 v - 0.1 g, with the same v as above
    # p1 = 1 - 0.045 - 0.05 = 0.905 ; p2 = 0.905 - 0.018 + 0.025 = 0.912 ; p3 = 0.912 - 0.1062 - 0.1 = 0.7058
    assert run(SGD(0.1, momentum=0.9, nesterov=True))[0] == pytest.approx([0.905, 0.912, 0.7058], abs=1e-12)


def test_adam_three_steps_by_hand():
    # m = 0.9 m + 0.1 g ; v = 0.999 v + 0.001 g^2 ; alpha = 0.1 sqrt(1 - 0.999^t) / (1 - 0.9^t)
    # t=1: m = 0.05, v = 0.00025, alpha = 0.1 * sqrt(0.001) / 0.1 = 0.0316227766
    #      p = 1 - 0.0316227766 * 0.05 / (0.0158113883 + 1e-7) = 0.9000006325
    #      (the first Adam step moves by almost exactly lr, whatever the gradient's size)
    # t=2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225,
    #      alpha = 0.1 * sqrt(0.001999) / 0.19 = 0.0235316725
    #      p = 0.9000006325 - 0.0235316725 * 0.02 / (0.0176706535 + 1e-7) = 0.8733670792
    # t=3: m = 0.018 + 0.1 = 0.118, v = 0.00031193775 + 0.001 = 0.00131193775,
    #      alpha = 0.1 * sqrt(0.002997001) / 0.271 = 0.0202010597
    #      p = 0.8733670792 - 0.0202010597 * 0.118 / (0.0362213436 + 1e-7) = 0.8075561009
    values, _ = run(Adam(learning_rate=0.1))
    assert values == pytest.approx([0.9000006325, 0.8733670792, 0.8075561009], abs=1e-9)


def test_adam_keeps_float32_and_state_keys():
    opt = Adam()
    _, layer = run(opt, dtype=np.float32)
    assert layer.params["w"].dtype == np.float32
    assert set(opt.state) == {("one", "w", "m"), ("one", "w", "v")}
    assert all(s.dtype == np.float32 for s in opt.state.values())


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning_rate"):
        Adam(learning_rate=0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=1.5)
