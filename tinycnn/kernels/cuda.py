"""The GPU kernels: im2col, col2im and max-pooling as CUDA C, run by CuPy.

Each function here has exactly the contract of its NumPy reference in ``im2col.py`` and
``pooling.py`` (same shapes, same column order (kh, kw, c), same argmax = flat input position
``h*W + w`` as int32, same "first maximum in reading order wins", padding that is never a maximum).
``im2col.im2col`` and friends call these when they are given a CuPy array; nothing imports this
module otherwise, and CuPy itself is imported only when a kernel is first needed.

From a loop nest to a CUDA thread
---------------------------------
On the CPU a kernel is a loop nest, one loop per axis of the output (the Numba kernels in
``im2col.py`` and ``pooling.py`` are these loops, some rearranged for speed). On the GPU the
loops disappear: a CUDA kernel starts one *thread* per output element (here a 1-D grid of blocks
of 256 threads), and each thread turns its number ``i`` back into the loop indices with % and /,
innermost axis first -- the row-major order in which the element sits in memory. The body of the
innermost loop is unchanged. im2col side by side, ``cols`` being (N, OH, OW, KH, KW, C) flat::

    The loop nest (CPU)                        One thread per element of cols (GPU)
    -------------------------------------      ---------------------------------------------
    for b in range(N):                         i = blockIdx.x * blockDim.x + threadIdx.x;
      for y in range(OH):                      if (i >= total) return;   // the last block
        for xo in range(OW):                                             // may reach past the end
          for ki in range(KH):                 ch = i % C;   r = i / C;
            for kj in range(KW):               kj = r % KW;  r /= KW;
              for ch in range(C):              ki = r % KH;  r /= KH;
                                               xo = r % OW;  r /= OW;
                                               y  = r % OH;  b = r / OH;
                hi = y * SH + ki - PT          hi = y * SH + ki - PT;
                wi = xo * SW + kj - PL         wi = xo * SW + kj - PL;
                cols[b, y, xo, ki, kj, ch] =   cols[i] = inside ? x[b, hi, wi, ch] : 0;
                    x[b, hi, wi, ch] if inside else 0

Who writes where: no races, no atomics
--------------------------------------
Thousands of threads run at once, so two threads must never add into the same element (that
would need slow atomic additions, and the order of the additions, hence the rounding, would
change from run to run). Every kernel here is written so that each output element is computed
by exactly one thread:

    im2col           one thread per element of cols: a copy.
    col2im           one thread per *input* pixel (b, h, w, c): it gathers the entries of cols
                     that were copied from it. For each kernel offset (ki, kj) it works out the
                     output position that read the pixel there, if any: t = h + PT - ki must
                     be y * SH for an output row 0 <= y < OH (the Numba col2im keeps the same
                     answers in a lookup table, worked out once per call).
                     A gather, not a scatter.
    maxpool forward  one thread per output element: it scans its window.
    maxpool backward one thread per *input* pixel: it loops over the windows that contain it and
                     adds dout of each window whose argmax is this pixel (a gather again).

Every sum is taken in the same order as in the Numba kernel, so both devices round alike.

Each source is written once, with ``T`` for the element type, and compiled for float32
(``typedef float T;``) or float64 (``typedef double T;``) on first use; the compiled kernel is
memoised (and CuPy also caches the binary on disk), so it is built once per process at most.

A training step that waits for nothing
--------------------------------------
``STEP_SOURCES``, at the end, are the kernels of the GPU's training step besides the layers':
Adam over every parameter at once, checked, and the epoch's running totals, both guarded by the
sticky flag that ``kernels/adam.py`` explains beside their NumPy references. Two of them use
atomics, the one exception to "no atomics" above: many threads may find a value that is not
finite, and ``atomicMin`` keeps the smallest flag whatever their order, so the result is still
the same every run.
"""

import functools

import numpy as np

from .geometry import expect_shape, output_size

THREADS_PER_BLOCK = 256

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

