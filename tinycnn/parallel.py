"""Data parallelism: every core trains on its own share of the batch, and the gradients add up.

The loss of a batch is a mean over its samples, L = (1/N) Σ_n loss_n, so its gradient is a sum
over the samples too. Split the batch into shares, one per core; each core runs the forward pass,
the loss and the backward pass on its share, with dL/dlogits scaled by (its share's size) / N
instead of 1 / its size; then the gradients of all the shares, added together, are exactly the
gradient of the whole batch (up to the order of the float additions). That is how PyTorch's
DistributedDataParallel and Horovod train on many GPUs; here the "devices" are CPU cores.

Why not let each kernel use both cores instead? NumPy's BLAS (OpenBLAS) keeps a thread pool of
its own, whose threads spin between matrix products; a second pool for our kernels (Numba's
``parallel=True``) fights it for the cores, and on 2 cores a step became many times slower. Here
there is one pool, ours: BLAS is told to use one thread (threadpoolctl) while ``fit`` runs, and
each share runs its matrix products and Numba kernels in its own thread. Both release Python's
GIL (the kernels are compiled with ``nogil=True``), so the threads really run at the same time;
only the few Python lines between kernels take turns.

Each thread needs layers of its own, because a layer remembers what its backward pass needs
(``cols``, ``mask``, ``argmax`` ...). :func:`replica` makes a copy that *shares* the original's
parameter arrays (so an optimizer update is seen by every copy) but has its own gradients and
caches. The first share runs on the model's own layers, in the calling thread.

Only layers that treat every sample on its own, and the same way every time, can be split like
this: BatchNormalization's statistics mix the samples of a batch, and Dropout draws random masks
from one generator, so a model with such layers after its first trainable layer trains in one
thread (:func:`can_split`). Augmentation layers before it are fine: they run on the whole batch
first, forward only.
"""

import copy
import os
from concurrent.futures import ThreadPoolExecutor

from .layers.activations import ReLU, Softmax
from .layers.conv import Conv2D
from .layers.dense import Dense
from .layers.pooling import MaxPool2D
from .layers.reshaping import Flatten, Reshape
from .plan import logit_steps, trainable_tail

#: Layers whose output for a sample depends on that sample alone, deterministically.
PER_SAMPLE = (Conv2D, MaxPool2D, Dense, ReLU, Softmax, Flatten, Reshape)

#: A share smaller than this costs more in thread hand-over than it saves.
MIN_SHARE = 4


def cpu_count():
    """Cores this process may run on (fewer than os.cpu_count() under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def can_split(layers, first_trainable):
    """True when every layer from the first trainable one on is in PER_SAMPLE (by exact type)."""
    return all(type(layer) in PER_SAMPLE for layer in layers[first_trainable:])


def replica(layer):
    """A copy of ``layer`` sharing its parameter arrays, with its own gradients and caches."""
    twin = copy.copy(layer)
    twin.grads = {}
    if getattr(layer, "activation", None) is not None:
        twin.activation = copy.copy(layer.activation)
    return twin


class DataParallel:
    """Trains ``model`` with ``threads`` shares per batch; use as a context manager in ``fit``."""

    def __init__(self, model, threads):
        self.model = model
        self.threads = threads
        copies = [model.layers] + [[replica(layer) for layer in model.layers] for _ in range(threads - 1)]
        self.head, _ = trainable_tail(logit_steps(model.layers))     # before the first parameters
        self.tails = [trainable_tail(logit_steps(layers))[1] for layers in copies]
        self.losses = [type(model.loss)() for _ in copies]
        self.params_of = [[layer.params for layer in layers] for layers in copies]
        self.grads_of = [[layer.grads for layer in layers] for layers in copies]

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self._blas = threadpool_limits(limits=1, user_api="blas")
        self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="tinycnn")
        return self

    def __exit__(self, *exc):
        self._pool.shutdown()
        self._blas.restore_original_limits()
        return False

    def train_step(self, x, y):
        """Forward and backward over the batch (x, y) in shares; returns (logits, loss).

        The model's layers end up holding the whole batch's gradients in ``grads``.
        """
        for step in self.head:                      # augmentation: the whole batch, forward only
            x = step.forward(x, training=True)
        n = len(x)
        shares = min(self.threads, max(1, n // MIN_SHARE))
        bounds = [n * k // shares for k in range(shares + 1)]
        jobs = [(k, slice(bounds[k], bounds[k + 1])) for k in range(shares)]
        futures = [self._pool.submit(self._share, k, x[s], y[s], n) for k, s in jobs[1:]]
        results = [self._share(0, x[jobs[0][1]], y[jobs[0][1]], n)] + [f.result() for f in futures]
        for k in range(1, shares):                  # add every share's gradients into the model's
            for grads, theirs in zip(self.grads_of[0], self.grads_of[k]):
                for name in grads:
                    grads[name] += theirs[name]
        xp_logits = results[0][0] if shares == 1 else _concat([r[0] for r in results])
        return xp_logits, sum(r[1] for r in results) / n

    def _share(self, k, x, y, n):
        """One share: forward to the logits, the loss, backward with dL/dlogits scaled to the batch."""
        for step in self.tails[k]:
            x = step.forward(x, training=True)
        loss = self.losses[k]
        value = float(loss.forward(x, y)) * len(y)
        d = loss.backward()
        d *= len(y) / n                              # loss.backward divided by len(y); we want n
        for step in reversed(self.tails[k]):
            d = step.backward(d)
        return x, value


def _concat(arrays):
    import numpy as np
    return np.concatenate(arrays)
