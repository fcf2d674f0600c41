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

Layers that treat every sample on its own (``Layer.per_sample``) split like this as they are.
Two more split with help from here, and compute exactly what they compute on the whole batch:

- Dropout draws each sample's mask from the batch's number and the sample's index in the batch
  (``layers/dropout.py``). Before each chunk's forward, every copy is told where its chunk
  starts, ``position = (batch number, index of the chunk's first sample)``; after the batch the
  model's layer counts it (``Dropout.batches``).
- BatchNormalization normalises with the statistics of the whole batch: each thread runs a
  :class:`~tinycnn.layers.normalization.BatchNormAcrossShares` in its place (or, fused with the
  convolution before it, a ``ConvBatchNormReLUMaxPool`` given the shared sums), which sums its
  share and meets the other threads (:class:`SumsAcrossShares`) to add the shares' sums, twice
  in the forward pass and once in the backward pass. A share then has to run whole: working through it
  in chunks (``CHUNK``, below) would normalise each chunk with statistics that the later chunks
  of the batch have not yet added to. So a model with BatchNormalization runs each share in one
  piece.

Any other layer with ``per_sample = False`` after the first trainable layer keeps the model in
one thread (:func:`can_split`). The layers before it run forward only. When they include
augmentation layers, and each of them is one or treats each sample on its own, they run in the
shares too: each augmentation layer of the model draws the whole batch's transforms here, in one
thread, as its own forward would, and each thread's copy warps its own images with its rows
(``given``, ``layers/augmentation.py``). Otherwise they run on the whole batch first, before
the shares.
"""

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .layers.fused import ConvBatchNormReLUMaxPool
from .layers.normalization import BatchNormalization, BatchNormAcrossShares
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


#: Steps that normalise with the statistics of the whole batch, and how each thread runs its own
#: copy of one across the shares: BatchNormalization, alone or fused (``layers/fused.py``).
ACROSS_SHARES = {BatchNormalization: BatchNormAcrossShares,
                 ConvBatchNormReLUMaxPool: ConvBatchNormReLUMaxPool.across_shares}


def can_split(layers):
    """True when every layer from the first trainable one on treats each sample on its own
    (``Layer.per_sample``) or has a twin that runs across the shares (``ACROSS_SHARES``); the
    layers before it run on the whole batch first."""
    return not_per_sample(layers) is None


def not_per_sample(layers):
    """The first layer, from the first trainable one on, that keeps a batch in one thread (its
    ``per_sample`` is False and it has no twin in ``ACROSS_SHARES``), or None."""
    return next((layer for layer in layers[first_trainable(layers):]
                 if not layer.per_sample and type(layer) not in ACROSS_SHARES), None)


def replica(layer):
    """A copy of ``layer`` sharing its parameter arrays, with its own gradients and caches."""
    twin = copy.copy(layer)
    twin.grads = {}
    if getattr(layer, "activation", None) is not None:
        twin.activation = copy.copy(layer.activation)
    return twin


class Gate:
    """Where ``parties`` threads meet, again and again: each calls ``wait(k)`` with its own k, and
    none returns before all have called it. What ``threading.Barrier`` does, with less Python on
    the way: a thread that must wait blocks on a lock of its own, which the last to arrive
    releases. (A Barrier is a Condition, whose wait and wake-up run more Python lines, all holding
    the GIL that the other thread needs at that very moment; docs/performance.md measures both.)

    ``abort`` breaks the gate for good: every thread waiting, and every later ``wait``, raises
    ``threading.BrokenBarrierError``, as a broken Barrier does.
    """

    def __init__(self, parties):
        self.parties, self.broken = parties, False
        self._lock = threading.Lock()               # guards the count and the list of who waits
        self._arrived, self._waiting = 0, []
        self._gates = [threading.Lock() for _ in range(parties)]
        for gate in self._gates:
            gate.acquire()                          # closed: a thread waits by acquiring its own

    def wait(self, k):
        with self._lock:
            if self.broken:
                raise threading.BrokenBarrierError
            self._arrived += 1
            last = self._arrived == self.parties
            if last:                                # open every gate, for the next meeting too
                self._arrived, waiting, self._waiting = 0, self._waiting, []
            else:
                self._waiting.append(k)
        if last:
            for j in waiting:
                self._gates[j].release()
            return
        self._gates[k].acquire()                    # until the last arrives, or abort
        if self.broken:
            raise threading.BrokenBarrierError

    def abort(self):
        with self._lock:
            self.broken = True
            waiting, self._waiting = self._waiting, []
        for j in waiting:
            self._gates[j].release()


class SumsAcrossShares:
    """Where the threads of one batch add up their shares' sums (an all-reduce): each of the
    batch's ``shares`` threads calls ``total(k, part)`` with its own share's ``part``, waits for
    the others, and gets the sum of every share's part. The parts are added in share order, so
    every thread gets the same numbers, and the same on every run.

    One per BatchNormalization layer, shared by its copies. ``begin`` sets, before each batch, how
    many threads will meet and ``samples``, the batch's N. ``abort`` releases every thread
    waiting (with ``threading.BrokenBarrierError``): a share that fails, or that stops before its
    backward pass, must not leave the others waiting for it.

    The parts of successive calls go to two lists in turn. A thread writes a list again two calls
    later, after the meeting of the call between, which no thread reaches before it has read that
    list: so one meeting per call is enough.
    """

    def __init__(self):
        self.gate, self.parts, self.calls, self.samples = None, [[], []], [], None

    def begin(self, shares, samples):
        if self.gate is None or self.gate.parties != shares or self.gate.broken:
            self.gate = Gate(shares)
            self.parts = [[None] * shares, [None] * shares]
        self.calls, self.samples = [0] * shares, samples       # each thread's count of its calls

    def total(self, k, part):
        """Σ of every share's ``part`` (thread k's is ``part``). Every thread of a batch must make
        the same calls, in the same order."""
        if len(self.calls) == 1:
            return part
        parts = self.parts[self.calls[k] % 2]
        self.calls[k] += 1
        parts[k] = part
        self.gate.wait(k)               # every share's part is in
        total = parts[0]
        for other in parts[1:]:
            total = total + other
        return total

    def abort(self):
        if self.gate is not None:
            self.gate.abort()


class DataParallel:
    """Trains ``model`` with ``threads`` shares per batch; use as a context manager in ``fit``."""

    def __init__(self, model, threads, chunk=CHUNK):
        self.threads = threads
        copies = [model.layers] + [[replica(layer) for layer in model.layers] for _ in range(threads - 1)]
        self.plans = [Plan(layers, type(model.loss)(), fast=True) for layers in copies]
        self.grads_of = [[layer.grads for layer in layers] for layers in copies]
        # Dropout's copies, told where each chunk starts (see the module docstring)
        self.drawing = [[layer for layer in layers if hasattr(layer, "position")] for layers in copies]
        # The augmentation layers' copies, given their images' transforms. The shares start at the
        # first step when there are some, and every step before the first with parameters is one
        # or treats each sample on its own; otherwise those steps run on the whole batch first.
        self.warping = [[layer for layer in layers if hasattr(layer, "draw_transforms")] for layers in copies]
        first = self.plans[0].first
        ahead = self.plans[0].steps[:first]
        self.start = first
        if self.warping[0] and all(getattr(step, "per_sample", False) or step in self.warping[0] for step in ahead):
            self.start = 0
        self.sums = self._across_shares()
        self.chunk = None if self.sums else chunk      # a share with BatchNormalization runs whole

    def _across_shares(self):
        """Put a twin that runs across the shares (``ACROSS_SHARES``) in place of each such step
        of every thread's plan; returns the SumsAcrossShares, one per step replaced."""
        all_sums = []
        for i, step in enumerate(self.plans[0].steps):
            twin = ACROSS_SHARES.get(type(step))
            if twin is not None:
                sums = SumsAcrossShares()
                for k, plan in enumerate(self.plans):
                    plan.steps[i] = twin(plan.steps[i], sums, k)
                all_sums.append(sums)
        return all_sums

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
        check the layer contract in every share (``Plan.check``). When the loss is not finite
        the logits are None, and the gradients are not to be used.
        """
        for plan in self.plans:
            plan.check = check
        if self.start == 0:         # augmentation in the shares, with the whole batch's transforms
            transforms = [layer.draw_transforms(len(x)) for layer in self.warping[0]]
        else:                       # the layers before the first with parameters: the whole batch
            x, transforms = self.plans[0].forward(x, training=True, stop=self.start), []
        n = len(x)
        shares = self._shares(n)
        for sums in self.sums:
            sums.begin(len(shares), n)
        batches = [layer.batches for layer in self.drawing[0]]      # this batch's number, per Dropout
        try:
            results = self._run(self._share, [(k, s, x[s], y[s], n, batches, transforms)
                                              for k, s in enumerate(shares)])
        finally:
            for layers in self.drawing:
                for layer in layers:
                    layer.position = None
            for layers in self.warping:
                for layer in layers:
                    layer.given = None
        for layer in self.drawing[0]:
            layer.batches += 1
        loss = sum(r[1] for r in results) / n
        if any(r[0] is None for r in results):      # a share stopped before its backward pass
            return None, loss
        for k in range(1, len(results)):            # add every share's gradients into the model's
            for grads, theirs in zip(self.grads_of[0], self.grads_of[k]):
                for name in grads:
                    grads[name] += theirs[name]
        return _concat([r[0] for r in results]), loss

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
        """fn(*job) for every job: the first in this thread, the others in the pool, at once.
        Every job ends before this returns or raises; of several errors, the first that is not
        a BrokenBarrierError (which only says that another share failed) is raised."""
        futures = [self._pool.submit(fn, *job) for job in jobs[1:]]
        results, errors = [], []
        for run in [lambda: fn(*jobs[0])] + [f.result for f in futures]:
            try:
                results.append(run())
            except BaseException as err:    # noqa: B036 -- waits for the other jobs, then re-raised
                errors.append(err)
        if errors:
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
        return results

    def _share(self, k, s, x, y, n, batches, transforms):
        """One thread's share x = the batch's x[s], in chunks of at most ``self.chunk`` images
        (whole when it is None): each chunk's loss and gradients with dL/dlogits scaled to the
        whole batch (``Plan.loss_and_gradients``); the chunks' gradients add up (gradient
        accumulation). Returns (logits, loss summed over the share). ``transforms``: the whole
        batch's, one array per augmentation layer, when the shares run it (``self.start`` 0).

        A loss that is not finite stops the share before its backward pass, and the logits are
        None. With BatchNormalization the other shares would wait for this one in theirs: it
        releases them (``SumsAcrossShares.abort``), and they stop too. So does any error.
        """
        plan, grads = self.plans[k], self.grads_of[k]
        chunk = self.chunk or len(x)
        outputs, total, sums = [], 0.0, None
        try:
            for start in range(0, len(x), chunk):
                for layer, batch in zip(self.drawing[k], batches):
                    layer.position = (batch, s.start + start)
                xc, yc = x[start:start + chunk], y[start:start + chunk]
                for layer, rows in zip(self.warping[k], transforms):
                    layer.given = rows[s.start + start:s.start + start + len(xc)]
                logits, loss = plan.loss_and_gradients(xc, yc, scale=len(yc) / n, start=self.start)
                total += loss * len(yc)
                if not np.isfinite(loss):
                    self._abort()
                    return None, total
                outputs.append(logits)
                if len(x) > chunk:
                    sums = _accumulate(sums, grads)
        except threading.BrokenBarrierError:    # another share stopped: it says why
            return None, float("nan")
        except BaseException:
            self._abort()
            raise
        if sums is not None:
            for layer_grads, layer_sums in zip(grads, sums):
                layer_grads.update(layer_sums)
        return _concat(outputs), total

    def _abort(self):
        for sums in self.sums:
            sums.abort()


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