SOURCES = {
    # cols (N, OH, OW, KH, KW, C) <- x (N, H, W, C), zero outside the image.
    "im2col": r"""
extern "C" __global__ void im2col(
        const T* x, T* cols, long long total,
        int h, int w, int c, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long r = i;
    int ch = r % c;  r /= c;
    int kj = r % kw; r /= kw;
    int ki = r % kh; r /= kh;
    int xo = r % ow; r /= ow;
    int y  = r % oh; long long b = r / oh;
    int hi = y * sh + ki - pt;
    int wi = xo * sw + kj - pl;
    bool inside = 0 <= hi && hi < h && 0 <= wi && wi < w;
    cols[i] = inside ? x[((b * h + hi) * w + wi) * c + ch] : (T)0;
}
""",
    # dx (N, H, W, C) <- cols: each input pixel sums the entries of cols copied from it.
    "col2im": r"""
extern "C" __global__ void col2im(
        const T* cols, T* dx, long long total,
        int h, int w, int c, int kh, int kw, int sh, int sw, int pt, int pl, int oh, int ow)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long r = i;
    int ch = r % c;  r /= c;
    int wi = r % w;  r /= w;
    int hi = r % h;  long long b = r / h;
    T sum = 0;
    for (int ki = 0; ki < kh; ki++) {
        int t = hi + pt - ki;                  // t = y * SH for the output row y that read hi
        if (t < 0 || t % sh != 0 || t / sh >= oh) continue;
        int y = t / sh;
        for (int kj = 0; kj < kw; kj++) {
            int u = wi + pl - kj;              // u = xo * SW
            if (u < 0 || u % sw != 0 || u / sw >= ow) continue;
            int xo = u / sw;
            sum += cols[((((b * oh + y) * ow + xo) * kh + ki) * kw + kj) * c + ch];
        }
    }
    dx[i] = sum;
}
""",
    # y, argmax (N, OH, OW, C) <- x (N, H, W, C). Padding is skipped, so it is never the maximum.
    "maxpool_forward": r"""
extern "C" __global__ void maxpool_forward(
        const T* x, T* y, int* argmax, long long total,
        int h, int w, int c, int ph, int pw, int sh, int sw, int pt, int pl, int oh, int ow)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long r = i;
    int ch = r % c;  r /= c;
    int xo = r % ow; r /= ow;
    int yo = r % oh; long long b = r / oh;
    T best = 0;
    int where = -1;    // stays -1 only for a window wholly in the padding, which "valid" and
                       // Keras's "same" padding never produce
    for (int ki = 0; ki < ph; ki++) {
        int hi = yo * sh + ki - pt;
        if (hi < 0 || hi >= h) continue;
        for (int kj = 0; kj < pw; kj++) {
            int wi = xo * sw + kj - pl;
            if (wi < 0 || wi >= w) continue;
            T v = x[((b * h + hi) * w + wi) * c + ch];
            if (where < 0 || v > best || (v != v && best == best)) {   // larger, or the first NaN
                best = v;
                where = hi * w + wi;
            }
        }
    }
    y[i] = best;
    argmax[i] = where;
}
""",
    # dx (N, H, W, C) <- dout, argmax (N, OH, OW, C): one thread per input pixel (a gather).
    "maxpool_backward": r"""
extern "C" __global__ void maxpool_backward(
        const T* dout, const int* argmax, T* dx, long long total,
        int h, int w, int c, int ph, int pw, int sh, int sw, int pt, int pl, int oh, int ow)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long r = i;
    int ch = r % c;  r /= c;
    int wi = r % w;  r /= w;
    int hi = r % h;  long long b = r / h;
    // The windows that contain row hi are those with yo*SH - PT <= hi < yo*SH - PT + PH.
    // (hi + pt - ph + sh) / sh is ceil((hi + pt - ph + 1) / sh) when that is positive.
    int y_lo = (hi + pt - ph + sh) / sh, y_hi = (hi + pt) / sh;
    int x_lo = (wi + pl - pw + sw) / sw, x_hi = (wi + pl) / sw;
    if (y_lo < 0) y_lo = 0;
    if (y_hi > oh - 1) y_hi = oh - 1;
    if (x_lo < 0) x_lo = 0;
    if (x_hi > ow - 1) x_hi = ow - 1;
    int me = hi * w + wi;
    T sum = 0;
    for (int yo = y_lo; yo <= y_hi; yo++)      // windows in reading order, as the CPU adds them
        for (int xo = x_lo; xo <= x_hi; xo++) {
            long long k = ((b * oh + yo) * ow + xo) * c + ch;
            if (argmax[k] == me) sum += dout[k];
        }
    dx[i] = sum;
}
""",
}


