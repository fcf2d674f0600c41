"""Softmax and cross-entropy in one kernel each way: the loss of a training step.

Its reference is ``SoftmaxCrossEntropy`` in ``tinycnn/losses.py``, whose NumPy lines a learner
reads beside their derivation. For logits z (N, K) and labels y (N,):

    m         = max_k z_k                               per sample, so that exp never overflows
    log_probs = (z - m) - log Σ_k exp(z_k - m)           log softmax(z)
    probs     = exp(log_probs)                          kept for the backward pass
    loss      = -mean_n log_probs[n, y_n]
    dL/dz     = (probs - onehot(y)) / N                 the backward pass

Those are a dozen NumPy calls on a few hundred numbers: each call costs more than its arithmetic,
and every one of them holds Python's GIL. When ``fit`` splits a batch over threads, a thread that
holds the GIL keeps the others from coming back from their kernels (``tinycnn/parallel.py``):
the loss's calls cost a training step of 32 more than the loss's own time in both threads
(docs/performance.md measures it). Here each pass is one call of a Numba kernel, which holds
nothing while it runs.

The lines are the reference's, in the same order and the same dtype. The numbers match it to
float rounding: NumPy's ``exp`` and ``log`` (vectorised, its own) and the compiled ones round a
last bit differently now and then, NumPy sums the K exponentials pairwise and the kernel in order,
and the loss is summed here in float64 (the reference sums in the logits' dtype). The backward is
the reference's arithmetic number for number: given the same probs, the same dz, bit for bit.
``tests/test_cross_entropy_kernel.py`` proves both.
"""

import math

import numpy as np

from .geometry import expect_shape
from .jit import jit


@jit()
def _softmax_cross_entropy_numba(logits, labels, probs):
    """logits, probs (N, K), labels (N,). Writes probs; returns (Σ_n -log_probs[n, y_n] in
    float64, -1), or, at the first label outside [0, K), (the sum so far, its sample)."""
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        label = labels[i]
        if label < 0 or label >= k:
            return total, i
        z, p = logits[i], probs[i]
        m = z[0]
        for j in range(1, k):
            if z[j] > m:                # a NaN never wins, but it makes the sum below NaN
                m = z[j]
        s = z.dtype.type(0)
        for j in range(k):
            p[j] = z[j] - m             # p holds the shifted logits, then log_probs, then probs
            s += np.exp(p[j])
        log_sum = np.log(s)
        for j in range(k):
            p[j] -= log_sum
        total -= p[label]
        for j in range(k):
            p[j] = np.exp(p[j])
    return total, -1


@jit()
def _softmax_cross_entropy_backward_numba(probs, labels):
    """dz = (probs - onehot(labels)) / N, as the reference rounds it: (p - 1) / N at each label,
    p / N elsewhere. dz is made here, so the compiler knows that it overlaps nothing."""
    n, k = probs.shape
    dz = np.empty_like(probs)
    count, one = probs.dtype.type(n), probs.dtype.type(1)
    for i in range(n):
        if labels[i] < 0 or labels[i] >= k:         # the write below would land outside dz
            raise ValueError("softmax_cross_entropy_backward: a label is outside [0, K).")
        for j in range(k):
            dz[i, j] = probs[i, j] / count
        dz[i, labels[i]] = (probs[i, labels[i]] - one) / count
    return dz


def softmax_cross_entropy(logits, labels):
    """(loss, probs): the mean cross-entropy of softmax(logits) against ``labels``, a Python
    float, and the softmax (N, K), which the backward pass takes. NumPy logits (N, K) of float32
    or float64 and integer labels (N,); a label outside [0, K) raises ValueError."""
    n, k = logits.shape
    expect_shape("softmax_cross_entropy", "labels", labels, (n,))
    logits = np.ascontiguousarray(logits)
    probs = np.empty_like(logits)
    total, bad = _softmax_cross_entropy_numba(logits, labels, probs)
    if bad >= 0:
        raise ValueError(f"Label {labels[bad]} of sample {bad} is outside [0, {k - 1}]: labels must be class "
                         f"indices for a model with {k} outputs.")
    return (total / n if n else math.nan), probs


def softmax_cross_entropy_backward(probs, labels):
    """dL/dlogits (N, K) from the forward's probs and the same labels."""
    expect_shape("softmax_cross_entropy_backward", "labels", labels, (probs.shape[0],))
    return _softmax_cross_entropy_backward_numba(probs, labels)
