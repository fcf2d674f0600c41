"""Adam's update fused: one parameter in one pass on the CPU, or every parameter at once, without
waiting, on the GPU.

Its reference is ``Adam.update`` in ``tinycnn/optimizers.py``, which writes Adam's lines with NumPy,
beside their formula:

    m += (1 - beta_1) * (g - m)
    v += (1 - beta_2) * (g*g - v)
    p -= alpha * m / (sqrt(v) + epsilon)

One parameter in one pass (the CPU): ``adam_update``
-----------------------------------------------------
With NumPy the lines make about ten passes over memory, each allocating a temporary the size of
the parameter. The Numba kernel does all of it for one element at a time, in registers.

It can also *check without writing* (``write=False``): it computes the new p, m and v and
reports whether every one of them is finite, changing nothing. The optimizer checks every
parameter first and writes only when all of them pass, so a diverging step is never half
applied (see ``Optimizer.step``).

That computes every update twice, and Adam's square root and division are most of its time. So
``fit``'s step uses a third form, ``adam_update_and_keep``: one pass that writes the new values
and keeps the ones it overwrote (``kept``, three numbers per parameter number). Adam writes the
parameters one after another this way; in the rare step where one is not finite it puts back
what the earlier ones overwrote (``put_back``), and the step is refused whole all the same.

Every parameter at once, with a sticky flag (the GPU): ``FlatAdam``
--------------------------------------------------------------------
On the GPU each NumPy line is a kernel launch, and each check ``bool(isfinite(a).all())`` makes
the host wait until the device has finished and sent one number back. Checked, then written,
Adam's lines cost dozens of launches and several waits per parameter, at every step.
``FlatAdam`` does the step of every parameter in two launches and waits for nothing:

- m and v of every parameter live in two flat buffers, parameter after parameter: parameter k
  holds elements ``offsets[k]`` to ``offsets[k + 1] - 1``. The gradients are copied into a third
  buffer of the same layout, ``g`` (one copy per parameter). ``Adam.state``'s m and v are views
  into the flat buffers, so saving, moving and loading the state work as before.
- the parameters stay where they are: the layers' own arrays. The kernel is handed the list of
  their addresses and the offsets, and each thread finds the parameter that holds its element
  by a binary search over the offsets. Views of the parameters into a flat buffer would save
  nothing more, and would silently come apart whenever something puts a new array into
  ``layer.params`` (``Layer.to``, ``set_weights`` of another dtype, a user); a new array here only
  means a new list of addresses (``Adam`` compares the arrays at every step and makes a new
  ``FlatAdam`` when one changed).
- the check's answer stays on the device, in the *flag*: one int64 that every later step reads
  there, and the host reads only when it reads something else anyway (``Trainer._fit_epoch``).

The flag::

    CLEAN                       every step so far was finite
    batch * 2**32 + what        the first step that was not: ``batch`` is its number in the
                                epoch, ``what`` 0 for the loss and k + 1 for parameter k

A thread that finds a value that is not finite takes the minimum of the flag and its own
``batch * 2**32 + what`` (CUDA's ``atomicMin``), so the flag keeps the earliest batch, and in it
the loss before any parameter and the first parameter before later ones: what ``Optimizer.step``
reports. The flag is *sticky*: a step finds it set by an earlier batch and changes nothing, so
the weights and moments stay those from before the first bad step, however many steps run after
it before the host looks.

Two launches, because no thread can know whether a thread elsewhere on the GPU will find a bad
value before it writes:

    flat_adam_check    compute every new m, v and p; set the flag where one is not finite
    flat_adam_write    if the flag is CLEAN, compute them again and write them; if this batch
                       set it, keep this batch's gradients (``g_bad``) for the error message

``flat_adam_reference`` below is both, in NumPy, with ``Adam.update``'s own lines: read it first.
The CUDA kernels are in ``kernels/cuda.py``; ``tests/test_flat_adam.py`` proves the reference equal
to ``Adam.update`` bit for bit, and the kernels, compiled for the CPU, equal to the reference.

The same flag guards the epoch's running loss and accuracy, which are summed on the device too:
``add_unless_flagged`` adds a batch's loss and number correct only while the flag is CLEAN, so
the totals cover exactly the batches whose updates were applied.
"""

import numpy as np

from ..backend import get_array_module
from .jit import jit


@jit(helper=True)
def _adam_element(pi, gi, mi, vi, alpha, c1, c2, epsilon):
    """One number's update, Adam.update's lines: the new (p, m, v), and 1 if one of them is not
    finite, else 0. c1 = 1 - beta_1 and c2 = 1 - beta_2, in the parameter's dtype."""
    mi = mi + c1 * (gi - mi)
    vi = vi + c2 * (gi * gi - vi)
    pi = pi - alpha * mi / (np.sqrt(vi) + epsilon)
    s = mi * 0 + vi * 0 + pi * 0             # 0 when all three are finite; NaN otherwise
    return pi, mi, vi, s != s


