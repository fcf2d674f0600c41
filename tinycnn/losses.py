"""The loss: softmax and cross-entropy fused into one stable step."""

import numpy as np

from .backend import get_array_module


def check_labels(y, num_classes, n=None):
    """Integer class labels in [0, num_classes), shape (N,) or (N, 1); returns them as (N,) int64.

    Raises a clear error for float labels that are not whole numbers, one-hot labels, and labels
    out of range -- the mistakes people make with ``sparse_categorical_crossentropy``.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " They look one-hot; pass y.argmax(axis=1) instead." if y.ndim == 2 else ""
        raise ValueError(f"Labels must be class indices of shape (N,), got shape {y.shape}.{hint}")
    if n is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)} labels; they must match.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"Labels must be integers (class indices), got dtype {y.dtype}; "
                             "convert with y.astype('int64').")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"Labels must be in [0, {num_classes - 1}] for a model with {num_classes} "
                         f"outputs, but they range over [{y.min()}, {y.max()}].")
    return y


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels, computed from the logits.

    Shapes: logits (N, K), labels (N,) integers in [0, K); the loss is a scalar.

    Forward, stably: log softmax(z)_k = z_k - m - log(sum_j exp(z_j - m)) with m = max_j z_j, so
    exp() never overflows (logits of 1e4 are fine) and log() never sees 0.
        loss = -mean_n log softmax(z_n)[y_n]

    Backward: for one sample, -log softmax(z)_y = -z_y + log(sum_j exp(z_j)). Differentiate the
    two terms by z_k: d(-z_y)/dz_k = -[k == y], and d log(sum_j exp(z_j))/dz_k
    = exp(z_k) / sum_j exp(z_j) = softmax(z)_k. Together:
        d(-log softmax(z)_y)/dz_k = softmax(z)_k - [k == y]
    The loss is the mean over the batch, so each sample's gradient is divided by N:
        dL/dz = (softmax(z) - onehot(y)) / N

    Computing softmax and then log() in two steps would give log(0) = -inf for a confident wrong
    answer; this fused form cannot.
    """

    name = "sparse_categorical_crossentropy"

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_sum
        self.labels = labels
        self.probs = xp.exp(log_probs)
        n = logits.shape[0]
        return -log_probs[xp.arange(n), labels].mean()

    def backward(self):
        xp = get_array_module(self.probs)
        n = self.probs.shape[0]
        dz = self.probs.copy()
        dz[xp.arange(n), self.labels] -= 1
        dz /= n
        return dz

    def __call__(self, logits, labels):
        return self.forward(logits, labels)


LOSSES = {"sparse_categorical_crossentropy": SoftmaxCrossEntropy,
          "softmax_cross_entropy": SoftmaxCrossEntropy}


def get(loss):
    if isinstance(loss, SoftmaxCrossEntropy):
        return loss
    try:
        return LOSSES[loss]()
    except (KeyError, TypeError):
        raise ValueError(f"Unknown loss {loss!r}; use 'sparse_categorical_crossentropy' "
                         "or a SoftmaxCrossEntropy() object.") from None
