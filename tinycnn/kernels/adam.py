"""Adam's update of one parameter array, fused: one read and one write of each number.

Its reference is ``Adam.update`` in ``tinycnn/optimizers.py``, which writes Adam's lines with NumPy,
beside their formula:

    m += (1 - beta_1) * (g - m)
    v += (1 - beta_2) * (g*g - v)
    p -= alpha * m / (sqrt(v) + epsilon)

With NumPy they make about ten passes over memory, each allocating a temporary the size of the
parameter. The Numba kernel does all of it for one element at a time, in registers.

It can also *check without writing* (``write=False``): it computes the new p, m and v and
reports whether every one of them is finite, changing nothing. The optimizer checks every
parameter first and writes only when all of them pass, so a diverging step is never half
applied (see ``Optimizer.step``).
"""

import numpy as np

from .jit import jit


@jit()
def _adam_update_numba(p, g, m, v, alpha, c1, c2, epsilon, write):
    # p, g, m, v are flat, of one size; c1 = 1 - beta_1 and c2 = 1 - beta_2, in the parameter's dtype
    bad = 0
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + c1 * (gi - m[i])
        vi = v[i] + c2 * (gi * gi - v[i])
        pi = p[i] - alpha * mi / (np.sqrt(vi) + epsilon)
        s = mi * 0 + vi * 0 + pi * 0         # 0 when all three are finite; NaN otherwise
        bad += s != s
        if write:
            m[i], v[i], p[i] = mi, vi, pi
    return bad == 0


def adam_update(param, grad, m, v, alpha, beta_1, beta_2, epsilon, write=True):
    """Update (param, m, v) in place when ``write``; return whether all the new values are finite.

    NumPy arrays of one shape and dtype; param, m and v C-contiguous, since the kernel writes them
    through flat views. The kernel does not check its indices, so this wrapper refuses anything else.
    """
    if any(a.shape != param.shape or a.dtype != param.dtype for a in (grad, m, v)) or not all(
            a.flags.c_contiguous for a in (param, m, v)):
        raise ValueError("adam_update needs param, grad, m and v of one shape and dtype, and param, m "
                         "and v C-contiguous; got " + ", ".join(
                             f"{a.shape} {a.dtype}" for a in (param, grad, m, v)) + ".")
    arrays = (param, np.ascontiguousarray(grad), m, v)
    t = param.dtype.type        # compute in the parameter's dtype, as NumPy does with these scalars
    flat = [a.reshape(-1) for a in arrays]     # views: one compiled kernel for every shape
    return _adam_update_numba(*flat, t(alpha), t(1 - beta_1), t(1 - beta_2), t(epsilon), write)
