"""Winograd's F(2×2, 3×3): a 3×3 convolution followed by a 2×2 max-pool, with 2.25× fewer products.

im2col computes every output pixel of a 3×3 convolution with 9 multiplications per input channel
and filter. Winograd's minimal filtering algorithm (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2015) computes a 2×2 block of output pixels from the 4×4 block of
input pixels under it with 16 multiplications instead of 4 × 9 = 36. Each 4×4 input tile ``d``
and each 3×3 kernel ``g`` is first *transformed* by small constant matrices; the transformed
tile and kernel are multiplied element by element; one more transform gives the 2×2 outputs:

    z_tile = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          (4×4 inside, 2×2 out; exact in real numbers)

        Bᵀ = [[1, 0, -1, 0],     G = [[1,    0,    0  ],     Aᵀ = [[1, 1,  1,  0],
              [0, 1,  1, 0],          [1/2,  1/2,  1/2],           [0, 1, -1, -1]]
              [0, -1, 1, 0],          [1/2, -1/2,  1/2],
              [0, 1,  0, -1]]         [0,    0,    1  ]]

Over many channels, the element-wise product summed over the input channels c is, for each of the
16 positions (ξ, ν) of a transformed tile, one matrix product:

    V[ξν] = Bᵀ d B        for every tile and channel              (16, T, C)    T = tiles
    U[ξν] = G g Gᵀ        for every channel and filter            (16, C, F)
    M[ξν] = V[ξν] @ U[ξν]                                         (16, T, F)    16 matrix products
    z     = Aᵀ M A        for every tile and filter               2×2 pixels per tile

In the Keras MNIST CNN each 2×2 output tile of a convolution is exactly one 2×2 window of the max-pool
that follows (a stride-1 convolution, a 2×2 pool with stride 2), so the output transform is fused
with the bias, ReLU and max-pool (:mod:`.bias_relu_pool`): ``z`` is never written, only the
pooled ``y`` and each window's ``argmax``. A row or column of ``z`` that no pool window reads
(the last one when OH is odd) is not computed at all.

Backward, by the chain rule through the same three steps (every step is linear):

    dM[ξν]  = A dz_tile Aᵀ         dz_tile has one non-zero per filter: dy at the argmax, if y > 0
    dU[ξν]  = V[ξν]ᵀ @ dM[ξν]       then dkernel = Gᵀ dU G
    dV[ξν]  = dM[ξν] @ U[ξν]ᵀ       then dx_tile = B dV Bᵀ, added into dx (tiles overlap by 2)

Together the three matrix products of a step do (16/36) × (tiles / output pixels) of im2col's
work: for the Keras MNIST CNN's second convolution (11×11 outputs, 5×5 pooled) 16·25 / (9·121) = 37%.
The transforms are additions only, over arrays a little larger than x and the pooled output.
Rounding differs from im2col's (the transforms add and subtract before multiplying), by a few
units in the last place of float32; the tests compare with tolerances, in float32 and float64.

Each general Numba kernel below has a NumPy ``*_reference`` written with ``einsum`` over the
tiles; the two one-channel kernels are those same steps run together. The tests check every
kernel against its reference, and ``forward`` and ``backward`` (both paths) against im2col, bias,
ReLU and max-pool run one by one (tests/test_winograd.py).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .bias_relu_pool import bias_relu_maxpool_forward_reference, maxpool_relu_backward_reference
from .geometry import expect_shape
from .jit import jit

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


#: With fewer input channels than this (but more than one), im2col + one matrix product is faster:
#: Winograd's 16 matrix products have K = channels, which BLAS runs poorly when K is small.
MIN_CHANNELS = 8


def applies(channels, kernel_size, conv_strides, pool_size, pool_strides, pool_pad):
    """True when Winograd's tiles are the pool's windows -- a 3×3 stride-1 convolution, then a 2×2
    max-pool with stride 2 and no padding (the convolution's own padding may be anything) -- and
    it is faster: one input channel (its own kernels below) or at least MIN_CHANNELS."""
    return ((channels == 1 or channels >= MIN_CHANNELS) and tuple(kernel_size) == (3, 3)
            and tuple(conv_strides) == (1, 1) and tuple(pool_size) == (2, 2)
            and tuple(pool_strides) == (2, 2) and tuple(pool_pad) == (0, 0, 0, 0))


# ---------------------------------------------------------------------------------------------
# The kernel's transform: NumPy's reference, and a kernel
# ---------------------------------------------------------------------------------------------

def kernel_transform_reference(kernel, g=G):
    """kernel (3, 3, C, F) -> U (16, C, F), U[4ξ+ν] = (G g Gᵀ)[ξ, ν] for every channel and filter.
    (With another G of a rows, as .winograd_conv's F(4×4, 3×3): U (a², C, F).)

    Two matrix products over the kernel's first two axes (einsum would read more easily, but
    does not hand this contraction to BLAS)."""
    a, g = len(g), g.astype(kernel.dtype)
    gk = np.matmul(g, kernel.reshape(3, -1)).reshape(a, 3, -1)        # G g: rows      (a, 3, C*F)
    return np.matmul(g, gk).reshape(a * a, *kernel.shape[2:])         # (G g) Gᵀ, per row ξ


def kernel_transform_backward_reference(du, g=G):
    """dU (16, C, F) -> dkernel (3, 3, C, F) = Gᵀ dU G, the transpose of kernel_transform."""
    a, g = len(g), g.astype(du.dtype)
    gd = np.matmul(g.T, du.reshape(a, -1)).reshape(3, a, -1)          # Gᵀ dU          (3, a, C*F)
    return np.matmul(g.T, gd).reshape(3, 3, *du.shape[1:])            # (Gᵀ dU) G


# The same two products as loops over the C*F columns, in one call each. The arithmetic is small;
# what the kernels save is the reference's half-dozen NumPy calls per convolution and step, in
# every thread of a split batch (tinycnn/parallel.py: those calls hold the GIL the other threads
# wait for). G's numbers are rounded to the kernel's dtype first, as the reference's astype does.

@jit()
def _kernel_transform_numba(k9, g):
    """k9 (9, C*F): the kernel's rows g[k, l] at 3k + l; g (a, 3) float64 -> U (a*a, C*F)."""
    a, n = g.shape[0], k9.shape[1]
    t = k9.dtype.type
    u = np.empty((a * a, n), dtype=k9.dtype)
    gk = np.empty((3, n), dtype=k9.dtype)           # row ξ of G g: gk[l] = Σ_k G[ξ, k] g[k, l]
    for xi in range(a):
        c0, c1, c2 = t(g[xi, 0]), t(g[xi, 1]), t(g[xi, 2])
        for l in range(3):
            r0, r1, r2, out = k9[l], k9[3 + l], k9[6 + l], gk[l]
            for q in range(n):
                out[q] = c0 * r0[q] + c1 * r1[q] + c2 * r2[q]
        for nu in range(a):                         # U[a ξ + ν] = Σ_l (G g)[ξ, l] G[ν, l]
            c0, c1, c2 = t(g[nu, 0]), t(g[nu, 1]), t(g[nu, 2])
            out, r0, r1, r2 = u[a * xi + nu], gk[0], gk[1], gk[2]
            for q in range(n):
                out[q] = c0 * r0[q] + c1 * r1[q] + c2 * r2[q]
    return u


@jit()
def _kernel_transform_backward_numba(du, g):
    """du (a*a, C*F), g (a, 3) float64 -> dkernel (9, C*F), row 3k + l = Σ_ξ Σ_ν G[ξ, k] dU[a ξ + ν] G[ν, l]."""
    a, n = g.shape[0], du.shape[1]
    t = du.dtype.type
    dk = np.zeros((9, n), dtype=du.dtype)
    gd = np.empty((3, n), dtype=du.dtype)           # for one ξ: gd[l] = Σ_ν dU[a ξ + ν] G[ν, l]
    for xi in range(a):
        for l in range(3):
            out = gd[l]
            out[:] = 0
            for nu in range(a):
                c, row = t(g[nu, l]), du[a * xi + nu]
                for q in range(n):
                    out[q] += c * row[q]
        for k in range(3):
            c = t(g[xi, k])
            for l in range(3):
                out, row = dk[3 * k + l], gd[l]
                for q in range(n):
                    out[q] += c * row[q]
    return dk


def kernel_transform(kernel, g=G):
    """Same contract as :func:`kernel_transform_reference`."""
    expect_shape("kernel_transform", "kernel", kernel, (3, 3, *kernel.shape[2:]))
    u = _kernel_transform_numba(np.ascontiguousarray(kernel).reshape(9, -1), g)
    return u.reshape(len(g) ** 2, *kernel.shape[2:])


def kernel_transform_backward(du, g=G):
    """Same contract as :func:`kernel_transform_backward_reference`."""
    expect_shape("kernel_transform_backward", "dU", du, (len(g) ** 2, *du.shape[1:]))
    dk = _kernel_transform_backward_numba(np.ascontiguousarray(du).reshape(len(g) ** 2, -1), g)
    return dk.reshape(3, 3, *du.shape[1:])


# ---------------------------------------------------------------------------------------------
# The input as the tiles read it (references and kernels alike)
# ---------------------------------------------------------------------------------------------

def _padded(x, pt, pl, th, tw):
    """The (N, 2TH+2, 2TW+2, C) input the tiles read: x shifted by the padding, zeros around."""
    n, h, w, c = x.shape
    out = np.zeros((n, 2 * th + 2, 2 * tw + 2, c), dtype=x.dtype)
    rows, cols = min(h, 2 * th + 2 - pt), min(w, 2 * tw + 2 - pl)
    out[:, pt:pt + rows, pl:pl + cols] = x[:, :rows, :cols]
    return out


def _unpadded(dpad, x_shape, pt, pl):
    """The transpose of _padded: the gradient of the padded input -> dx (N, H, W, C). Rows and
    columns that no tile read get 0."""
    h, w = x_shape[1], x_shape[2]
    rows, cols = min(h, dpad.shape[1] - pt), min(w, dpad.shape[2] - pl)
    if (rows, cols) == (h, w):                      # the tiles read all of x: one copy, no zeros
        return np.ascontiguousarray(dpad[:, pt:pt + h, pl:pl + w])
    dx = np.zeros(x_shape, dtype=dpad.dtype)
    dx[:, :rows, :cols] = dpad[:, pt:pt + rows, pl:pl + cols]
    return dx


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------

def input_transform_reference(x, pt, pl, th, tw, bt=BT):
    """x (N, H, W, C) -> V (16, N*TH*TW, C): the 4×4 tile under every 2×2 output block, Bᵀ d B.
    (With another Bᵀ of a rows, as .winograd_conv's F(4×4, 3×3): the a×a tile under every
    (a - 2)×(a - 2) block, V (a², T, C).)"""
    a, step = len(bt), len(bt) - 2
    padded = _padded(x, pt, pl, step * th // 2, step * tw // 2)          # _padded counts 2×2 tiles
    tiles = sliding_window_view(padded, (a, a), axis=(1, 2))[:, ::step, ::step]      # N,TH,TW,C,a,a
    bt = bt.astype(x.dtype)
    return np.einsum("ai,nhwcij,bj->abnhwc", bt, tiles, bt).reshape(a * a, -1, x.shape[3])


def input_transform_backward_reference(dv, x_shape, pt, pl, th, tw, bt=BT):
    """dV (16, T, C) -> dx (N, H, W, C): B dV Bᵀ per tile, added where the tile came from (the
    transpose of input_transform_reference, for the same Bᵀ)."""
    n, c = x_shape[0], x_shape[3]
    a, step = len(bt), len(bt) - 2
    bt = bt.astype(dv.dtype)
    dd = np.einsum("ai,abnhwc,bj->nhwijc", bt, dv.reshape(a, a, n, th, tw, c), bt)
    dpad = np.zeros((n, step * th + 2, step * tw + 2, c), dtype=dv.dtype)
    for i in range(a):
        for j in range(a):
            dpad[:, i:i + step * th:step, j:j + step * tw:step] += dd[:, :, :, i, j]
    return _unpadded(dpad, x_shape, pt, pl)


def output_bias_relu_maxpool_reference(m, bias, n, th, tw, zw):
    """M (16, T, F) -> y (N, TH, TW, F), argmax (flat h*ZW + w in z, as bias_relu_pool returns)."""
    f = m.shape[2]
    at = AT.astype(m.dtype)
    z = np.einsum("ia,abnhwf,jb->nhiwjf", at, m.reshape(4, 4, n, th, tw, f), at).reshape(n, 2 * th, 2 * tw, f)
    y, argmax = bias_relu_maxpool_forward_reference(z, bias, 2, 2, (2, 2), (0, 0, 0, 0))
    return y, (argmax // (2 * tw)) * zw + argmax % (2 * tw)      # z's width is ZW, not 2TW


def maxpool_relu_backward_m_reference(dy, argmax, y, zw):
    """dy (N, TH, TW, F) -> dM (16, T, F) = A dz_tile Aᵀ per tile, and dbias (F,)."""
    n, th, tw, f = dy.shape
    local = (argmax // zw) * (2 * tw) + argmax % zw               # the same pixels, in a (2TH, 2TW) z
    dz, dbias = maxpool_relu_backward_reference(dy, local, y, (n, 2 * th, 2 * tw, f))
    at = AT.astype(dy.dtype)
    dm = np.einsum("ia,nhiwjf,jb->abnhwf", at, dz.reshape(n, th, 2, tw, 2, f), at)
    return dm.reshape(16, -1, f), dbias


# ---------------------------------------------------------------------------------------------
# Numba kernels: a tile at a time, the channels or filters in the innermost (vectorised) loop
# ---------------------------------------------------------------------------------------------
#
# Every kernel writes into arrays that its Python wrapper allocates, scratch space included: each
# np.empty or np.zeros inside a kernel is one more function for Numba to compile on first use,
# and allocating in NumPy costs nothing extra at run time. One exception, the
# one-channel dU kernel's accumulator, is explained there.
#
# They store V, M, dM and dV tile by tile, (T, 16, C): the 16 numbers of a tile are next to each
# other. The matrix products read the same memory as (16, T, C) through a transposed view (BLAS
# takes a row stride), which is the layout the contracts above describe. Stored (16, T, C), a
# tile's 16 numbers would lie T*C apart: for the Keras MNIST CNN exactly 25 pages, so that all 16 fall
# into the same set of the cache (4K aliasing), and the kernels below would wait on memory.

# The three small matrices, applied to 4 numbers (a column or a row of a tile) at a time:
@jit(helper=True)
def _bt(a0, a1, a2, a3):
    """Bᵀ (a0, a1, a2, a3)."""
    return a0 - a2, a1 + a2, a2 - a1, a1 - a3


@jit(helper=True)
def _b(a0, a1, a2, a3):
    """B (a0, a1, a2, a3), the transpose of _bt."""
    return a0, a1 - a2 + a3, a1 + a2 - a0, -a3


@jit(helper=True)
def _at(a0, a1, a2, a3):
    """Aᵀ (a0, a1, a2, a3): 2 numbers."""
    return a0 + a1 + a2, a1 - a2 - a3


@jit(helper=True)
def _tile_bt_d_b(d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23, d30, d31, d32, d33):
    """Bᵀ d B for one 4×4 tile d: Bᵀ on each column, then on each row. 16 numbers, row by row."""
    c0, c1, c2, c3 = _bt(d00, d10, d20, d30), _bt(d01, d11, d21, d31), _bt(d02, d12, d22, d32), _bt(d03, d13, d23, d33)
    return (_bt(c0[0], c1[0], c2[0], c3[0]) + _bt(c0[1], c1[1], c2[1], c3[1])
            + _bt(c0[2], c1[2], c2[2], c3[2]) + _bt(c0[3], c1[3], c2[3], c3[3]))


@jit(helper=True)
def _tile_at_m_a(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15):
    """Aᵀ M A for one tile, M[ξ, ν] = m(4ξ + ν): the 2×2 outputs z00, z01, z10, z11."""
    c0, c1, c2, c3 = _at(m0, m4, m8, m12), _at(m1, m5, m9, m13), _at(m2, m6, m10, m14), _at(m3, m7, m11, m15)
    return _at(c0[0], c1[0], c2[0], c3[0]) + _at(c0[1], c1[1], c2[1], c3[1])


@jit(helper=True)
def _one_channel_tile(q0, q1, q2, q3, x0, vt):
    """Bᵀ d B of the grey 4×4 tile d whose rows q0 ... q3 start at column x0: its 16 numbers,
    returned and stored in vt (16,), the tile's row of V."""
    d = _tile_bt_d_b(q0[x0], q0[x0 + 1], q0[x0 + 2], q0[x0 + 3], q1[x0], q1[x0 + 1], q1[x0 + 2], q1[x0 + 3],
                     q2[x0], q2[x0 + 1], q2[x0 + 2], q2[x0 + 3], q3[x0], q3[x0 + 1], q3[x0 + 2], q3[x0 + 3])
    vt[0], vt[1], vt[2], vt[3], vt[4], vt[5], vt[6], vt[7] = d[:8]
    vt[8], vt[9], vt[10], vt[11], vt[12], vt[13], vt[14], vt[15] = d[8:]
    return d


@jit(helper=True)
def _one_channel_outputs(d, u, ff):
    """Aᵀ (d ⊙ U) A for filter ff of a grey tile: its 2×2 outputs, without the bias (C = 1, so
    M = V ⊙ U is 16 products, no matrix product)."""
    return _tile_at_m_a(d[0] * u[0, ff], d[1] * u[1, ff], d[2] * u[2, ff], d[3] * u[3, ff],
                        d[4] * u[4, ff], d[5] * u[5, ff], d[6] * u[6, ff], d[7] * u[7, ff],
                        d[8] * u[8, ff], d[9] * u[9, ff], d[10] * u[10, ff], d[11] * u[11, ff],
                        d[12] * u[12, ff], d[13] * u[13, ff], d[14] * u[14, ff], d[15] * u[15, ff])


@jit()
def _input_transform_numba(p, th, tw, v, e):
    """p: the input with its padding, (N, 2TH + 2, 2TW + 2, C) -> v, V tile-major (T, 16, C).

    V = Bᵀ d B for every tile d. First e = Bᵀ d, a column at a time, into the scratch tile e
    (4, 4, C); then row i of V is Bᵀ applied to row i of e. (Writing all 16 numbers of a tile in
    one loop over the channels is 16 places to store to, which the compiler does not vectorise;
    four are fine.)"""
    n, c = p.shape[0], p.shape[3]
    for b in range(n):
        for ty in range(th):
            d0, d1, d2, d3 = p[b, 2 * ty], p[b, 2 * ty + 1], p[b, 2 * ty + 2], p[b, 2 * ty + 3]   # the tile's rows
            for tx in range(tw):
                t, x0 = (b * th + ty) * tw + tx, 2 * tx
                for j in range(4):                          # column j of e = Bᵀ (column j of d)
                    e0, e1, e2, e3 = e[0, j], e[1, j], e[2, j], e[3, j]
                    for ch in range(c):
                        e0[ch], e1[ch], e2[ch], e3[ch] = _bt(d0[x0 + j, ch], d1[x0 + j, ch], d2[x0 + j, ch],
                                                             d3[x0 + j, ch])
                for i in range(4):                          # row i of V = Bᵀ (row i of e)
                    ei = e[i]
                    o0, o1, o2, o3 = v[t, 4 * i], v[t, 4 * i + 1], v[t, 4 * i + 2], v[t, 4 * i + 3]
                    for ch in range(c):
                        o0[ch], o1[ch], o2[ch], o3[ch] = _bt(ei[0, ch], ei[1, ch], ei[2, ch], ei[3, ch])


@jit()
def _input_transform_backward_numba(dv, th, tw, dp, e):
    """dV tile-major (T, 16, C) -> dp (zeros on entry), the gradient of the padded input,
    (N, 2TH + 2, 2TW + 2, C): dd = B dV Bᵀ for every tile, added where the tile was read (tiles
    overlap by two pixels). First e = B dV, a column at a time, into the scratch tile e (4, 4, C);
    then B along each row of e."""
    n, c = dp.shape[0], dv.shape[2]
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t, x0 = (b * th + ty) * tw + tx, 2 * tx
                g = dv[t]
                for j in range(4):                          # column j of e = B (column j of dV)
                    e0, e1, e2, e3 = e[0, j], e[1, j], e[2, j], e[3, j]
                    for ch in range(c):
                        e0[ch], e1[ch], e2[ch], e3[ch] = _b(g[j, ch], g[4 + j, ch], g[8 + j, ch], g[12 + j, ch])
                for i in range(4):                          # row i of dd = B (row i of e), added in
                    row, ei = dp[b, 2 * ty + i], e[i]
                    for ch in range(c):
                        dd = _b(ei[0, ch], ei[1, ch], ei[2, ch], ei[3, ch])
                        row[x0, ch] += dd[0]
                        row[x0 + 1, ch] += dd[1]
                        row[x0 + 2, ch] += dd[2]
                        row[x0 + 3, ch] += dd[3]


@jit(helper=True)
def _window_max(z00, z01, z10, z11, top, zw):
    """The first maximum of a 2×2 window in reading order, and its flat index in z; a NaN counts
    as the largest value, as in the layers' max-pool."""
    best, where = z00, top
    if z01 > best or (z01 != z01 and best == best):
        best, where = z01, top + 1
    if z10 > best or (z10 != z10 and best == best):
        best, where = z10, top + zw
    if z11 > best or (z11 != z11 and best == best):
        best, where = z11, top + zw + 1
    return best, where


@jit()
def _output_bias_relu_maxpool_numba(m, bias, zw, y, argmax):
    """M tile-major (T, 16, F) -> y (N, TH, TW, F) and argmax (its flat index in z, width ZW)."""
    n, th, tw, f = y.shape
    zero = m.dtype.type(0)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                mt = m[t]
                top = np.int32(2 * ty * zw + 2 * tx)        # z's flat index of the window's first pixel
                best_out, where_out = y[b, ty, tx], argmax[b, ty, tx]
                for ff in range(f):                         # z = Aᵀ M A + bias, then max and ReLU
                    z = _tile_at_m_a(mt[0, ff], mt[1, ff], mt[2, ff], mt[3, ff], mt[4, ff], mt[5, ff],
                                     mt[6, ff], mt[7, ff], mt[8, ff], mt[9, ff], mt[10, ff], mt[11, ff],
                                     mt[12, ff], mt[13, ff], mt[14, ff], mt[15, ff])
                    best, where = _window_max(z[0] + bias[ff], z[1] + bias[ff], z[2] + bias[ff], z[3] + bias[ff],
                                              top, np.int32(zw))
                    best_out[ff] = zero if best <= 0 else best        # ReLU; NaN stays NaN
                    where_out[ff] = where


# dM = A dz_tile Aᵀ, where dz_tile holds, for each filter, one non-zero g at (row, col) of the 2×2
# window. A's columns are (1, 1, 1, 0) for the first row or column and (0, 1, -1, -1) for the
# second, so with low = row and right = col (0 or 1):
#     dM[4ξ + ν] = g * (P[ξ] + Q[ξ] * low) * (P[ν] + Q[ν] * right),   P = (1, 1, 1, 0), Q = (-1, 0, -2, -1)
# The kernels first find g, low and right for every filter of a tile, then write dM four rows at a
# time. (Sixteen rows in one loop are sixteen places to store to: too many for the compiler to
# check for overlap, and the loop was not vectorised.)
P = np.array([1, 1, 1, 0])
Q = np.array([-1, 0, -2, -1])


@jit(helper=True)
def _dm_row(g, low, right, p_xi, q_xi):
    """Row ξ of dM for one filter: a = g (P[ξ] + Q[ξ] low), times (P[ν] + Q[ν] right) for ν = 0..3."""
    a = g * (p_xi + q_xi * low)
    ar = a * right
    return a - ar, a, a - ar - ar, -ar


@jit(helper=True)
def _window_gradient(dy_t, y_t, argmax_t, top, zw, g, low, right, dbias):
    """For one pooled pixel's filters: g (dy where y > 0, else 0), low and right (the argmax's
    row and column in the window, 0 or 1); dbias += g."""
    one, zero = g.dtype.type(1), g.dtype.type(0)      # no float64 or int64 in the loop: the
    top, zw = np.int32(top), np.int32(zw)              # conversions inside the loop would slow it
    for ff in range(g.size):
        gf = dy_t[ff]                                  # loaded before the test: a load inside
        gf = gf if y_t[ff] > 0 else zero               # a branch would stop vectorisation
        g[ff] = gf
        dbias[ff] += gf
        off = argmax_t[ff] - top                       # 0, 1, ZW or ZW + 1
        low[ff] = one if off >= zw else zero
        right[ff] = one if (off == 1) | (off == zw + 1) else zero


@jit()
def _maxpool_relu_backward_m_numba(dy, argmax, y, zw, p, q, dm, dbias, work):
    """dy (N, TH, TW, F) -> dm, dM tile-major (T, 16, F), and dbias (zeros on entry) += its sum.
    p, q: P and Q in dy's dtype; work (3, F): scratch for g, low and right."""
    n, th, tw, f = dy.shape
    g, low, right = work[0], work[1], work[2]
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                _window_gradient(dy[b, ty, tx], y[b, ty, tx], argmax[b, ty, tx], 2 * ty * zw + 2 * tx, zw,
                                 g, low, right, dbias)
                for xi in range(4):
                    p_xi, q_xi = p[xi], q[xi]
                    row0, row1, row2, row3 = dm[t, 4 * xi], dm[t, 4 * xi + 1], dm[t, 4 * xi + 2], dm[t, 4 * xi + 3]
                    for ff in range(f):
                        row0[ff], row1[ff], row2[ff], row3[ff] = _dm_row(g[ff], low[ff], right[ff], p_xi, q_xi)


# ---------------------------------------------------------------------------------------------
# One input channel (grey images): no matrix product at all
# ---------------------------------------------------------------------------------------------
#
# With C = 1 each M[ξν] = V[ξν] @ U[ξν] is an outer product (K = 1), which BLAS does poorly and
# which would write M, 16 numbers per tile and filter, to memory. These two kernels instead do a
# tile at a time in one loop over the filters: the 16 products, the output transform, bias, ReLU
# and max-pool in the forward; dM and its products with V, summed into dU, in the backward. Every
# line in the filter loop is plain arithmetic on scalars, so the loop is vectorised over filters.

@jit()
def _one_channel_forward_numba(p, u, bias, zw, v, y, argmax):
    """p: the padded grey images (N, 2TH + 2, 2TW + 2); u (16, F): U with its C = 1 axis dropped.
    Writes v (T, 16), y (N, TH, TW, F) and argmax, as the general kernels do."""
    n, th, tw, f = y.shape
    zero = p.dtype.type(0)
    for b in range(n):
        for ty in range(th):
            r0, r1, r2, r3 = p[b, 2 * ty], p[b, 2 * ty + 1], p[b, 2 * ty + 2], p[b, 2 * ty + 3]
            for tx in range(tw):
                t, x0 = (b * th + ty) * tw + tx, 2 * tx
                d = _one_channel_tile(r0, r1, r2, r3, x0, v[t])
                top = np.int32(2 * ty * zw + 2 * tx)
                best_out, where_out = y[b, ty, tx], argmax[b, ty, tx]
                for ff in range(f):                         # M = V ⊙ U, then as the output kernel
                    z = _one_channel_outputs(d, u, ff)
                    best, where = _window_max(z[0] + bias[ff], z[1] + bias[ff], z[2] + bias[ff], z[3] + bias[ff],
                                              top, np.int32(zw))
                    best_out[ff] = zero if best <= 0 else best        # ReLU; NaN stays NaN
                    where_out[ff] = where


@jit()
def _one_channel_kernel_backward_numba(dy, argmax, y, v, zw, p, q, dbias, work):
    """dy -> du (16, F), returned; dbias (zeros on entry) += its sum; v (T, 16); p, q, work as for
    dM above. du is allocated here, not by the caller: an array the kernel allocates cannot overlap
    its arguments, so the compiler vectorises the += loop without testing at run time whether the
    four rows it adds into overlap g, low and right (docs/performance.md)."""
    n, th, tw, f = dy.shape
    g, low, right = work[0], work[1], work[2]
    du = np.zeros((16, f), dtype=dy.dtype)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                _window_gradient(dy[b, ty, tx], y[b, ty, tx], argmax[b, ty, tx], 2 * ty * zw + 2 * tx, zw,
                                 g, low, right, dbias)
                for xi in range(4):                     # dU[4ξ + ν] += V[4ξ + ν] * dM[4ξ + ν]
                    p_xi, q_xi = p[xi], q[xi]
                    v0, v1, v2, v3 = v[t, 4 * xi], v[t, 4 * xi + 1], v[t, 4 * xi + 2], v[t, 4 * xi + 3]
                    row0, row1, row2, row3 = du[4 * xi], du[4 * xi + 1], du[4 * xi + 2], du[4 * xi + 3]
                    for ff in range(f):
                        d0, d1, d2, d3 = _dm_row(g[ff], low[ff], right[ff], p_xi, q_xi)
                        row0[ff] += v0 * d0
                        row1[ff] += v1 * d1
                        row2[ff] += v2 * d2
                        row3[ff] += v3 * d3
    return du


# ---------------------------------------------------------------------------------------------
# What the fused block calls (same contracts as the references)
# ---------------------------------------------------------------------------------------------

def input_transform(x, pt, pl, th, tw):
    """Same contract as the reference: V (16, T, C), a view of a tile-major array."""
    n, c = x.shape[0], x.shape[3]
    v = np.empty((n * th * tw, 16, c), dtype=x.dtype)
    _input_transform_numba(_padded(x, pt, pl, th, tw), th, tw, v, np.empty((4, 4, c), dtype=x.dtype))
    return v.transpose(1, 0, 2)


def input_transform_backward(dv, x_shape, pt, pl, th, tw):
    """Same contract as the reference."""
    c = x_shape[3]
    dp = np.zeros((x_shape[0], 2 * th + 2, 2 * tw + 2, c), dtype=dv.dtype)
    _input_transform_backward_numba(_tile_major(dv), th, tw, dp, np.empty((4, 4, c), dtype=dv.dtype))
    return _unpadded(dp, x_shape, pt, pl)


def output_bias_relu_maxpool(m, bias, n, th, tw, zw):
    """Same contract as the reference: (y, argmax)."""
    expect_shape("output_bias_relu_maxpool", "M", m, (16, n * th * tw, bias.shape[0]))
    y = np.empty((n, th, tw, m.shape[2]), dtype=m.dtype)
    argmax = np.empty(y.shape, dtype=np.int32)
    _output_bias_relu_maxpool_numba(_tile_major(m), bias, zw, y, argmax)
    return y, argmax


def maxpool_relu_backward_m(dy, argmax, y, zw):
    """Same contract as the reference: dM (16, T, F), a view of a tile-major array."""
    n, th, tw, f = dy.shape
    expect_shape("maxpool_relu_backward_m", "argmax", argmax, dy.shape)
    expect_shape("maxpool_relu_backward_m", "y", y, dy.shape)
    dm = np.empty((n * th * tw, 16, f), dtype=dy.dtype)
    dbias = np.zeros(f, dtype=dy.dtype)
    _maxpool_relu_backward_m_numba(np.ascontiguousarray(dy), argmax, y, zw, *_dm_constants(dy.dtype), dm, dbias,
                                   np.empty((3, f), dtype=dy.dtype))
    return dm.transpose(1, 0, 2), dbias


def _dm_constants(dtype):
    """P and Q in the gradient's dtype (see _dm_row)."""
    return P.astype(dtype), Q.astype(dtype)


def _tile_major(a):
    """(16, T, K) -> the (T, 16, K) array the kernels read (no copy when a is such a view)."""
    return np.ascontiguousarray(a.transpose(1, 0, 2))


#: The products below take at most this many tiles (rows) at a time, in blocks of equal size:
#: OpenBLAS changes its blocking from 512 rows on and runs each row slower, the more so when the
#: result is written tile-major (rows 16 L apart), and a sum over many tiles (dU) goes faster as
#: a few shorter sums added. benchmarks/winograd_products.py times it (docs/performance.md).
ROWS = 320


def _blocks(t):
    """slices of range(t), of equal size (but for rounding), each at most ROWS long."""
    parts = -(-t // ROWS)
    bounds = [t * k // parts for k in range(parts + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _matmul_tile_major(a, b):
    """a @ b for (P, T, K) @ (P, K, L), written tile-major: a (P, T, L) view of (T, P, L); P is 16
    here. b is made contiguous first: OpenBLAS reads a transposed view of U more slowly."""
    out = np.empty((a.shape[1], a.shape[0], b.shape[2]), dtype=a.dtype).transpose(1, 0, 2)
    b = np.ascontiguousarray(b)
    for rows in _blocks(a.shape[1]):
        np.matmul(a[:, rows], b, out=out[:, rows])
    return out


def _matmul_over_tiles(a, b):
    """a.transpose(0, 2, 1) @ b for a (P, T, K), b (P, T, L): (P, K, L), summed over the tiles
    a block of them at a time (dU = Vᵀ dM)."""
    blocks = _blocks(a.shape[1])
    total = np.matmul(a[:, blocks[0]].transpose(0, 2, 1), b[:, blocks[0]])
    for rows in blocks[1:]:
        total += np.matmul(a[:, rows].transpose(0, 2, 1), b[:, rows])
    return total


def forward(x, kernel, bias, pad, z_hw):
    """x (N, H, W, C) -> (y, argmax, V, U): the pooled output of maxpool(relu(conv(x) + bias)),
    its argmax in z, and the transformed input and kernel that backward reuses."""
    th, tw = z_hw[0] // 2, z_hw[1] // 2
    expect_shape("winograd.forward", "kernel", kernel, (3, 3, x.shape[3], bias.shape[0]))
    u = kernel_transform(kernel)
    if x.shape[3] == 1:
        n, f = x.shape[0], kernel.shape[3]
        v = np.empty((n * th * tw, 16), dtype=x.dtype)
        y, argmax = np.empty((n, th, tw, f), dtype=x.dtype), np.empty((n, th, tw, f), dtype=np.int32)
        _one_channel_forward_numba(_padded(x, pad[0], pad[2], th, tw)[..., 0], np.ascontiguousarray(u[:, 0]), bias,
                                   z_hw[1], v, y, argmax)
        return y, argmax, v[:, :, None].transpose(1, 0, 2), u
    v = input_transform(x, pad[0], pad[2], th, tw)
    y, argmax = output_bias_relu_maxpool(_matmul_tile_major(v, u), bias, x.shape[0], th, tw, z_hw[1])
    return y, argmax, v, u


def backward(dy, argmax, y, v, u, x_shape, pad, z_hw, input_grad=True):
    """(dkernel, dbias, dx) from dy (N, TH, TW, F); dx is None without ``input_grad``. One input
    channel without dx (the first convolution in training) takes the one-channel dU kernel; with
    dx (a gradient check, say), the general path, whose products then have K = 1."""
    th, tw = dy.shape[1], dy.shape[2]
    for what, array in (("argmax", argmax), ("y", y)):
        expect_shape("winograd.backward", what, array, dy.shape)
    expect_shape("winograd.backward", "V", v, (16, dy.shape[0] * th * tw, x_shape[3]))
    expect_shape("winograd.backward", "U", u, (16, x_shape[3], dy.shape[3]))
    if x_shape[3] == 1 and not input_grad:
        f = dy.shape[3]
        dbias = np.zeros(f, dtype=dy.dtype)
        du = _one_channel_kernel_backward_numba(np.ascontiguousarray(dy), argmax, y, v[:, :, 0].T, z_hw[1],
                                                *_dm_constants(dy.dtype), dbias, np.empty((3, f), dtype=dy.dtype))
        return kernel_transform_backward(du[:, None]), dbias, None
    dm, dbias = maxpool_relu_backward_m(dy, argmax, y, z_hw[1])
    dkernel = kernel_transform_backward(_matmul_over_tiles(v, dm))
    if not input_grad:
        return dkernel, dbias, None
    dx = input_transform_backward(_matmul_tile_major(dm, u.transpose(0, 2, 1)), x_shape, pad[0], pad[2], th, tw)
    return dkernel, dbias, dx
