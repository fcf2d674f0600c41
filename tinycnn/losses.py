"""The loss: softmax and cross-entropy fused into one stable step."""

import numpy as np

from .backend import get_array_module
from .kernels.cross_entropy import softmax_cross_entropy, softmax_cross_entropy_backward


def check_labels(y, num_classes, n=None):
    """Integer class labels in [0, num_classes), shape (N,) or (N, 1); returns them as (N,) int64.

    Raises a clear error for float labels that are not whole numbers, one-hot labels, and labels
    out of range -- the mistakes people make with ``sparse_categorical_crossentropy``.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = (" They look one-hot: compile with loss='categorical_crossentropy', or pass "
                "y.argmax(axis=1).") if y.ndim == 2 else ""
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

    What ``fit`` runs: by default, on the CPU, :class:`OnePassSoftmaxCrossEntropy`, these lines
    as one compiled kernel each way (``kernels/cross_entropy.py`` says why), which
    ``tests/test_cross_entropy_kernel.py`` proves equal; ``compile(fast=False)`` runs this code.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=None):
        # Keras's from_logits says whether the model's output is logits or probabilities; here
        # the loss always takes the logits (a final softmax is the model's, see Sequential.compile),
        # so both values give the same training. It is accepted for Keras's sake.
        self.from_logits = from_logits

    def check_targets(self, y, num_classes, n=None):
        """``y`` as this loss takes it: integer class labels (:func:`check_labels`)."""
        return check_labels(y, num_classes, n)

    @staticmethod
    def classes(targets):
        """The class of each target, for accuracy: the labels themselves."""
        return targets

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


class OnePassSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """SoftmaxCrossEntropy as the fast mode runs it on the CPU (``Plan`` puts it in): the same
    lines, each pass one Numba kernel (``kernels/cross_entropy.py``), and the same numbers to
    float rounding. It keeps ``labels`` and ``probs`` as the reference does. CuPy arrays take
    the reference's own lines."""

    def forward(self, logits, labels):
        if not isinstance(logits, np.ndarray):
            return super().forward(logits, labels)
        loss, self.probs = softmax_cross_entropy(logits, labels)
        self.labels = labels
        return loss

    def backward(self):
        if not isinstance(self.probs, np.ndarray):
            return super().backward()
        return softmax_cross_entropy_backward(self.probs, self.labels)


def fast_twin(loss):
    """The loss as the fast mode runs it: a SoftmaxCrossEntropy's one-pass twin, or the loss
    itself (one-hot targets, and any loss of a user's, have no twin)."""
    return OnePassSoftmaxCrossEntropy(loss.from_logits) if type(loss) is SoftmaxCrossEntropy else loss


class CategoricalCrossEntropy(SoftmaxCrossEntropy):
    """The same loss with one-hot targets, as Keras's ``categorical_crossentropy`` takes them
    (``tinycnn.utils.to_categorical(y)``). Shapes: logits and targets (N, K); targets are rows
    of non-negative numbers summing to 1 (one-hot, or smoothed).

    Forward: loss = -mean_n sum_k t_nk log softmax(z_n)_k; with one-hot t this is the sparse
    loss. Backward: d/dz_k of -sum_j t_j (z_j - log sum exp z) = -t_k + softmax(z)_k sum_j t_j,
    and the targets sum to 1, so dL/dz = (softmax(z) - t) / N, as for the sparse loss.
    """

    name = "categorical_crossentropy"

    def check_targets(self, y, num_classes, n=None):
        """One row per sample, ``num_classes`` columns, non-negative, each row summing to 1."""
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != num_classes:
            hint = (" They look like class indices: pass tinycnn.utils.to_categorical(y), or compile with "
                    "loss='sparse_categorical_crossentropy'.") if y.ndim == 1 else ""
            raise ValueError(f"categorical_crossentropy takes one-hot targets of shape (N, {num_classes}), got "
                             f"shape {y.shape}.{hint}")
        if n is not None and len(y) != n:
            raise ValueError(f"x has {n} samples but y has {len(y)} targets; they must match.")
        y = y.astype(np.float64)
        if not np.isfinite(y).all() or (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError("categorical_crossentropy takes targets that are one-hot rows (or probabilities "
                             "summing to 1 per row); these are not. Make them with tinycnn.utils.to_categorical.")
        return y

    @staticmethod
    def classes(targets):
        return targets.argmax(axis=1)

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.targets = targets.astype(logits.dtype, copy=False)
        self.probs = xp.exp(log_probs)
        return -(self.targets * log_probs).sum(axis=1).mean()

    def backward(self):
        return (self.probs - self.targets) / self.probs.shape[0]


#: Keras's names and class names (case and underscores aside) -> the loss.
SparseCategoricalCrossentropy = SoftmaxCrossEntropy        # Keras's class names, for its scripts
CategoricalCrossentropy = CategoricalCrossEntropy
LOSSES = {"sparsecategoricalcrossentropy": SoftmaxCrossEntropy, "softmaxcrossentropy": SoftmaxCrossEntropy,
          "categoricalcrossentropy": CategoricalCrossEntropy}


def get(loss):
    """A loss object from a loss object or a name: 'sparse_categorical_crossentropy' (integer
    labels) or 'categorical_crossentropy' (one-hot), in any case, with or without underscores."""
    if isinstance(loss, SoftmaxCrossEntropy):
        return loss
    key = loss.lower().replace("_", "") if isinstance(loss, str) else None
    if key not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; use 'sparse_categorical_crossentropy' (integer labels), "
                         "'categorical_crossentropy' (one-hot labels) or a loss object.")
    return LOSSES[key]()
