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

The seed model's second convolution makes each of its 2×2 output tiles exactly one 2×2 window of
the max-pool that follows (stride 1 convolution, 2×2 pool with stride 2), so the output transform
is fused with the bias, ReLU and max-pool (:mod:`.bias_relu_pool`): ``z`` is never written, only
the pooled ``y`` and each window's ``argmax``. A row or column of ``z`` that no pool window reads
(the last one when OH is odd) is not computed at all.

Backward, by the chain rule through the same three steps (every step is linear):

    dM[ξν]  = A dz_tile Aᵀ         dz_tile has one non-zero per filter: dy at the argmax, if y > 0
    dU[ξν]  = V[ξν]ᵀ @ dM[ξν]       then dkernel = Gᵀ dU G
    dV[ξν]  = dM[ξν] @ U[ξν]ᵀ       then dx_tile = B dV Bᵀ, added into dx (tiles overlap by 2)

Together the three matrix products of a step do (16/36) × (tiles / output pixels) of im2col's
work: for the seed model's second convolution (11×11 outputs, 5×5 pooled) 16·25 / (9·121) = 37%.
The transforms are additions only, over arrays a little larger than x and the pooled output.
Rounding differs from im2col's (the transforms add and subtract before multiplying), by a few
units in the last place of float32; the tests compare with tolerances, in float32 and float64.

Each Numba kernel below has a NumPy ``*_reference`` written with ``einsum`` over the tiles, and
the tests check the whole block against Conv2D → ReLU → MaxPool2D run one by one.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .bias_relu_pool import bias_relu_maxpool_forward_reference, maxpool_relu_backward_reference
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
# The kernel's transform (small: NumPy is enough, and it is its own reference)
# ---------------------------------------------------------------------------------------------

def kernel_transform(kernel):
    """kernel (3, 3, C, F) -> U (16, C, F), U[4ξ+ν] = (G g Gᵀ)[ξ, ν] for every channel and filter.

    Two matrix products over the kernel's first two axes (einsum would read more easily, and
    took ten times longer)."""
    g = G.astype(kernel.dtype)
    gk = np.matmul(g, kernel.reshape(3, -1)).reshape(4, 3, -1)        # G g: rows      (4, 3, C*F)
    return np.matmul(g, gk).reshape(16, *kernel.shape[2:])            # (G g) Gᵀ, per row ξ


def kernel_transform_backward(du):
    """dU (16, C, F) -> dkernel (3, 3, C, F) = Gᵀ dU G, the transpose of kernel_transform."""
    g = G.astype(du.dtype)
    gd = np.matmul(g.T, du.reshape(4, -1)).reshape(3, 4, -1)          # Gᵀ dU          (3, 4, C*F)
    return np.matmul(g.T, gd).reshape(3, 3, *du.shape[1:])            # (Gᵀ dU) G


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------

def _padded(x, pt, pl, th, tw):
    """The (N, 2TH+2, 2TW+2, C) input the tiles read: x shifted by the padding, zeros around."""
    n, h, w, c = x.shape
    out = np.zeros((n, 2 * th + 2, 2 * tw + 2, c), dtype=x.dtype)
    rows, cols = min(h, 2 * th + 2 - pt), min(w, 2 * tw + 2 - pl)
    out[:, pt:pt + rows, pl:pl + cols] = x[:, :rows, :cols]
    return out


def input_transform_reference(x, pt, pl, th, tw):
    """x (N, H, W, C) -> V (16, N*TH*TW, C): the 4×4 tile under every 2×2 output block, Bᵀ d B."""
    tiles = sliding_window_view(_padded(x, pt, pl, th, tw), (4, 4), axis=(1, 2))[:, ::2, ::2]  # N,TH,TW,C,4,4
    bt = BT.astype(x.dtype)
    return np.einsum("ai,nhwcij,bj->abnhwc", bt, tiles, bt).reshape(16, -1, x.shape[3])


