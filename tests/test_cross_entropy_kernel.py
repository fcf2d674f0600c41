"""The loss's one-kernel twin (``kernels/cross_entropy.py``, ``losses.OnePassSoftmaxCrossEntropy``)
computes what ``SoftmaxCrossEntropy``'s NumPy lines compute: the loss and softmax to float
rounding, the gradient bit for bit from the same softmax, and a finite-difference check of its own."""

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.gradcheck import check_loss
from tinycnn.kernels.cross_entropy import softmax_cross_entropy, softmax_cross_entropy_backward
from tinycnn.layers import Dense
from tinycnn.losses import CategoricalCrossEntropy, OnePassSoftmaxCrossEntropy, SoftmaxCrossEntropy, fast_twin
from tinycnn.plan import Plan

#: float rounding of the loss and the softmax: a few units in the last place
TOL = {"float32": 5e-6, "float64": 1e-13}


@pytest.mark.parametrize("n, k, spread, dtype", [(16, 10, 5.0, "float32"), (1, 2, 1.0, "float32"),
                                                 (7, 3, 30.0, "float64"), (33, 100, 2.0, "float64"),
                                                 (5, 1, 1.0, "float32")])
def test_the_twin_computes_the_references_loss_softmax_and_gradient(rng, n, k, spread, dtype):
    logits = (rng.standard_normal((n, k)) * spread).astype(dtype)
    labels = rng.integers(0, k, n)
    reference, twin = SoftmaxCrossEntropy(), OnePassSoftmaxCrossEntropy()
    want, got = float(reference.forward(logits, labels)), twin.forward(logits, labels)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=TOL[dtype], abs=TOL[dtype])
    assert twin.probs.dtype == np.dtype(dtype)
    np.testing.assert_allclose(twin.probs, reference.probs, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(twin.probs.sum(axis=1), 1.0, rtol=TOL[dtype] * k)
    twin.probs = reference.probs.copy()         # from the same softmax, the reference's dz exactly
    dz = twin.backward()
    assert dz.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dz, reference.backward())


def test_the_loss_worked_out_by_hand():
    """Two equal logits: softmax 1/2 each, loss log 2, dz = (1/2 - 1) / 1 at the label. A logit
    of 1e4 beside 0 (exp would overflow without the shift): probabilities 1 and exp(-1e4) = 0,
    loss 0 at the first label and 1e4 at the second."""
    loss, probs = softmax_cross_entropy(np.zeros((1, 2), np.float32), np.array([1]))
    assert loss == pytest.approx(np.log(2), rel=1e-7)
    np.testing.assert_array_equal(probs, [[0.5, 0.5]])
    np.testing.assert_array_equal(softmax_cross_entropy_backward(probs, np.array([1])), [[0.5, -0.5]])
    loss, probs = softmax_cross_entropy(np.array([[1e4, 0.0], [1e4, 0.0]]), np.array([0, 1]))
    assert loss == pytest.approx(1e4 / 2)                   # the mean of 0 and 1e4
    np.testing.assert_array_equal(probs, [[1.0, 0.0], [1.0, 0.0]])


def test_a_logit_that_is_not_finite_gives_what_the_reference_gives():
    """NaN anywhere in a row makes the loss NaN (fit then stops with its message); -inf away from
    the label is a probability of 0 and a finite loss; -inf at the label is an infinite loss."""
    labels = np.array([0, 1])
    for row, finite in [([np.nan, 0.0, 1.0], False), ([0.0, 1.0, np.nan], False),
                        ([0.0, 1.0, -np.inf], True), ([1.0, -np.inf, 0.0], False)]:
        logits = np.array([[0.5, 0.2, 0.1], row], np.float32)
        with np.errstate(invalid="ignore"):
            want = float(SoftmaxCrossEntropy().forward(logits, labels))
            got, _ = softmax_cross_entropy(logits, labels)
        assert np.isfinite(got) == np.isfinite(want) == finite
        assert got == pytest.approx(want, rel=1e-6) or (np.isnan(got) and np.isnan(want))


def test_a_label_out_of_range_is_refused_both_ways():
    logits, probs = np.zeros((3, 4), np.float32), np.full((3, 4), 0.25, np.float32)
    for bad in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match=f"Label {bad[1]} of sample 1 is outside \\[0, 3\\]"):
            softmax_cross_entropy(logits, np.array(bad))
        with pytest.raises(ValueError, match="outside"):
            softmax_cross_entropy_backward(probs, np.array(bad))
    with pytest.raises(ValueError, match="labels has shape"):
        softmax_cross_entropy(logits, np.array([0, 1]))


def test_the_twins_gradient_against_finite_differences(rng):
    logits = rng.standard_normal((5, 10))
    assert check_loss(OnePassSoftmaxCrossEntropy(), logits, rng.integers(0, 10, size=5)) < 1e-7


def test_the_fast_plan_runs_the_twin_and_the_reference_plan_the_loss_itself():
    model = Sequential([Dense(3)])
    model.build((4,))
    assert type(Plan(model.layers, SoftmaxCrossEntropy(), fast=True).loss) is OnePassSoftmaxCrossEntropy
    assert type(Plan(model.layers, SoftmaxCrossEntropy(), fast=False).loss) is SoftmaxCrossEntropy
    one_hot = CategoricalCrossEntropy()
    assert fast_twin(one_hot) is one_hot                     # no twin: the loss itself