@jit()
def _adam_update_numba(p, g, m, v, alpha, c1, c2, epsilon, write):
    # p, g, m, v are flat, of one size
    bad = 0
    for i in range(p.size):
        pi, mi, vi, not_finite = _adam_element(p[i], g[i], m[i], v[i], alpha, c1, c2, epsilon)
        bad += not_finite
        if write:
            m[i], v[i], p[i] = mi, vi, pi
    return bad == 0


def adam_update(param, grad, m, v, alpha, beta_1, beta_2, epsilon, write=True):
    """Update (param, m, v) in place when ``write``; return whether all the new values are finite.

    NumPy arrays of one shape and dtype; param, m and v C-contiguous, since the kernel writes them
    through flat views. The kernel does not check its indices, so this wrapper refuses anything else.
    """
    t = param.dtype.type        # compute in the parameter's dtype, as NumPy does with these scalars
    return _adam_update_numba(*_flat("adam_update", param, grad, m, v), t(alpha), t(1 - beta_1), t(1 - beta_2),
                              t(epsilon), write)


def _flat(kernel, param, grad, m, v):
    """Flat views of the four arrays (one compiled kernel for every shape), after checking them."""
    if any(a.shape != param.shape or a.dtype != param.dtype for a in (grad, m, v)) or not all(
            a.flags.c_contiguous for a in (param, m, v)):
        raise ValueError(f"{kernel} needs param, grad, m and v of one shape and dtype, and param, m "
                         "and v C-contiguous; got " + ", ".join(
                             f"{a.shape} {a.dtype}" for a in (param, grad, m, v)) + ".")
    return [a.reshape(-1) for a in (param, np.ascontiguousarray(grad), m, v)]


@jit()
def _adam_update_and_keep_numba(p, g, m, v, alpha, c1, c2, epsilon, kept):
    # as _adam_update_numba writing, and kept (3, size) gets the p, m and v it overwrites
    bad = 0
    for i in range(p.size):
        kept[0, i], kept[1, i], kept[2, i] = p[i], m[i], v[i]
        pi, mi, vi, not_finite = _adam_element(p[i], g[i], m[i], v[i], alpha, c1, c2, epsilon)
        bad += not_finite
        m[i], v[i], p[i] = mi, vi, pi
    return bad == 0


def adam_update_and_keep(param, grad, m, v, alpha, beta_1, beta_2, epsilon, kept):
    """adam_update writing, in the same one pass, into ``kept`` (3, param.size) the param, m and
    v it overwrites; returns whether all the new values are finite. ``put_back`` undoes it."""
    if kept.shape != (3, param.size) or kept.dtype != param.dtype or not kept.flags.c_contiguous:
        raise ValueError(f"adam_update_and_keep needs kept of shape {(3, param.size)} ({param.dtype}), "
                         f"C-contiguous; got {kept.shape} ({kept.dtype}).")
    t = param.dtype.type
    return _adam_update_and_keep_numba(*_flat("adam_update_and_keep", param, grad, m, v), t(alpha),
                                       t(1 - beta_1), t(1 - beta_2), t(epsilon), kept)


def put_back(param, m, v, kept):
    """Undo adam_update_and_keep: param, m and v as they were before it."""
    for a, old in zip((param, m, v), kept):
        a.reshape(-1)[...] = old


# ---------------------------------------------------------------------------------------------
# Every parameter at once, guarded by the sticky flag.
# ---------------------------------------------------------------------------------------------

CLEAN = np.iinfo(np.int64).max      # the flag while every step so far was finite
BATCH = 2 ** 32                     # flag = batch * BATCH + what


def new_flag(xp):
    """A CLEAN flag on the device of array module ``xp`` (NumPy or CuPy)."""
    return xp.full(1, CLEAN, dtype=xp.int64)