def source(name, dtype):
    """The complete CUDA C source of kernel ``name`` for a float32 or float64 ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype not in C_TYPES:
        raise TypeError(f"The GPU kernels take float32 or float64 arrays, got {dtype}.")
    return f"typedef {C_TYPES[dtype]} T;\n{SOURCES.get(name) or STEP_SOURCES[name]}"


@functools.lru_cache(maxsize=None)
def kernel(name, dtype):
    """The compiled kernel ``name`` for ``dtype``: built on the first call, then reused."""
    import cupy
    if name in STEP_SOURCES:
        return cupy.RawKernel(source(name, dtype), name, options=STEP_OPTIONS)
    return cupy.RawKernel(source(name, dtype), name)


def launch(name, dtype, total, arrays, sizes):
    """Run kernel ``name`` with one thread per unit of work: ceil(total / 256) blocks of 256.

    The kernel's arguments are the ``arrays`` (pointers), then ``total`` (a C ``long long``),
    then the ``sizes`` (C ``int``s). CuPy needs the C types spelled out as NumPy scalars.
    """
    if total == 0:
        return
    blocks = (total + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    args = (*arrays, np.int64(total), *(np.int32(s) for s in sizes))
    kernel(name, np.dtype(dtype))((blocks,), (THREADS_PER_BLOCK,), args)


# ---------------------------------------------------------------------------------------------
# The functions ``im2col.py`` and ``pooling.py`` call for CuPy arrays.
# ---------------------------------------------------------------------------------------------

def im2col(x, kh, kw, stride, pad):
    """(N, H, W, C) -> cols (N*OH*OW, KH*KW*C), on the GPU. Contract of ``im2col_reference``."""
    import cupy
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    x = cupy.ascontiguousarray(x)
    n, h, w, c = x.shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    cols = cupy.empty((n * oh * ow, kh * kw * c), dtype=x.dtype)
    launch("im2col", x.dtype, cols.size, (x, cols), (h, w, c, kh, kw, sh, sw, pt, pl, oh, ow))
    return cols


def col2im(cols, x_shape, kh, kw, stride, pad):
    """cols (N*OH*OW, KH*KW*C) -> dx (N, H, W, C), on the GPU. Contract of ``col2im_reference``."""
    import cupy
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x_shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    expect_shape("col2im", "cols", cols, (n * oh * ow, kh * kw * c))
    cols = cupy.ascontiguousarray(cols)
    dx = cupy.empty((n, h, w, c), dtype=cols.dtype)
    launch("col2im", cols.dtype, dx.size, (cols, dx), (h, w, c, kh, kw, sh, sw, pt, pl, oh, ow))
    return dx


def maxpool_forward(x, ph, pw, stride, pad):
    """(N, H, W, C) -> y, argmax (N, OH, OW, C), on the GPU. Contract of the reference."""
    import cupy
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    x = cupy.ascontiguousarray(x)
    n, h, w, c = x.shape
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    y = cupy.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = cupy.empty((n, oh, ow, c), dtype=cupy.int32)
    launch("maxpool_forward", x.dtype, y.size, (x, y, argmax),
           (h, w, c, ph, pw, sh, sw, pt, pl, oh, ow))
    return y, argmax


def maxpool_backward(dout, argmax, x_shape, pool_size, stride, pad):
    """Route each ``dout`` entry to its argmax: dx (N, H, W, C), on the GPU.

    One thread per input pixel gathers from the windows (``pool_size`` (PH, PW), ``stride``
    (SH, SW), ``pad`` (PT, PB, PL, PR)) that contain it: the reference's result, summed in its order.
    """
    import cupy
    n, h, w, c = x_shape
    dout = cupy.ascontiguousarray(dout)
    argmax = cupy.ascontiguousarray(argmax, dtype=cupy.int32)
    (ph, pw), (sh, sw), (pt, pb, pl, pr) = pool_size, stride, pad
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    expect_shape("maxpool_backward", "dout", dout, (n, oh, ow, c))
    expect_shape("maxpool_backward", "argmax", argmax, (n, oh, ow, c))
    dx = cupy.empty((n, h, w, c), dtype=dout.dtype)
    launch("maxpool_backward", dout.dtype, dx.size, (dout, argmax, dx),
           (h, w, c, ph, pw, sh, sw, pt, pl, oh, ow))
    return dx


# ---------------------------------------------------------------------------------------------
# The training step's own kernels (kernels/adam.py: the flag, and the NumPy references).
# ---------------------------------------------------------------------------------------------

#: By default NVRTC contracts a * b + c into one fused multiply-add, rounded once; NumPy rounds the
#: product and then the sum. Without contraction Adam's update is NumPy's to the last bit.
STEP_OPTIONS = ("--fmad=false",)

_FLAG = r"""
#define CLEAN 0x7fffffffffffffffLL    // the flag while every step so far was finite
"""

_PARAMETER_OF = r"""
// The parameter that holds element i of the flat buffers: the k with offsets[k] <= i < offsets[k + 1].
__device__ int parameter_of(const long long* offsets, int count, long long i)
{
    int lo = 0, hi = count - 1;        // a binary search; offsets[lo] <= i < offsets[hi + 1] throughout
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}
"""

STEP_SOURCES = {
    # Every new m, v and p, written nowhere: the flag takes the smallest batch * 2^32 + what that
    # is not finite (what = 0 the loss, k + 1 parameter k). One thread per element of the flat
    # buffers; thread 0 also checks the loss.
    "flat_adam_check": _FLAG + _PARAMETER_OF + r"""
