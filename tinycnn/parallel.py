"""Data parallelism: every core trains on its own share of the batch, and the gradients add up.

The loss of a batch is a mean over its samples, L = (1/N) Σ_n loss_n, so its gradient is a sum
over the samples too. Split the batch into shares, one per core; each core runs the forward pass,
the loss and the backward pass on its share, with dL/dlogits scaled by (its share's size) / N
instead of 1 / its size; then the gradients of all the shares, added together, are exactly the
gradient of the whole batch (up to the order of the float additions). That is how PyTorch's
DistributedDataParallel and Horovod train on many GPUs; here the "devices" are CPU cores.

Why not let each kernel use several cores instead? NumPy's BLAS (OpenBLAS) keeps a thread pool of
its own, whose threads spin between matrix products; a second pool for our kernels (Numba's
``parallel=True``) would fight it for the cores (``benchmarks/kernels.py`` measures it, and
``docs/`` holds the figures). Here there is one pool, ours: BLAS is told to use one thread
(threadpoolctl) while ``fit`` runs, and each share runs its matrix products and Numba kernels in
its own thread. Both release Python's GIL (the kernels are compiled with ``nogil=True``), so the
threads really run at the same time; only the few Python lines between kernels take turns.

Each thread needs layers of its own, because a layer remembers what its backward pass needs
(``cols``, ``mask``, ``argmax`` ...). :func:`replica` makes a copy that *shares* the original's
parameter arrays (so an optimizer update is seen by every copy) but has its own gradients and
caches. Every thread runs its share through a :class:`~tinycnn.plan.Plan` of its own copies, the
same loop as one thread runs; the first share runs on the model's own layers, in the calling
thread.

Only layers that treat every sample on its own, and the same way every time, can be split like
this (``Layer.per_sample``): BatchNormalization's statistics mix the samples of a batch, and
Dropout draws random masks from one generator, so a model with such layers after its first
trainable layer trains in one thread (:func:`can_split`). Augmentation layers before it are fine:
they run on the whole batch first, forward only.
"""

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .plan import Plan, first_trainable

#: A share smaller than this costs more in thread hand-over than it saves.
MIN_SHARE = 4

#: A thread works through its share in chunks of at most this many images, so that the largest
#: arrays of a step (im2col's columns, Winograd's transformed tiles) stay in its cache.
CHUNK = 16


def cpu_count():
    """Cores this process may run on (fewer than os.cpu_count() under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def can_split(layers):
    """True when every layer from the first trainable one on treats each sample on its own
    (``Layer.per_sample``); the layers before it run on the whole batch first."""
    return not_per_sample(layers) is None


def not_per_sample(layers):
    """The first layer, from the first trainable one on, that keeps a batch in one thread (its
    ``per_sample`` is False), or None."""
    return next((layer for layer in layers[first_trainable(layers):] if not layer.per_sample), None)


def replica(layer):
    """A copy of ``layer`` sharing its parameter arrays, with its own gradients and caches."""
    twin = copy.copy(layer)
    twin.grads = {}
    if getattr(layer, "activation", None) is not None:
        twin.activation = copy.copy(layer.activation)
    return twin


class DataParallel:
    """Trains ``model`` with ``threads`` shares per batch; use as a context manager in ``fit``."""

    def __init__(self, model, threads, chunk=CHUNK):
        self.threads, self.chunk = threads, chunk
        copies = [model.layers] + [[replica(layer) for layer in model.layers] for _ in range(threads - 1)]
        self.plans = [Plan(layers, type(model.loss)(), fast=True) for layers in copies]
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

    def train_step(self, x, y, check=False):
        """Forward and backward over the batch (x, y) in shares; returns (logits, loss).

        The model's layers end up holding the whole batch's gradients in ``grads``. ``check``:
        check the layer contract in every share (``Plan.check``).
        """
        for plan in self.plans:
            plan.check = check
        first = self.plans[0].first
        x = self.plans[0].forward(x, training=True, stop=first)     # augmentation: the whole batch
        n = len(x)
        results = self._run(self._share, [(k, x[s], y[s], n) for k, s in enumerate(self._shares(n))])
        for k in range(1, len(results)):            # add every share's gradients into the model's
            for grads, theirs in zip(self.grads_of[0], self.grads_of[k]):
                for name in grads:
                    grads[name] += theirs[name]
        return _concat([r[0] for r in results]), sum(r[1] for r in results) / n

    def logits(self, x):
        """Inference (``fit``'s validation): each thread computes the logits of its share."""
        jobs = [(self.plans[k].forward, x[s]) for k, s in enumerate(self._shares(len(x)))]
        return _concat(self._run(lambda forward, xs: forward(xs, training=False), jobs))

    def _shares(self, n):
        """n samples as slices, one per thread (fewer when a share would be under MIN_SHARE)."""
        shares = min(self.threads, max(1, n // MIN_SHARE))
        bounds = [n * k // shares for k in range(shares + 1)]
        return [slice(bounds[k], bounds[k + 1]) for k in range(shares)]

    def _run(self, fn, jobs):
        """fn(*job) for every job: the first in this thread, the others in the pool, at once."""
        futures = [self._pool.submit(fn, *job) for job in jobs[1:]]
        return [fn(*jobs[0])] + [f.result() for f in futures]

    def _share(self, k, x, y, n):
        """One thread's share, in chunks of at most ``self.chunk`` images: each chunk's loss and
        gradients with dL/dlogits scaled to the whole batch (``Plan.loss_and_gradients``); the
        chunks' gradients add up (gradient accumulation). Returns (logits, loss summed over the
        share)."""
        plan, grads = self.plans[k], self.grads_of[k]
        starts = range(0, len(x), self.chunk)
        outputs, total, sums = [], 0.0, None
        for start in starts:
            xc, yc = x[start:start + self.chunk], y[start:start + self.chunk]
            logits, loss = plan.loss_and_gradients(xc, yc, scale=len(yc) / n, start=plan.first)
            total += loss * len(yc)
            outputs.append(logits)
            if len(starts) > 1:
                sums = _accumulate(sums, grads)
        if sums is not None:
            for layer_grads, layer_sums in zip(grads, sums):
                layer_grads.update(layer_sums)
        return _concat(outputs), total


def _accumulate(sums, grads):
    """sums += grads, layer by layer and name by name (a copy of grads when sums is None)."""
    if sums is None:
        return [{name: g.copy() for name, g in layer_grads.items()} for layer_grads in grads]
    for layer_sums, layer_grads in zip(sums, grads):
        for name in layer_sums:
            layer_sums[name] += layer_grads[name]
    return sums


def _concat(arrays):
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