def read_flag(flag):
    """(batch, what) of the first step that was not finite, or None while the flag is CLEAN.
    On the GPU this waits for the device: call it when the host reads anyway."""
    value = int(flag[0])
    return None if value == CLEAN else (value // BATCH, value % BATCH)


def flat_adam_reference(params, offsets, g, m, v, g_bad, loss, flag, batch, alpha, beta_1, beta_2, epsilon):
    """One Adam step of every parameter, as the two CUDA kernels take it, in NumPy.

    ``params``: the parameters (any shapes, one dtype); ``offsets``: where each one's elements
    start in the flat buffers ``g`` (the gradients), ``m``, ``v`` and ``g_bad``, with the total at
    the end; ``loss``: the batch's loss; ``flag``: the sticky flag (int64, 1); ``batch``: this
    step's number in the epoch. Changes ``params``, ``m``, ``v`` and ``flag`` in place, or, for
    a bad step, only ``flag`` and ``g_bad``. The lines are ``Adam.update``'s, on parameter k's
    share of the flat buffers.
    """
    xp = get_array_module(g)
    first = batch * BATCH           # this batch's flag values are first + what
    shares = [slice(offsets[k], offsets[k + 1]) for k in range(len(params))]
    with np.errstate(over="ignore", invalid="ignore"):      # reported by the flag instead
        # flat_adam_check: every new value, written nowhere; the flag set where one is not finite
        if int(flag[0]) >= first:                           # else an earlier batch set it
            if not bool(xp.isfinite(loss)):
                flag[0] = min(int(flag[0]), first)
            for k, (p, s) in enumerate(zip(params, shares)):
                new_m = m[s] + (1 - beta_1) * (g[s] - m[s])
                new_v = v[s] + (1 - beta_2) * (g[s] * g[s] - v[s])
                new_p = p.reshape(-1) - alpha * new_m / (xp.sqrt(new_v) + epsilon)
                if not all(bool(xp.isfinite(a).all()) for a in (new_m, new_v, new_p)):
                    flag[0] = min(int(flag[0]), first + k + 1)
        # flat_adam_write: everything, or nothing
        if int(flag[0]) != CLEAN:
            if int(flag[0]) // BATCH == batch:              # this batch set it: keep its gradients
                g_bad[...] = g
            return
        for p, s in zip(params, shares):
            new_m = m[s] + (1 - beta_1) * (g[s] - m[s])
            new_v = v[s] + (1 - beta_2) * (g[s] * g[s] - v[s])
            new_p = p.reshape(-1) - alpha * new_m / (xp.sqrt(new_v) + epsilon)
            m[s], v[s], p[...] = new_m, new_v, new_p.reshape(p.shape)


class FlatAdam:
    """Adam's m and v for a list of parameters in flat buffers, and the step that updates them all.

    ``params`` are the layers' own arrays, in the order of ``Optimizer.step``'s slots, of one
    dtype, on one device; they stay where they are. Buffers, all flat, parameter after parameter
    (``offsets``): ``m`` and ``v``; ``g``, the gradients gathered for a step; ``g_bad``, the
    gradients of the first step the flag stopped. ``segment(buffer, k)`` is parameter k's share
    of a buffer, shaped like it: a view.
    """

    def __init__(self, params):
        xp = get_array_module(params[0])
        self.params = list(params)
        self.offsets = [0]
        for p in self.params:
            self.offsets.append(self.offsets[-1] + int(p.size))
        dtype = self.params[0].dtype
        self.m, self.v, self.g, self.g_bad = (xp.zeros(self.offsets[-1], dtype=dtype) for _ in range(4))
        self.table = None           # on the GPU: the parameters' addresses and the offsets there

    def segment(self, buffer, k):
        return buffer[self.offsets[k]:self.offsets[k + 1]].reshape(self.params[k].shape)

    def gather(self, grads):
        """Copy each parameter's gradient into its share of ``g``."""
        for k, grad in enumerate(grads):
            self.segment(self.g, k)[...] = grad

    def step(self, loss, flag, batch, alpha, beta_1, beta_2, epsilon):
        """Update every parameter from ``g`` (:meth:`gather`), unless the loss or a new value is not
        finite or ``flag`` was set by an earlier batch: then set ``flag`` and write nothing."""
        if get_array_module(self.g) is np:
            flat_adam_reference(self.params, self.offsets, self.g, self.m, self.v, self.g_bad, loss, flag,
                                batch, alpha, beta_1, beta_2, epsilon)
        else:
            from . import cuda
            cuda.flat_adam(self, loss, flag, batch, alpha, beta_1, beta_2, epsilon)


def add_unless_flagged_reference(totals, flag, loss, correct, n, batch):
    """Add a batch's loss and number correct to an epoch's running ``totals`` while the flag is
    CLEAN; for the batch that set it, keep its loss. ``totals`` (float64, 3): the sum of
    loss * batch size, the number correct, and the loss of the first bad batch (for the message).
    The sums are the host's own (Python floats are float64), in the same order."""
    value = int(flag[0])
    if value == CLEAN:
        totals[0] += float(loss) * n
        totals[1] += int(correct)
    elif value // BATCH == batch:
        totals[2] = float(loss)


def add_unless_flagged(totals, flag, loss, correct, n, batch):
    """:func:`add_unless_flagged_reference` on the CPU; one CUDA thread on the GPU."""
    if get_array_module(totals) is np:
        add_unless_flagged_reference(totals, flag, loss, correct, n, batch)
    else:
        from . import cuda
        cuda.add_unless_flagged(totals, flag, loss, correct, n, batch)