extern "C" __global__ void flat_adam_check(
        const unsigned long long* params, const long long* offsets, const T* g, const T* m, const T* v,
        const T* loss, long long* flag, long long total, int count, long long batch,
        T alpha, T c1, T c2, T epsilon)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long first = batch << 32;              // this batch's flag values are first + what
    if (*flag < first) return;                  // an earlier batch was not finite: change nothing
    if (i == 0 && !isfinite(*loss)) atomicMin(flag, first);
    if (i >= total) return;
    int k = parameter_of(offsets, count, i);
    const T* p = (const T*)params[k];
    T mi = m[i] + c1 * (g[i] - m[i]);
    T vi = v[i] + c2 * (g[i] * g[i] - v[i]);
    T pi = p[i - offsets[k]] - alpha * mi / (sqrt(vi) + epsilon);
    if (!(isfinite(mi) && isfinite(vi) && isfinite(pi))) atomicMin(flag, first + k + 1);
}
""",
    # The same values again, written only if the flag is CLEAN after flat_adam_check; for the
    # batch that set the flag, its gradients are kept in g_bad instead.
    "flat_adam_write": _FLAG + _PARAMETER_OF + r"""
extern "C" __global__ void flat_adam_write(
        const unsigned long long* params, const long long* offsets, const T* g, T* m, T* v, T* g_bad,
        const long long* flag, long long total, int count, long long batch,
        T alpha, T c1, T c2, T epsilon)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    long long f = *flag;
    if (f != CLEAN) {                           // this batch or an earlier one was not finite
        if ((f >> 32) == batch) g_bad[i] = g[i];
        return;
    }
    int k = parameter_of(offsets, count, i);
    T* p = (T*)params[k];
    long long j = i - offsets[k];
    T mi = m[i] + c1 * (g[i] - m[i]);
    T vi = v[i] + c2 * (g[i] * g[i] - v[i]);
    p[j] = p[j] - alpha * mi / (sqrt(vi) + epsilon);
    m[i] = mi;
    v[i] = vi;
}
""",
    # totals (double, 3) += (loss * n, correct) while the flag is CLEAN; the first bad batch's
    # loss goes to totals[2]. One thread: it is one addition.
    "add_unless_flagged": _FLAG + r"""