def input_transform_backward_reference(dv, x_shape, pt, pl, th, tw):
    """dV (16, T, C) -> dx (N, H, W, C): B dV Bᵀ per tile, added where the tile came from."""
    n, h, w, c = x_shape
    bt = BT.astype(dv.dtype)
    dd = np.einsum("ai,abnhwc,bj->nhwijc", bt, dv.reshape(4, 4, n, th, tw, c), bt)
    dpad = np.zeros((n, 2 * th + 2, 2 * tw + 2, c), dtype=dv.dtype)
    for i in range(4):
        for j in range(4):
            dpad[:, i:i + 2 * th:2, j:j + 2 * tw:2] += dd[:, :, :, i, j]
    dx = np.zeros(x_shape, dtype=dv.dtype)
    rows, cols = min(h, 2 * th + 2 - pt), min(w, 2 * tw + 2 - pl)
    dx[:, :rows, :cols] = dpad[:, pt:pt + rows, pl:pl + cols]
    return dx


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
# They store V, M, dM and dV tile by tile, (T, 16, C): the 16 numbers of a tile are next to each
# other. The matrix products read the same memory as (16, T, C) through a transposed view (BLAS
# takes a row stride), which is the layout the contracts above describe. Stored (16, T, C), a
# tile's 16 numbers would lie T*C apart: for the seed model exactly 25 pages, so that all 16 fall
# into the same set of the cache (4K aliasing), and the kernels below ran ten times slower.

@jit()
def _input_transform_numba(x, pt, pl, th, tw):
    n, h, w, c = x.shape
    v = np.empty((n * th * tw, 16, c), dtype=x.dtype)
    d = np.empty((4, 4, c), dtype=x.dtype)
    r = np.empty((4, 4, c), dtype=x.dtype)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                for i in range(4):                          # d: the 4×4 tile, zeros off the image
                    hi = 2 * ty + i - pt
                    for j in range(4):
                        wi = 2 * tx + j - pl
                        if 0 <= hi < h and 0 <= wi < w:
                            for ch in range(c):
                                d[i, j, ch] = x[b, hi, wi, ch]
                        else:
                            for ch in range(c):
                                d[i, j, ch] = 0
                for j in range(4):                          # r = Bᵀ d
                    for ch in range(c):
                        r[0, j, ch] = d[0, j, ch] - d[2, j, ch]
                        r[1, j, ch] = d[1, j, ch] + d[2, j, ch]
                        r[2, j, ch] = d[2, j, ch] - d[1, j, ch]
                        r[3, j, ch] = d[1, j, ch] - d[3, j, ch]
                for i in range(4):                          # V = r B
                    for ch in range(c):
                        v[t, 4 * i + 0, ch] = r[i, 0, ch] - r[i, 2, ch]
                        v[t, 4 * i + 1, ch] = r[i, 1, ch] + r[i, 2, ch]
                        v[t, 4 * i + 2, ch] = r[i, 2, ch] - r[i, 1, ch]
                        v[t, 4 * i + 3, ch] = r[i, 1, ch] - r[i, 3, ch]
    return v


@jit()
def _input_transform_backward_numba(dv, n, h, w, pt, pl, th, tw):
    c = dv.shape[2]
    dx = np.zeros((n, h, w, c), dtype=dv.dtype)
    e = np.empty((4, 4, c), dtype=dv.dtype)
    dd = np.empty((4, 4, c), dtype=dv.dtype)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                for j in range(4):                          # e = B dV
                    for ch in range(c):
                        e[0, j, ch] = dv[t, j, ch]
                        e[1, j, ch] = dv[t, 4 + j, ch] - dv[t, 8 + j, ch] + dv[t, 12 + j, ch]
                        e[2, j, ch] = dv[t, 4 + j, ch] + dv[t, 8 + j, ch] - dv[t, j, ch]
                        e[3, j, ch] = -dv[t, 12 + j, ch]
                for i in range(4):                          # dd = e Bᵀ
                    for ch in range(c):
                        dd[i, 0, ch] = e[i, 0, ch]
                        dd[i, 1, ch] = e[i, 1, ch] - e[i, 2, ch] + e[i, 3, ch]
                        dd[i, 2, ch] = e[i, 1, ch] + e[i, 2, ch] - e[i, 0, ch]
                        dd[i, 3, ch] = -e[i, 3, ch]
                for i in range(4):                          # added where the tile was read
                    hi = 2 * ty + i - pt
                    if hi < 0 or hi >= h:
                        continue
                    for j in range(4):
                        wi = 2 * tx + j - pl
                        if wi < 0 or wi >= w:
                            continue
                        for ch in range(c):
                            dx[b, hi, wi, ch] += dd[i, j, ch]
    return dx


