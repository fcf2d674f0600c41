"""A 3×3 convolution by Winograd's algorithm, z written whole: the BatchNormalization block's.

:mod:`.winograd` computes a 3×3 convolution tile by tile, 2×2 output pixels from each 4×4 input
tile, and fuses the last step with the max-pool that follows, so that z is never stored. That
needs each tile to be a pool window. When a BatchNormalization sits between the convolution and
its ReLU (``--arch bn-dropout``), the batch's mean and variance are needed before anything can be
pooled, and they are taken over *every* pixel of z, the last row and column included when the
size does not divide. So here the tiles compute z itself, all of it: the last tiles read zeros
beyond the input, and their pixels beyond z are dropped.

Larger tiles: F(4×4, 3×3)
-------------------------
With z stored anyway, nothing ties a tile to a pool window, and a larger tile saves more: F(m×m,
3×3) makes an m×m block of outputs from the (m + 2)×(m + 2) input tile under it with (m + 2)²
multiplications, against 9 m² the direct way. For m = 4 that is 36 for 16 outputs, 2.25 each,
against 4 each for F(2×2, 3×3) and 9 for im2col (Lavin & Gray 2015, whose matrices these are,
from the interpolation points 0, 1, -1, 2, -2 and ∞):

    Bᵀ = [[4,  0, -5,  0, 1, 0],    G = [[ 1/4,     0,    0],    Aᵀ = [[1, 1,  1, 1,  1, 0],
          [0, -4, -4,  1, 1, 0],         [-1/6,  -1/6, -1/6],          [0, 1, -1, 2, -2, 0],
          [0,  4, -4, -1, 1, 0],         [-1/6,   1/6, -1/6],          [0, 1,  1, 4,  4, 0],
          [0, -2, -1,  2, 1, 0],         [1/24,  1/12,  1/6],          [0, 1, -1, 8, -8, 1]]
          [0,  2, -1, -2, 1, 0],         [1/24, -1/12,  1/6],
          [0,  4,  0, -5, 0, 1]]         [   0,     0,    1]]

The steps are :mod:`.winograd`'s (its docstring derives them), with 36 positions instead of 16:

    V[ξν] = Bᵀ d B        every 6×6 input tile d and channel              (36, T, C)
    U[ξν] = G g Gᵀ        every channel and filter                        (36, C, F)
    M[ξν] = V[ξν] @ U[ξν]                                36 matrix products (36, T, F)
    z     = Aᵀ M A + bias, each tile's 4×4, cropped to (OH, OW)           (N, OH, OW, F)

Backward, given dz (N, OH, OW, F), dense (BatchNormalization's backward gives every pixel a
gradient), by the chain rule through the same linear steps:

    dM[ξν]  = A dz_tile Aᵀ       dz_tile zero beyond z;   dbias = Σ dz
    dU[ξν]  = V[ξν]ᵀ @ dM[ξν],   dkernel = Gᵀ dU G
    dV[ξν]  = dM[ξν] @ U[ξν]ᵀ,   dx = B dV Bᵀ per tile, added where the tile was read (they overlap by 2)

The larger constants round a little more than F(2×2, 3×3)'s: in float32 a few units in the fifth
digit, against im2col (the tests' tolerances). The transforms are loops over a small matrix's
non-zero entries, the channels innermost; the products go to BLAS. The batch is worked through a
few images at a time (``GROUP_TILES``), so that a group's M or dM is still in the cache when the
next step reads it.

One input channel: F(2×2, 3×3) in one loop
-------------------------------------------
With one input channel (grey images, the first convolution) every M[ξν] is an outer product,
which BLAS does poorly, and there is no product to save. In training, where the first
convolution needs no dx, two kernels do a tile of F(2×2, 3×3) at a time in one loop over the
filters instead, as :mod:`.winograd`'s one-channel kernels do: Bᵀ d B, the 16 products, Aᵀ M A
and the bias forward; dM = A dz_tile Aᵀ and dU += V ⊙ dM backward. A has two rows, (1, 1, 1, 0)
and (0, 1, -1, -1) as columns of Aᵀ; so for a 2×2 dz_tile (g00 g01 / g10 g11), row ξ of dM is
(a, a + c, a - c, -c) with a = S[ξ] g00 + T[ξ] g10, c = S[ξ] g01 + T[ξ] g11, where S and T are
the two rows of :mod:`.winograd`'s Aᵀ. When a 2×2 max-pool of stride 2 follows, each such tile is
one pool window, and a third kernel (``one_channel_batchnorm_backward``) computes the tile's dz
from BatchNormalization's formula (``batchnorm_relu_pool``) on the way, instead of reading a dz
that another pass wrote.

Each kernel has a NumPy ``*_reference``; tests/test_winograd_conv.py checks every kernel against
it, and ``forward`` and ``backward`` (both paths) against im2col's convolution and its backward.
"""

import numpy as np

from . import winograd
from .geometry import expect_shape
from .jit import jit
from .winograd import MIN_CHANNELS, _one_channel_outputs, _one_channel_tile, _padded, _unpadded

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
              dtype=np.float64)