extern "C" __global__ void add_unless_flagged(
        double* totals, const long long* flag, const T* loss, const long long* correct,
        long long n, long long batch)
{
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    long long f = *flag;
    if (f == CLEAN) {
        totals[0] += (double)*loss * (double)n;
        totals[1] += (double)*correct;
    } else if ((f >> 32) == batch) {
        totals[2] = (double)*loss;
    }
}
""",
}


def _address(a):
    """Where array ``a``'s first element lives: a CuPy array's device pointer. (A NumPy array's
    address serves the tests that run these kernels compiled for the CPU.)"""
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.ctypes.data


def parameter_table(params, offsets):
    """The flat Adam kernels' list of parameters on the device: their addresses (uint64) and the
    offsets (int64, one more than there are parameters). Made once per ``FlatAdam``, whose
    parameters never change (``Adam`` makes a new one when a parameter array is replaced)."""
    import cupy
    dtype = params[0].dtype
    for k, p in enumerate(params):
        if p.dtype != dtype or not p.flags.c_contiguous or p.size != offsets[k + 1] - offsets[k]:
            raise ValueError(f"flat_adam: parameter {k} is {p.shape} {p.dtype}, C-contiguous "
                             f"{p.flags.c_contiguous}; the kernels need C-contiguous parameters of one dtype "
                             f"({dtype}), each offsets[k + 1] - offsets[k] = {offsets[k + 1] - offsets[k]} long.")
    addresses = np.array([_address(p) for p in params], dtype=np.uint64)
    return cupy.asarray(addresses), cupy.asarray(np.asarray(offsets, dtype=np.int64))


def flat_adam(flat, loss, flag, batch, alpha, beta_1, beta_2, epsilon):
    """``flat_adam_reference`` (``kernels/adam.py``) for a ``FlatAdam`` on the GPU: two launches of
    one thread per element of its flat buffers, and nothing read back."""
    import cupy
    total, dtype = flat.offsets[-1], flat.g.dtype
    if flat.table is None:
        flat.table = parameter_table(flat.params, flat.offsets)
    pointers, offsets = flat.table
    for what in ("g", "m", "v", "g_bad"):
        buffer = getattr(flat, what)
        expect_shape("flat_adam", what, buffer, (total,))
        if buffer.dtype != dtype:
            raise ValueError(f"flat_adam: {what} is {buffer.dtype}, the gradients {dtype}.")
    loss = cupy.asarray(loss, dtype=dtype).reshape(1)     # no copy when it is already so
    expect_shape("flat_adam", "flag", flag, (1,))
    t = dtype.type              # the scalars in the parameters' dtype, as NumPy takes them
    scalars = (np.int64(total), np.int32(len(flat.params)), np.int64(batch),
               t(alpha), t(1 - beta_1), t(1 - beta_2), t(epsilon))
    blocks = max(1, (total + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK)   # 1: thread 0 checks the loss
    kernel("flat_adam_check", dtype)((blocks,), (THREADS_PER_BLOCK,),
                                     (pointers, offsets, flat.g, flat.m, flat.v, loss, flag, *scalars))
    kernel("flat_adam_write", dtype)((blocks,), (THREADS_PER_BLOCK,),
                                     (pointers, offsets, flat.g, flat.m, flat.v, flat.g_bad, flag, *scalars))


def add_unless_flagged(totals, flag, loss, correct, n, batch):
    """``add_unless_flagged_reference`` (``kernels/adam.py``) on the GPU: one thread."""
    import cupy
    expect_shape("add_unless_flagged", "totals", totals, (3,))
    expect_shape("add_unless_flagged", "flag", flag, (1,))
    if totals.dtype != np.float64 or flag.dtype != np.int64:
        raise ValueError(f"add_unless_flagged: totals must be float64 and the flag int64, got "
                         f"{totals.dtype} and {flag.dtype}.")
    loss = cupy.asarray(loss).reshape(1)
    correct = cupy.asarray(correct, dtype=np.int64).reshape(1)
    kernel("add_unless_flagged", loss.dtype)((1,), (1,), (totals, flag, loss, correct, np.int64(n),
                                                          np.int64(batch)))