@jit()
def _output_bias_relu_maxpool_numba(m, bias, n, th, tw, zw):
    f = m.shape[2]
    y = np.empty((n, th, tw, f), dtype=m.dtype)
    argmax = np.empty((n, th, tw, f), dtype=np.int32)
    r = np.empty((2, 4, f), dtype=m.dtype)
    zero = m.dtype.type(0)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                for j in range(4):                          # r = Aᵀ M
                    for ff in range(f):
                        r[0, j, ff] = m[t, j, ff] + m[t, 4 + j, ff] + m[t, 8 + j, ff]
                        r[1, j, ff] = m[t, 4 + j, ff] - m[t, 8 + j, ff] - m[t, 12 + j, ff]
                top = 2 * ty * zw + 2 * tx                  # z's flat index of the window's first pixel
                best_out, where_out = y[b, ty, tx], argmax[b, ty, tx]
                for ff in range(f):                         # z = r A + bias, then max and ReLU
                    z00 = r[0, 0, ff] + r[0, 1, ff] + r[0, 2, ff] + bias[ff]
                    z01 = r[0, 1, ff] - r[0, 2, ff] - r[0, 3, ff] + bias[ff]
                    z10 = r[1, 0, ff] + r[1, 1, ff] + r[1, 2, ff] + bias[ff]
                    z11 = r[1, 1, ff] - r[1, 2, ff] - r[1, 3, ff] + bias[ff]
                    best, where = z00, top                  # the first maximum in reading order
                    larger = z01 > best
                    best, where = (z01, top + 1) if larger else (best, where)
                    larger = z10 > best
                    best, where = (z10, top + zw) if larger else (best, where)
                    larger = z11 > best
                    best, where = (z11, top + zw + 1) if larger else (best, where)
                    best_out[ff] = best if best > 0 else zero
                    where_out[ff] = where
    return y, argmax


# dM = A dz_tile Aᵀ, where dz_tile holds, for each filter, one non-zero g at (row, col) of the 2×2
# window. A's columns are (1, 1, 1, 0) for the first row or column and (0, 1, -1, -1) for the
# second, so with low = row and right = col (0 or 1):
#     dM[4ξ + ν] = g * (P[ξ] + Q[ξ] * low) * (P[ν] + Q[ν] * right),   P = (1, 1, 1, 0), Q = (-1, 0, -2, -1)
# The kernels first find g, low and right for every filter of a tile, then write dM four rows at a
# time. (Sixteen rows in one loop are sixteen places to store to: too many for the compiler to
# check for overlap, and the loop was not vectorised.)
P = np.array([1, 1, 1, 0])
Q = np.array([-1, 0, -2, -1])


@jit()
def _window_gradient(dy_t, y_t, argmax_t, top, zw, g, low, right, dbias):
    """For one pooled pixel's filters: g (dy where y > 0, else 0), low and right (the argmax's
    row and column in the window, 0 or 1); dbias += g."""
    one, zero = g.dtype.type(1), g.dtype.type(0)      # no float64 or int64 in the loop: the
    top, zw = np.int32(top), np.int32(zw)              # conversions would slow it 2-4 times
    for ff in range(g.size):
        gf = dy_t[ff]                                  # loaded before the test: a load inside
        gf = gf if y_t[ff] > 0 else zero               # a branch would stop vectorisation
        g[ff] = gf
        dbias[ff] += gf
        off = argmax_t[ff] - top                       # 0, 1, ZW or ZW + 1
        low[ff] = one if off >= zw else zero
        right[ff] = one if (off == 1) | (off == zw + 1) else zero