S, T = winograd.AT[0], winograd.AT[1]       # F(2×2, 3×3)'s Aᵀ, the one-channel kernels' dM


def applies(channels, kernel_size, strides):
    """True for a 3×3 stride-1 convolution (any padding) with one input channel or at least
    winograd.MIN_CHANNELS (below that, im2col's one matrix product is faster)."""
    return ((channels == 1 or channels >= MIN_CHANNELS) and tuple(kernel_size) == (3, 3)
            and tuple(strides) == (1, 1))


def one_channel(channels, input_grad):
    """Whether ``forward`` takes the one-channel F(2×2, 3×3) kernels: one input channel, and no
    dx wanted (the first convolution in training); V then has 16 rows instead of 36."""
    return channels == 1 and not input_grad


def tiles(z_hw, m=4):
    """(TH, TW): the m×m tiles that cover z, the last ones partly outside it."""
    return -(-z_hw[0] // m), -(-z_hw[1] // m)


# ---------------------------------------------------------------------------------------------
# F(4×4, 3×3): the kernel's transform (.winograd's, with this G)
# ---------------------------------------------------------------------------------------------

def kernel_transform(kernel):
    """kernel (3, 3, C, F) -> U (36, C, F), U[6ξ+ν] = (G g Gᵀ)[ξ, ν]: .winograd's, with this G."""
    return winograd.kernel_transform(kernel, G)


def kernel_transform_backward(du):
    """dU (36, C, F) -> dkernel (3, 3, C, F) = Gᵀ dU G, the transpose of kernel_transform."""
    return winograd.kernel_transform_backward(du, G)


# ---------------------------------------------------------------------------------------------
# F(4×4, 3×3): NumPy references
# ---------------------------------------------------------------------------------------------

def input_transform_reference(x, pad, th, tw):
    """x (N, H, W, C) -> V (36, N*TH*TW, C): the 6×6 tile under every 4×4 output block, Bᵀ d B
    (.winograd's, with this Bᵀ)."""
    return winograd.input_transform_reference(x, pad[0], pad[2], th, tw, BT)


def input_transform_backward_reference(dv, x_shape, pad, th, tw):
    """dV (36, T, C) -> dx (N, H, W, C): B dV Bᵀ per tile, added where the tile came from."""
    return winograd.input_transform_backward_reference(dv, x_shape, pad[0], pad[2], th, tw, BT)


def output_transform_reference(m, bias, n, oh, ow, at=AT):
    """M (36, T, F) -> z (N, OH, OW, F) = Aᵀ M A + bias per tile, cropped to (OH, OW). (With
    F(2×2, 3×3)'s Aᵀ, .winograd.AT: M (16, T, F), 2×2 tiles.)"""
    a, m_out = at.shape[1], at.shape[0]                  # a tile's inputs and outputs per side
    th, tw = tiles((oh, ow), m_out)
    at = at.astype(m.dtype)
    z = np.einsum("ia,abnhwf,jb->nhiwjf", at, m.reshape(a, a, n, th, tw, -1), at)
    return z.reshape(n, m_out * th, m_out * tw, -1)[:, :oh, :ow] + bias


def output_transform_backward_reference(dz, at=AT):
    """dz (N, OH, OW, F) -> (dM (36, T, F) = A dz_tile Aᵀ per tile, dz zero beyond z; dbias = Σ dz).
    (With .winograd.AT: dM (16, T, F).)"""
    n, oh, ow, f = dz.shape
    a, m_out = at.shape[1], at.shape[0]
    th, tw = tiles((oh, ow), m_out)
    padded = np.zeros((n, m_out * th, m_out * tw, f), dtype=dz.dtype)
    padded[:, :oh, :ow] = dz
    at = at.astype(dz.dtype)
    dm = np.einsum("ia,nhiwjf,jb->abnhwf", at, padded.reshape(n, th, m_out, tw, m_out, f), at)
    return dm.reshape(a * a, -1, f), dz.sum(axis=(0, 1, 2))


def one_channel_forward_reference(x, kernel, bias, pad, z_hw):
    """x (N, H, W, 1) -> z by F(2×2, 3×3), its steps one after another: V, U, M = V @ U, z."""
    th, tw = tiles(z_hw, 2)
    v = winograd.input_transform_reference(x, pad[0], pad[2], th, tw)
    m = np.matmul(v, winograd.kernel_transform_reference(kernel))
    return output_transform_reference(m, bias, x.shape[0], *z_hw, winograd.AT)


def one_channel_kernel_backward_reference(dz, x, pad):
    """dz (N, OH, OW, F), x (N, H, W, 1) -> (dkernel, dbias) by F(2×2, 3×3): dM = A dz_tile Aᵀ,
    dU = Vᵀ dM, dkernel = Gᵀ dU G."""
    dm, dbias = output_transform_backward_reference(dz, winograd.AT)
    th, tw = tiles(dz.shape[1:3], 2)
    v = winograd.input_transform_reference(x, pad[0], pad[2], th, tw)
    return winograd.kernel_transform_backward_reference(np.matmul(v.transpose(0, 2, 1), dm)), dbias


def one_channel_batchnorm_backward_reference(dy, argmax, y, z, x, pad, mean, inv_std, gamma, dbeta, dgamma, m):
    """(dkernel, dbias): BatchNormalization's, ReLU's and the max-pool's backward
    (batchnorm_relu_pool's reference), then the one-channel convolution's (above)."""
    from .batchnorm_relu_pool import batchnorm_input_gradient_reference
    dz = batchnorm_input_gradient_reference(dy, argmax, y, z, mean, inv_std, gamma, dbeta, dgamma, m)
    return one_channel_kernel_backward_reference(dz, x, pad)


# ---------------------------------------------------------------------------------------------
# F(4×4, 3×3): Numba kernels, a tile at a time, the channels or filters innermost (vectorised)
# ---------------------------------------------------------------------------------------------
#
# Storage is tile-major, (T, 36, K), as in .winograd and for the same reason: the matrix products
# read it as (36, T, K) through a transposed view. Each transform applies its small matrix to a
# tile's columns, into a scratch tile ``e``, then to the rows of ``e``; the matrices are written
# out below as arithmetic on six (or four) numbers, so that each loop over the channels is plain
# arithmetic on scalars, which the compiler vectorises. A tile whose pixels reach beyond z writes
# those into (or reads them as zeros from) a spare row, as the one-channel kernels below do.

# The multiples are written as sums (_twice, _four_times): a Python int times a float32 is a
# float64 in Numba, and the loops would convert every number both ways.

@jit(helper=True)
def _twice(a):
    return a + a


@jit(helper=True)
def _four_times(a):
    return _twice(a + a)


@jit(helper=True)
def _bt6(a0, a1, a2, a3, a4, a5):
    """Bᵀ (a0, ..., a5)."""
    return (_four_times(a0 - a2) - a2 + a4, a3 + a4 - _four_times(a1 + a2), _four_times(a1 - a2) + a4 - a3,
            _twice(a3 - a1) + a4 - a2, a4 - a2 - _twice(a3 - a1), _four_times(a1 - a3) - a3 + a5)


@jit(helper=True)
def _b6(a0, a1, a2, a3, a4, a5):
    """B (a0, ..., a5), the transpose of _bt6."""
    return (_four_times(a0), _four_times(a2 - a1 + a5) + _twice(a4 - a3), -(_four_times(a0 + a1 + a2) + a0 + a3 + a4),
            a1 - a2 + _twice(a3 - a4) - _four_times(a5) - a5, a0 + a1 + a2 + a3 + a4, a5)


@jit(helper=True)
def _at6(a0, a1, a2, a3, a4, a5):
    """Aᵀ (a0, ..., a5): 4 numbers."""
    s1, d1, s2, d2 = a1 + a2, a1 - a2, a3 + a4, a3 - a4
    return a0 + s1 + s2, d1 + _twice(d2), s1 + _four_times(s2), d1 + _four_times(_twice(d2)) + a5


@jit(helper=True)
def _a6(a0, a1, a2, a3):
    """A (a0, ..., a3), the transpose of _at6: 6 numbers."""
    s, d = a0 + a2, a1 + a3
    p, q = a0 + _four_times(a2), _twice(a1 + _four_times(a3))
    return a0, s + d, s - d, p + q, p - q, a3


@jit(helper=True)
def _row_of_four(a, b, y, x0, oh, ow, spare):
    """The (F,) rows of pixels (y, x0) ... (y, x0 + 3) of a (N, OH, OW, F); one outside z gets a
    row of ``spare`` (4, F) instead."""
    inside = y < oh
    r0 = a[b, y, x0] if inside else spare[0]
    r1 = a[b, y, x0 + 1] if inside and x0 + 1 < ow else spare[1]
    r2 = a[b, y, x0 + 2] if inside and x0 + 2 < ow else spare[2]
    r3 = a[b, y, x0 + 3] if inside and x0 + 3 < ow else spare[3]
    return r0, r1, r2, r3


@jit(helper=True)
def _row_or(x, b, y, zeros):
    """Row y of image b of x (N, H, W, C), or ``zeros`` (W, C) when y is outside x."""
    return x[b, y] if 0 <= y < x.shape[1] else zeros


@jit()
def _input_transform_numba(x, pt, pl, th, tw, v, e):
    """x (N, H, W, C), read as if padded by pt rows above and pl columns left and by zeros all
    round -> v, V tile-major (T, 36, C). e (6, 6, C).

    The padding is not made, so that no zeroed, padded copy of x costs a pass over x and one over
    the copy in every share's thread: a tile row outside x reads a row of zeros, and a tile column
    outside x is a column of e that is zero (Bᵀ of zeros)."""
    n, w, c = x.shape[0], x.shape[2], x.shape[3]
    zero_row = np.zeros((w, c), dtype=x.dtype)
    for b in range(n):
        for ty in range(th):
            y0 = 4 * ty - pt                        # the tile's six rows (W, C): x's, or zeros
            d0, d1, d2 = _row_or(x, b, y0, zero_row), _row_or(x, b, y0 + 1, zero_row), \
                _row_or(x, b, y0 + 2, zero_row)
            d3, d4, d5 = _row_or(x, b, y0 + 3, zero_row), _row_or(x, b, y0 + 4, zero_row), \
                _row_or(x, b, y0 + 5, zero_row)
            for tx in range(tw):
                t, x0 = (b * th + ty) * tw + tx, 4 * tx - pl
                for j in range(6):                  # column j of e = Bᵀ (column j of d)
                    xj = x0 + j
                    e0, e1, e2, e3, e4, e5 = e[0, j], e[1, j], e[2, j], e[3, j], e[4, j], e[5, j]
                    if xj < 0 or xj >= w:
                        e0[:], e1[:], e2[:], e3[:], e4[:], e5[:] = 0, 0, 0, 0, 0, 0
                        continue
                    for ch in range(c):
                        e0[ch], e1[ch], e2[ch], e3[ch], e4[ch], e5[ch] = _bt6(
                            d0[xj, ch], d1[xj, ch], d2[xj, ch], d3[xj, ch], d4[xj, ch], d5[xj, ch])
                for i in range(6):                  # row i of V = Bᵀ (row i of e)
                    ei, vt, k = e[i], v[t], 6 * i
                    o0, o1, o2, o3, o4, o5 = vt[k], vt[k + 1], vt[k + 2], vt[k + 3], vt[k + 4], vt[k + 5]
                    for ch in range(c):
                        o0[ch], o1[ch], o2[ch], o3[ch], o4[ch], o5[ch] = _bt6(
                            ei[0, ch], ei[1, ch], ei[2, ch], ei[3, ch], ei[4, ch], ei[5, ch])


@jit()
def _input_transform_backward_numba(dv, th, tw, dp, e):
    """dV tile-major (T, 36, C) -> dp (zeros on entry), the gradient of the padded input:
    dd = B dV Bᵀ for every tile, added where the tile was read. e (6, 6, C)."""
    n, c = dp.shape[0], dv.shape[2]
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t, x0 = (b * th + ty) * tw + tx, 4 * tx
                g = dv[t]
                for j in range(6):                  # column j of e = B (column j of dV)
                    e0, e1, e2, e3, e4, e5 = e[0, j], e[1, j], e[2, j], e[3, j], e[4, j], e[5, j]
                    for ch in range(c):
                        e0[ch], e1[ch], e2[ch], e3[ch], e4[ch], e5[ch] = _b6(
                            g[j, ch], g[6 + j, ch], g[12 + j, ch], g[18 + j, ch], g[24 + j, ch], g[30 + j, ch])
                for i in range(6):                  # row i of dd = B (row i of e), added in
                    row, ei = dp[b, 4 * ty + i], e[i]
                    for ch in range(c):
                        dd = _b6(ei[0, ch], ei[1, ch], ei[2, ch], ei[3, ch], ei[4, ch], ei[5, ch])
                        row[x0, ch] += dd[0]
                        row[x0 + 1, ch] += dd[1]
                        row[x0 + 2, ch] += dd[2]
                        row[x0 + 3, ch] += dd[3]
                        row[x0 + 4, ch] += dd[4]
                        row[x0 + 5, ch] += dd[5]


@jit()
def _output_transform_numba(m, bias, z, e, sink):
    """M tile-major (T, 36, F) -> z (N, OH, OW, F) = Aᵀ M A + bias. e (4, 6, F); sink (4, F)."""
    n, oh, ow, f = z.shape
    th, tw = (oh + 3) // 4, (ow + 3) // 4
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                mt = m[(b * th + ty) * tw + tx]
                for k in range(6):                  # column k of e = Aᵀ (column k of M)
                    e0, e1, e2, e3 = e[0, k], e[1, k], e[2, k], e[3, k]
                    for ff in range(f):
                        e0[ff], e1[ff], e2[ff], e3[ff] = _at6(mt[k, ff], mt[6 + k, ff], mt[12 + k, ff],
                                                              mt[18 + k, ff], mt[24 + k, ff], mt[30 + k, ff])
                for i in range(4):                  # row i of z = Aᵀ (row i of e) + bias
                    r0, r1, r2, r3 = _row_of_four(z, b, 4 * ty + i, 4 * tx, oh, ow, sink)
                    ei = e[i]
                    for ff in range(f):
                        o = _at6(ei[0, ff], ei[1, ff], ei[2, ff], ei[3, ff], ei[4, ff], ei[5, ff])
                        bf = bias[ff]
                        r0[ff], r1[ff], r2[ff], r3[ff] = o[0] + bf, o[1] + bf, o[2] + bf, o[3] + bf


@jit()
def _output_transform_backward_numba(dz, dm, dbias, e, zeros):
    """dz (N, OH, OW, F) -> dm, dM tile-major (T, 36, F) = A dz_tile Aᵀ (dz zero beyond z);
    dbias (zeros on entry) += Σ dz. e (6, 4, F); zeros (4, F), read for pixels outside z."""
    n, oh, ow, f = dz.shape
    th, tw = (oh + 3) // 4, (ow + 3) // 4
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                t = (b * th + ty) * tw + tx
                for i in range(4):                  # e[k, i] = A (row i of dz_tile), entry k
                    g0, g1, g2, g3 = _row_of_four(dz, b, 4 * ty + i, 4 * tx, oh, ow, zeros)
                    e0, e1, e2, e3, e4, e5 = e[0, i], e[1, i], e[2, i], e[3, i], e[4, i], e[5, i]
                    for ff in range(f):
                        dbias[ff] += (g0[ff] + g1[ff]) + (g2[ff] + g3[ff])
                        e0[ff], e1[ff], e2[ff], e3[ff], e4[ff], e5[ff] = _a6(g0[ff], g1[ff], g2[ff], g3[ff])
                for k in range(6):                  # column k of dM = A (e[k, 0], ..., e[k, 3])
                    ea, dt = e[k], dm[t]
                    o0, o1, o2, o3, o4, o5 = dt[k], dt[6 + k], dt[12 + k], dt[18 + k], dt[24 + k], dt[30 + k]
                    for ff in range(f):
                        o0[ff], o1[ff], o2[ff], o3[ff], o4[ff], o5[ff] = _a6(ea[0, ff], ea[1, ff], ea[2, ff], ea[3, ff])


# ---------------------------------------------------------------------------------------------
# One input channel: F(2×2, 3×3) in one loop over the filters (see the module docstring)
# ---------------------------------------------------------------------------------------------
#
# A tile on the last row or column of an odd z has pixels outside z. Rather than test every
# pixel in the loop over the filters (which would stop its vectorisation), such a tile writes
# those pixels into a scratch row that nobody reads, and reads zeros for them from another.

@jit(helper=True)
def _tile_rows(a, b, y0, x0, oh, ow, spare):
    """The four (F,) rows of a tile's 2×2 pixels in a (N, OH, OW, F), in reading order; a pixel
    outside z gets a row of ``spare`` (3, F) instead."""
    down, right = y0 + 1 < oh, x0 + 1 < ow
    r00 = a[b, y0, x0]
    r01 = a[b, y0, x0 + 1] if right else spare[0]
    r10 = a[b, y0 + 1, x0] if down else spare[1]
    r11 = a[b, y0 + 1, x0 + 1] if down and right else spare[2]
    return r00, r01, r10, r11


@jit()
def _one_channel_forward_numba(p, u, bias, v, z, sink):
    """p: the padded grey images (N, 2TH + 2, 2TW + 2); u (16, F): U without its C = 1 axis.
    Writes v (T, 16) and z (N, OH, OW, F): the transforms, products and output transform of a
    tile in one loop over the filters."""
    n, oh, ow, f = z.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    for b in range(n):
        for ty in range(th):
            q0, q1, q2, q3 = p[b, 2 * ty], p[b, 2 * ty + 1], p[b, 2 * ty + 2], p[b, 2 * ty + 3]
            for tx in range(tw):
                k, x0 = (b * th + ty) * tw + tx, 2 * tx
                d = _one_channel_tile(q0, q1, q2, q3, x0, v[k])             # .winograd's, as its kernel
                r00, r01, r10, r11 = _tile_rows(z, b, 2 * ty, x0, oh, ow, sink)
                for ff in range(f):
                    z4 = _one_channel_outputs(d, u, ff)
                    r00[ff], r01[ff], r10[ff], r11[ff] = (z4[0] + bias[ff], z4[1] + bias[ff], z4[2] + bias[ff],
                                                          z4[3] + bias[ff])


@jit(helper=True)
def _add_tile_du(du, vk, g00, g01, g10, g11, s, t):
    """du (16, F) += V ⊙ dM for one tile: vk its 16 transformed inputs, g00 ... g11 the (F,)
    rows of its 2×2 dz, dM = A dz Aᵀ: row ξ of it is a, a + c, a - c, -c with a = S[ξ] g00 +
    T[ξ] g10 and c = S[ξ] g01 + T[ξ] g11.
    One loop per row of du: here that runs faster than one loop adding into four rows at once,
    with the same numbers (docs/performance.md)."""
    f = du.shape[1]
    for xi in range(4):
        s_xi, t_xi = s[xi], t[xi]
        row, vn = du[4 * xi], vk[4 * xi]
        for ff in range(f):
            row[ff] += vn * (s_xi * g00[ff] + t_xi * g10[ff])                      # a
        row, vn = du[4 * xi + 1], vk[4 * xi + 1]
        for ff in range(f):
            a, c = s_xi * g00[ff] + t_xi * g10[ff], s_xi * g01[ff] + t_xi * g11[ff]
            row[ff] += vn * (a + c)
        row, vn = du[4 * xi + 2], vk[4 * xi + 2]
        for ff in range(f):
            a, c = s_xi * g00[ff] + t_xi * g10[ff], s_xi * g01[ff] + t_xi * g11[ff]
            row[ff] += vn * (a - c)
        row, vn = du[4 * xi + 3], vk[4 * xi + 3]
        for ff in range(f):
            row[ff] += vn * -(s_xi * g01[ff] + t_xi * g11[ff])                     # -c


@jit()
def _one_channel_kernel_backward_numba(dz, v, zeros, s, t, dbias):
    """dz (N, OH, OW, F), v (T, 16) -> dU (16, F) = Σ over tiles of V ⊙ dM, returned; dbias
    (zeros on entry) += Σ dz. dU is allocated here for the reason .winograd's one-channel dU
    kernel gives."""
    n, oh, ow, f = dz.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    du = np.zeros((16, f), dtype=dz.dtype)
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                k = (b * th + ty) * tw + tx
                g00, g01, g10, g11 = _tile_rows(dz, b, 2 * ty, 2 * tx, oh, ow, zeros)
                for ff in range(f):
                    dbias[ff] += (g00[ff] + g01[ff]) + (g10[ff] + g11[ff])
                _add_tile_du(du, v[k], g00, g01, g10, g11, s, t)
    return du


@jit()
def _one_channel_batchnorm_backward_numba(dy, argmax, y, z, v, mean, inv_std, gamma, dbeta, dgamma, m, s64, t64):
    """The one-channel dU kernel above, with dz computed tile by tile instead of read: the
    gradient of BatchNormalization, ReLU and a 2×2 max-pool of stride 2 whose windows are the
    tiles (batchnorm_relu_pool.batchnorm_input_gradient's formula):
        dz = c + e (z - mean)            every pixel of z (c = -k dbeta, e = -k inv_std dgamma)
           + km dv                       at a window's argmax, dv = dy where y > 0 (km = k M)
    with k = gamma inv_std / M per channel, computed here in z's dtype as NumPy computes it (m is
    M in that dtype). dy, argmax, y (N, PH, PW, F): the pooled outputs; a tile with no window (the
    last row or column of an odd z) reads zeros and argmax -1. s64, t64: S and T (float64; their
    0 and ±1 are exact in any dtype). Returns dU (16, F) and dbias = Σ dz (F,).

    Unlike .winograd's kernels, this one makes the arrays it writes (dU, dbias, the tile's dz, the
    coefficients), as that module's dU kernel makes its accumulator: the compiler then knows they
    overlap no input and vectorises the loops over the filters without testing at every tile.
    And it runs just after a split batch's threads meet, where NumPy calls for the coefficients
    would hold the GIL that the other thread is waiting for (docs/performance.md)."""
    n, oh, ow, f = z.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    ph, pw = dy.shape[1], dy.shape[2]
    zt = z.dtype.type
    zero, one = zt(0), zt(1)
    c, e, km = np.empty(f, dtype=z.dtype), np.empty(f, dtype=z.dtype), np.empty(f, dtype=z.dtype)
    for ff in range(f):
        k = gamma[ff] * inv_std[ff] / m
        c[ff], e[ff], km[ff] = -k * dbeta[ff], -k * inv_std[ff] * dgamma[ff], k * m
    s, t = np.empty(4, dtype=z.dtype), np.empty(4, dtype=z.dtype)
    for i in range(4):
        s[i], t[i] = zt(s64[i]), zt(t64[i])
    nothing, no_argmax = np.zeros(f, dtype=z.dtype), np.full(f, -1, dtype=np.int32)
    du = np.zeros((16, f), dtype=z.dtype)
    dbias = np.zeros(f, dtype=z.dtype)
    g = np.empty((4, f), dtype=z.dtype)                 # the tile's dz
    g00, g01, g10, g11 = g[0], g[1], g[2], g[3]
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                y0, x0 = 2 * ty, 2 * tx
                z00 = z[b, y0, x0]                  # a pixel outside z reads z00, weighted 0
                z01 = z[b, y0, x0 + 1] if x0 + 1 < ow else z00
                z10 = z[b, y0 + 1, x0] if y0 + 1 < oh else z00
                z11 = z[b, y0 + 1, x0 + 1] if x0 + 1 < ow and y0 + 1 < oh else z00
                w01 = one if x0 + 1 < ow else zero
                w10 = one if y0 + 1 < oh else zero
                w11 = w01 * w10
                window = ty < ph and tx < pw
                dyt = dy[b, ty, tx] if window else nothing
                yt = y[b, ty, tx] if window else nothing
                at = argmax[b, ty, tx] if window else no_argmax
                top = np.int32(y0 * ow + x0)
                wide = np.int32(ow)
                for ff in range(f):
                    a = km[ff] * (dyt[ff] if yt[ff] > 0 else zero)
                    off = at[ff] - top                  # 0, 1, OW or OW + 1 where a window's argmax is
                    d00 = c[ff] + e[ff] * (z00[ff] - mean[ff]) + (a if off == 0 else zero)
                    d01 = (c[ff] + e[ff] * (z01[ff] - mean[ff]) + (a if off == 1 else zero)) * w01
                    d10 = (c[ff] + e[ff] * (z10[ff] - mean[ff]) + (a if off == wide else zero)) * w10
                    d11 = (c[ff] + e[ff] * (z11[ff] - mean[ff]) + (a if off == wide + 1 else zero)) * w11
                    g00[ff], g01[ff], g10[ff], g11[ff] = d00, d01, d10, d11
                    dbias[ff] += (d00 + d01) + (d10 + d11)
                _add_tile_du(du, v[(b * th + ty) * tw + tx], g00, g01, g10, g11, s, t)
    return du, dbias


# ---------------------------------------------------------------------------------------------
# Each kernel behind its reference's contract (what the tests compare), then forward and
# backward, which the fused block calls: they run the same kernels a group of images at a time
# ---------------------------------------------------------------------------------------------

def _scratch(shape, dtype):
    return np.empty(shape, dtype=dtype)


def input_transform(x, pad, th, tw):
    """Same contract as the reference: V (36, T, C), a view of a tile-major array."""
    n, c = x.shape[0], x.shape[3]
    v = np.empty((n * th * tw, 36, c), dtype=x.dtype)
    _input_transform_numba(np.ascontiguousarray(x), pad[0], pad[2], th, tw, v, _scratch((6, 6, c), x.dtype))
    return v.transpose(1, 0, 2)


def input_transform_backward(dv, x_shape, pad, th, tw):
    """Same contract as the reference."""
    n, c = x_shape[0], x_shape[3]
    expect_shape("input_transform_backward", "dV", dv, (36, n * th * tw, c))
    dp = np.zeros((n, 4 * th + 2, 4 * tw + 2, c), dtype=dv.dtype)
    _input_transform_backward_numba(np.ascontiguousarray(dv.transpose(1, 0, 2)), th, tw, dp,
                                    _scratch((6, 6, c), dv.dtype))
    return _unpadded(dp, x_shape, pad[0], pad[2])


def output_transform(m, bias, n, oh, ow):
    """Same contract as the reference."""
    th, tw = tiles((oh, ow))
    f = bias.shape[0]
    expect_shape("output_transform", "M", m, (36, n * th * tw, f))
    z = np.empty((n, oh, ow, f), dtype=m.dtype)
    _output_transform_numba(np.ascontiguousarray(m.transpose(1, 0, 2)), bias, z, _scratch((4, 6, f), m.dtype),
                            _scratch((4, f), m.dtype))
    return z


def output_transform_backward(dz):
    """Same contract as the reference: (dM (36, T, F), a view of a tile-major array; dbias)."""
    n, oh, ow, f = dz.shape
    th, tw = tiles((oh, ow))
    dm = np.empty((n * th * tw, 36, f), dtype=dz.dtype)
    dbias = np.zeros(f, dtype=dz.dtype)
    _output_transform_backward_numba(np.ascontiguousarray(dz), dm, dbias, _scratch((6, 4, f), dz.dtype),
                                     np.zeros((4, f), dtype=dz.dtype))
    return dm.transpose(1, 0, 2), dbias


def one_channel_batchnorm_backward(dy, argmax, y, z, v, mean, inv_std, gamma, dbeta, dgamma, m):
    """(dkernel, dbias) of the one-channel path (forward ran it: V has 16 rows) followed by
    BatchNormalization (in training: the batch's mean and inv_std, the whole batch's sums dbeta,
    dgamma and count m), ReLU and a 2×2 max-pool of stride 2 without padding, whose y and argmax
    (flat in z) it takes with dy: batchnorm_relu_pool.batchnorm_input_gradient and then
    ``backward`` in one pass, without writing dz. Same contract as the reference."""
    n, oh, ow, f = z.shape
    th, tw = tiles((oh, ow), 2)
    expect_shape("one_channel_batchnorm_backward", "V", v, (16, n * th * tw, 1))
    expect_shape("one_channel_batchnorm_backward", "dy", dy, (n, oh // 2, ow // 2, f))
    for what, a in (("argmax", argmax), ("y", y)):
        expect_shape("one_channel_batchnorm_backward", what, a, dy.shape)
    for what, a in (("mean", mean), ("inv_std", inv_std), ("gamma", gamma), ("dbeta", dbeta), ("dgamma", dgamma)):
        expect_shape("one_channel_batchnorm_backward", what, a, (f,))
    du, dbias = _one_channel_batchnorm_backward_numba(np.ascontiguousarray(dy), argmax, y, np.ascontiguousarray(z),
                                                      v[:, :, 0].T, mean, inv_std, gamma, dbeta, dgamma,
                                                      z.dtype.type(m), S, T)
    return winograd.kernel_transform_backward(du[:, None]), dbias


#: forward and backward work through the batch a few images at a time, each group's tiles at most
#: this many, so that its M or dM (36 numbers per tile and filter) stays in the core's cache
#: between the kernel that writes it and the products that read it.
GROUP_TILES = 128


def _groups(n, tiles_per_image):
    """(image slice, tile slice) for each group of images, in order: as few groups as keep each
    within GROUP_TILES tiles (or one image), of equal sizes but for rounding."""
    parts = min(n, -(-n * tiles_per_image // GROUP_TILES))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [(slice(a, b), slice(a * tiles_per_image, b * tiles_per_image)) for a, b in zip(bounds, bounds[1:])]


def forward(x, kernel, bias, pad, z_hw, input_grad=True):
    """x (N, H, W, C) -> (z, V, U): z (N, OH, OW, F) = conv(x, kernel) + bias, a 3×3 stride-1
    convolution with padding ``pad`` (PT, PB, PL, PR) whose output is z_hw = (OH, OW); V and U are
    the transformed input and kernel, which backward reuses. One input channel without
    ``input_grad`` (the first convolution in training) takes the one-channel F(2×2, 3×3) kernels
    (V then has 16 rows); everything else F(4×4, 3×3) (36 rows)."""
    n, c, f = x.shape[0], x.shape[3], bias.shape[0]
    expect_shape("winograd_conv.forward", "kernel", kernel, (3, 3, c, f))
    z = np.empty((n, *z_hw, f), dtype=x.dtype)
    if one_channel(c, input_grad):
        th, tw = tiles(z_hw, 2)
        u = winograd.kernel_transform(kernel)
        v = np.empty((n * th * tw, 16), dtype=x.dtype)
        _one_channel_forward_numba(_padded(x, pad[0], pad[2], th, tw)[..., 0], np.ascontiguousarray(u[:, 0]), bias,
                                   v, z, _scratch((3, f), x.dtype))
        return z, v[:, :, None].transpose(1, 0, 2), u
    th, tw = tiles(z_hw)
    u = kernel_transform(kernel)
    x = np.ascontiguousarray(x)
    v = np.empty((n * th * tw, 36, c), dtype=x.dtype)              # V, tile-major
    groups = _groups(n, th * tw)
    m = np.empty((max(g.stop - g.start for _, g in groups), 36, f), dtype=x.dtype)   # one group's M, tile-major
    e_in, e_out, sink = _scratch((6, 6, c), x.dtype), _scratch((4, 6, f), x.dtype), _scratch((4, f), x.dtype)
    for images, group in groups:
        vg, mg = v[group], m[:group.stop - group.start]
        _input_transform_numba(x[images], pad[0], pad[2], th, tw, vg, e_in)
        np.matmul(vg.transpose(1, 0, 2), u, out=mg.transpose(1, 0, 2))
        _output_transform_numba(mg, bias, z[images], e_out, sink)
    return z, v.transpose(1, 0, 2), u


def backward(dz, v, u, x_shape, pad, input_grad=True):
    """(dkernel, dbias, dx) from dz (N, OH, OW, F), with forward's V and U; dx is None without
    ``input_grad``."""
    n, oh, ow, f = dz.shape
    c = x_shape[3]
    dz = np.ascontiguousarray(dz)
    dbias = np.zeros(f, dtype=dz.dtype)
    if v.shape[0] == 16:                                             # the one-channel kernels
        th, tw = tiles((oh, ow), 2)
        expect_shape("winograd_conv.backward", "V", v, (16, n * th * tw, 1))
        if input_grad:
            raise ValueError("winograd_conv.backward: forward ran the one-channel kernels, which compute no dx; "
                             "call forward with input_grad=True to get one.")
        du = _one_channel_kernel_backward_numba(dz, v[:, :, 0].T, np.zeros((3, f), dz.dtype), S.astype(dz.dtype),
                                                T.astype(dz.dtype), dbias)
        return winograd.kernel_transform_backward(du[:, None]), dbias, None
    th, tw = tiles((oh, ow))
    expect_shape("winograd_conv.backward", "V", v, (36, n * th * tw, c))
    expect_shape("winograd_conv.backward", "U", u, (36, c, f))
    groups = _groups(n, th * tw)
    dm = np.empty((max(g.stop - g.start for _, g in groups), 36, f), dtype=dz.dtype)  # one group's dM, tile-major
    # dU = Vᵀ dM, summed over the groups: the first group's product is written into dU, and each
    # later one into ``part``, then added
    du = np.empty((36, c, f), dtype=dz.dtype)
    part = np.empty((36, c, f), dtype=dz.dtype) if len(groups) > 1 else None
    e_out, zeros = _scratch((6, 4, f), dz.dtype), np.zeros((4, f), dtype=dz.dtype)
    if input_grad:
        dp = np.zeros((n, 4 * th + 2, 4 * tw + 2, c), dtype=dz.dtype)
        dv = np.empty((len(dm), 36, c), dtype=dz.dtype)                  # one group's dV
        # Uᵀ made contiguous: BLAS multiplies by the transposed view more slowly than the copy costs
        ut, e_in = np.ascontiguousarray(u.transpose(0, 2, 1)), _scratch((6, 6, c), dz.dtype)
    for j, (images, group) in enumerate(groups):
        k = group.stop - group.start
        dmg = dm[:k]
        _output_transform_backward_numba(dz[images], dmg, dbias, e_out, zeros)
        np.matmul(v[:, group].transpose(0, 2, 1), dmg.transpose(1, 0, 2), out=du if j == 0 else part)
        if j > 0:
            du += part
        if input_grad:
            np.matmul(dmg.transpose(1, 0, 2), ut, out=dv[:k].transpose(1, 0, 2))          # dV = dM Uᵀ
            _input_transform_backward_numba(dv[:k], th, tw, dp[images], e_in)
    dkernel = kernel_transform_backward(du)
    return dkernel, dbias, (_unpadded(dp, x_shape, pad[0], pad[2]) if input_grad else None)