@jit()
def _maxpool_relu_backward_m_numba(dy, argmax, y, zw):
    n, th, tw, f = dy.shape
    dm = np.empty((n * th * tw, 16, f), dtype=dy.dtype)
    dbias = np.zeros(f, dtype=dy.dtype)
    g, low, right = np.empty(f, dy.dtype), np.empty(f, dy.dtype), np.empty(f, dy.dtype)
    p, q = P.astype(dy.dtype), Q.astype(dy.dtype)
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
                        a = g[ff] * (p_xi + q_xi * low[ff])
                        r = right[ff]
                        ar = a * r
                        row0[ff], row1[ff], row2[ff], row3[ff] = a - ar, a, a - ar - ar, -ar
    return dm, dbias


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
def _one_channel_forward_numba(x, u, bias, pt, pl, th, tw, zw):
    n, h, w, _ = x.shape
    f = u.shape[1]                                          # u (16, F): U with its C = 1 axis dropped
    v = np.empty((n * th * tw, 16), dtype=x.dtype)
    y = np.empty((n, th, tw, f), dtype=x.dtype)
    argmax = np.empty((n, th, tw, f), dtype=np.int32)
    d = np.empty((4, 4), dtype=x.dtype)
    r = np.empty((4, 4), dtype=x.dtype)
    zero = x.dtype.type(0)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                for i in range(4):                          # V = Bᵀ d B, as _input_transform_numba
                    hi = 2 * ty + i - pt
                    for j in range(4):
                        wi = 2 * tx + j - pl
                        d[i, j] = x[b, hi, wi, 0] if 0 <= hi < h and 0 <= wi < w else zero
                for j in range(4):
                    r[0, j], r[1, j] = d[0, j] - d[2, j], d[1, j] + d[2, j]
                    r[2, j], r[3, j] = d[2, j] - d[1, j], d[1, j] - d[3, j]
                for i in range(4):
                    v[t, 4 * i], v[t, 4 * i + 1] = r[i, 0] - r[i, 2], r[i, 1] + r[i, 2]
                    v[t, 4 * i + 2], v[t, 4 * i + 3] = r[i, 2] - r[i, 1], r[i, 1] - r[i, 3]
                v0, v1, v2, v3, v4, v5, v6, v7 = v[t, 0], v[t, 1], v[t, 2], v[t, 3], v[t, 4], v[t, 5], v[t, 6], v[t, 7]
                v8, v9, v10, v11 = v[t, 8], v[t, 9], v[t, 10], v[t, 11]
                v12, v13, v14, v15 = v[t, 12], v[t, 13], v[t, 14], v[t, 15]
                top = 2 * ty * zw + 2 * tx
                best_out, where_out = y[b, ty, tx], argmax[b, ty, tx]
                for ff in range(f):
                    m0, m1, m2, m3 = v0 * u[0, ff], v1 * u[1, ff], v2 * u[2, ff], v3 * u[3, ff]
                    m4, m5, m6, m7 = v4 * u[4, ff], v5 * u[5, ff], v6 * u[6, ff], v7 * u[7, ff]
                    m8, m9, m10, m11 = v8 * u[8, ff], v9 * u[9, ff], v10 * u[10, ff], v11 * u[11, ff]
                    m12, m13, m14, m15 = v12 * u[12, ff], v13 * u[13, ff], v14 * u[14, ff], v15 * u[15, ff]
                    r00, r01, r02, r03 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11   # Aᵀ M
                    r10, r11, r12, r13 = m4 - m8 - m12, m5 - m9 - m13, m6 - m10 - m14, m7 - m11 - m15
                    z00 = r00 + r01 + r02 + bias[ff]                                               # (Aᵀ M) A
                    z01 = r01 - r02 - r03 + bias[ff]
                    z10 = r10 + r11 + r12 + bias[ff]
                    z11 = r11 - r12 - r13 + bias[ff]
                    best, where = z00, top
                    larger = z01 > best
                    best, where = (z01, top + 1) if larger else (best, where)
                    larger = z10 > best
                    best, where = (z10, top + zw) if larger else (best, where)
                    larger = z11 > best
                    best, where = (z11, top + zw + 1) if larger else (best, where)
                    best_out[ff] = best if best > 0 else zero
                    where_out[ff] = where
    return y, argmax, v


@jit()
def _one_channel_kernel_backward_numba(dy, argmax, y, v, zw):
    n, th, tw, f = dy.shape
    du = np.zeros((16, f), dtype=dy.dtype)
    dbias = np.zeros(f, dtype=dy.dtype)
    g, low, right = np.empty(f, dy.dtype), np.empty(f, dy.dtype), np.empty(f, dy.dtype)
    p, q = P.astype(dy.dtype), Q.astype(dy.dtype)
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
                        a = g[ff] * (p_xi + q_xi * low[ff])
                        r = right[ff]
                        row0[ff] += v0 * (a - a * r)
                        row1[ff] += v1 * a
                        row2[ff] += v2 * (a - a * r - a * r)
                        row3[ff] -= v3 * (a * r)
    return du, dbias


# ---------------------------------------------------------------------------------------------
# What the fused block calls (same contracts as the references)
# ---------------------------------------------------------------------------------------------

def input_transform(x, pt, pl, th, tw):
    """Same contract as the reference: V (16, T, C), a view of a tile-major array."""
    return _input_transform_numba(np.ascontiguousarray(x), pt, pl, th, tw).transpose(1, 0, 2)


def input_transform_backward(dv, x_shape, pt, pl, th, tw):
    return _input_transform_backward_numba(_tile_major(dv), *x_shape[:3], pt, pl, th, tw)


def output_bias_relu_maxpool(m, bias, n, th, tw, zw):
    return _output_bias_relu_maxpool_numba(_tile_major(m), bias, n, th, tw, zw)


def maxpool_relu_backward_m(dy, argmax, y, zw):
    """Same contract as the reference: dM (16, T, F), a view of a tile-major array."""
    dm, dbias = _maxpool_relu_backward_m_numba(np.ascontiguousarray(dy), argmax, y, zw)
    return dm.transpose(1, 0, 2), dbias


def _tile_major(a):
    """(16, T, K) -> the (T, 16, K) array the kernels read (no copy when a is such a view)."""
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def _matmul_tile_major(a, b):
    """a @ b for (16, T, K) @ (16, K, L), written tile-major: a (16, T, L) view of (T, 16, L)."""
    out = np.empty((a.shape[1], 16, b.shape[2]), dtype=a.dtype)
    np.matmul(a, b, out=out.transpose(1, 0, 2))
    return out.transpose(1, 0, 2)


def forward(x, kernel, bias, pad, z_hw):
    """x (N, H, W, C) -> (y, argmax, V, U): the pooled output of maxpool(relu(conv(x) + bias)),
    its argmax in z, and the transformed input and kernel that backward reuses."""
    th, tw = z_hw[0] // 2, z_hw[1] // 2
    u = kernel_transform(kernel)
    if x.shape[3] == 1:
        y, argmax, v = _one_channel_forward_numba(np.ascontiguousarray(x), u[:, 0], bias, pad[0], pad[2], th, tw, z_hw[1])
        return y, argmax, v[:, :, None].transpose(1, 0, 2), u
    v = input_transform(x, pad[0], pad[2], th, tw)
    y, argmax = output_bias_relu_maxpool(_matmul_tile_major(v, u), bias, x.shape[0], th, tw, z_hw[1])
    return y, argmax, v, u


def backward(dy, argmax, y, v, u, x_shape, pad, z_hw, input_grad=True):
    """(dkernel, dbias, dx) from dy (N, TH, TW, F); dx is None without ``input_grad``."""
    th, tw = dy.shape[1], dy.shape[2]
    if x_shape[3] == 1 and not input_grad:
        du, dbias = _one_channel_kernel_backward_numba(np.ascontiguousarray(dy), argmax, y, v[:, :, 0].T, z_hw[1])
        return kernel_transform_backward(du[:, None]), dbias, None
    dm, dbias = maxpool_relu_backward_m(dy, argmax, y, z_hw[1])
    dkernel = kernel_transform_backward(np.matmul(v.transpose(0, 2, 1), dm))
    if not input_grad:
        return dkernel, dbias, None
    dx = input_transform_backward(_matmul_tile_major(dm, u.transpose(0, 2, 1)), x_shape, pad[0], pad[2], th, tw)
    return dkernel, dbias, dx
