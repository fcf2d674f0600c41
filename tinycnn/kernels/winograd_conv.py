"""Winograd's F(2×2, 3×3) as a plain 3×3 convolution: z written whole, for a BatchNormalization.

:mod:`.winograd` computes a 3×3 convolution tile by tile, 2×2 output pixels from each 4×4 input
tile with 16 multiplications instead of 36, and fuses the last step with the max-pool that
follows, so that z is never stored. That needs each tile to be a pool window. When a
BatchNormalization sits between the convolution and its ReLU (``--arch bn-dropout``), the batch's
mean and variance are needed before anything can be pooled, and they are taken over *every* pixel
of z, the last row and column included when the size is odd. So here the same tiles compute z
itself, all of it: ceil(OH/2) × ceil(OW/2) tiles, the input padded with zeros under the last
ones, and a tile's pixels beyond z (the odd row or column) dropped.

The steps are :mod:`.winograd`'s (its docstring derives them), with a different last step:

    V[ξν] = Bᵀ d B        every tile and channel         winograd.input_transform    (16, T, C)
    U[ξν] = G g Gᵀ        every channel and filter       winograd.kernel_transform   (16, C, F)
    M[ξν] = V[ξν] @ U[ξν]                                16 matrix products          (16, T, F)
    z     = Aᵀ M A + bias, cropped to (OH, OW)           output_transform (here)     (N, OH, OW, F)

Backward, given dz (N, OH, OW, F), dense (BatchNormalization's backward gives every pixel a
gradient):

    dM[ξν]  = A dz_tile Aᵀ      dz_tile zero beyond z     output_transform_backward (here), and
    dbias   = Σ dz                                       in the same pass
    dU[ξν]  = V[ξν]ᵀ @ dM[ξν],  dkernel = Gᵀ dU G        winograd.kernel_transform_backward
    dV[ξν]  = dM[ξν] @ U[ξν]ᵀ,  dx = B dV Bᵀ per tile    winograd.input_transform_backward

A has two rows, (1, 1, 1, 0) and (0, 1, -1, -1) as columns of Aᵀ; so for a 2×2 dz_tile
(g00 g01 / g10 g11), row ξ of dM is (a, a + c, a - c, -c) with a = S[ξ] g00 + T[ξ] g10,
c = S[ξ] g01 + T[ξ] g11, where S = (1, 1, 1, 0) and T = (0, 1, -1, -1) are Aᵀ's two rows.

With one input channel (grey images, the first convolution) every M[ξν] is an outer product,
which BLAS does poorly: two kernels do a tile at a time in one loop over the filters instead, as
:mod:`.winograd`'s one-channel kernels do.

Each kernel has a NumPy ``*_reference``; tests/test_winograd_conv.py checks every kernel against
it, and ``forward`` and ``backward`` against im2col's convolution and its backward.
"""

import numpy as np

from .geometry import expect_shape
from .jit import jit
from .winograd import (AT, MIN_CHANNELS, _input_transform_backward_numba, _input_transform_numba, _padded,
                       _tile_at_m_a, _tile_bt_d_b, _tile_major, _unpadded, kernel_transform,
                       kernel_transform_backward)

S = np.array([1, 1, 1, 0])       # Aᵀ's first row
T = np.array([0, 1, -1, -1])     # Aᵀ's second row


def applies(channels, kernel_size, strides):
    """True for a 3×3 stride-1 convolution (any padding) with one input channel or at least
    winograd.MIN_CHANNELS (below that, im2col's one matrix product is faster)."""
    return ((channels == 1 or channels >= MIN_CHANNELS) and tuple(kernel_size) == (3, 3)
            and tuple(strides) == (1, 1))


def tiles(z_hw):
    """(TH, TW): the tiles that cover z, the last row or column of them half outside when odd."""
    return -(-z_hw[0] // 2), -(-z_hw[1] // 2)


# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------

def output_transform_reference(m, bias, n, oh, ow):
    """M (16, T, F) -> z (N, OH, OW, F) = Aᵀ M A + bias per tile, cropped to (OH, OW)."""
    th, tw = tiles((oh, ow))
    at = AT.astype(m.dtype)
    z = np.einsum("ia,abnhwf,jb->nhiwjf", at, m.reshape(4, 4, n, th, tw, -1), at).reshape(n, 2 * th, 2 * tw, -1)
    return z[:, :oh, :ow] + bias


def output_transform_backward_reference(dz):
    """dz (N, OH, OW, F) -> (dM (16, T, F) = A dz_tile Aᵀ per tile, dz zero beyond z; dbias = Σ dz)."""
    n, oh, ow, f = dz.shape
    th, tw = tiles((oh, ow))
    padded = np.zeros((n, 2 * th, 2 * tw, f), dtype=dz.dtype)
    padded[:, :oh, :ow] = dz
    at = AT.astype(dz.dtype)
    dm = np.einsum("ia,nhiwjf,jb->abnhwf", at, padded.reshape(n, th, 2, tw, 2, f), at)
    return dm.reshape(16, -1, f), dz.sum(axis=(0, 1, 2))


# ---------------------------------------------------------------------------------------------
# Numba kernels (tile-major (T, 16, K) storage, as in .winograd, for the same reason)
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
def _output_transform_numba(m, bias, z, sink):
    """M tile-major (T, 16, F) -> z (N, OH, OW, F) = Aᵀ M A + bias; sink (3, F): scratch."""
    n, oh, ow, f = z.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                mt = m[(b * th + ty) * tw + tx]
                r00, r01, r10, r11 = _tile_rows(z, b, 2 * ty, 2 * tx, oh, ow, sink)
                for ff in range(f):
                    z4 = _tile_at_m_a(mt[0, ff], mt[1, ff], mt[2, ff], mt[3, ff], mt[4, ff], mt[5, ff],
                                      mt[6, ff], mt[7, ff], mt[8, ff], mt[9, ff], mt[10, ff], mt[11, ff],
                                      mt[12, ff], mt[13, ff], mt[14, ff], mt[15, ff])
                    r00[ff], r01[ff], r10[ff], r11[ff] = (z4[0] + bias[ff], z4[1] + bias[ff], z4[2] + bias[ff],
                                                          z4[3] + bias[ff])


@jit(helper=True)
def _dm_row(g00, g01, g10, g11, s, t):
    """Row ξ of A dz_tile Aᵀ (s = S[ξ], t = T[ξ]): 4 numbers."""
    a = s * g00 + t * g10
    c = s * g01 + t * g11
    return a, a + c, a - c, -c


@jit()
def _output_transform_backward_numba(dz, zeros, s, t, dm, dbias):
    """dz (N, OH, OW, F) -> dm, dM tile-major (T, 16, F); dbias (zeros on entry) += Σ dz.
    zeros (3, F): the rows read for pixels outside z."""
    n, oh, ow, f = dz.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    for b in range(n):
        for ty in range(th):
            for tx in range(tw):
                k = (b * th + ty) * tw + tx
                g00, g01, g10, g11 = _tile_rows(dz, b, 2 * ty, 2 * tx, oh, ow, zeros)
                for ff in range(f):
                    dbias[ff] += (g00[ff] + g01[ff]) + (g10[ff] + g11[ff])
                for xi in range(4):             # four rows of dM at a time (see .winograd)
                    s_xi, t_xi = s[xi], t[xi]
                    row0, row1, row2, row3 = dm[k, 4 * xi], dm[k, 4 * xi + 1], dm[k, 4 * xi + 2], dm[k, 4 * xi + 3]
                    for ff in range(f):
                        row0[ff], row1[ff], row2[ff], row3[ff] = _dm_row(g00[ff], g01[ff], g10[ff], g11[ff], s_xi, t_xi)


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
                d = _tile_bt_d_b(q0[x0], q0[x0 + 1], q0[x0 + 2], q0[x0 + 3], q1[x0], q1[x0 + 1], q1[x0 + 2], q1[x0 + 3],
                                 q2[x0], q2[x0 + 1], q2[x0 + 2], q2[x0 + 3], q3[x0], q3[x0 + 1], q3[x0 + 2], q3[x0 + 3])
                v[k, 0], v[k, 1], v[k, 2], v[k, 3], v[k, 4], v[k, 5], v[k, 6], v[k, 7] = d[:8]
                v[k, 8], v[k, 9], v[k, 10], v[k, 11], v[k, 12], v[k, 13], v[k, 14], v[k, 15] = d[8:]
                r00, r01, r10, r11 = _tile_rows(z, b, 2 * ty, x0, oh, ow, sink)
                for ff in range(f):
                    z4 = _tile_at_m_a(d[0] * u[0, ff], d[1] * u[1, ff], d[2] * u[2, ff], d[3] * u[3, ff],
                                      d[4] * u[4, ff], d[5] * u[5, ff], d[6] * u[6, ff], d[7] * u[7, ff],
                                      d[8] * u[8, ff], d[9] * u[9, ff], d[10] * u[10, ff], d[11] * u[11, ff],
                                      d[12] * u[12, ff], d[13] * u[13, ff], d[14] * u[14, ff], d[15] * u[15, ff])
                    r00[ff], r01[ff], r10[ff], r11[ff] = (z4[0] + bias[ff], z4[1] + bias[ff], z4[2] + bias[ff],
                                                          z4[3] + bias[ff])


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
                for xi in range(4):             # dU[4ξ + ν] += V[4ξ + ν] * dM[4ξ + ν]
                    s_xi, t_xi = s[xi], t[xi]
                    v0, v1, v2, v3 = v[k, 4 * xi], v[k, 4 * xi + 1], v[k, 4 * xi + 2], v[k, 4 * xi + 3]
                    row0, row1, row2, row3 = du[4 * xi], du[4 * xi + 1], du[4 * xi + 2], du[4 * xi + 3]
                    for ff in range(f):
                        d0, d1, d2, d3 = _dm_row(g00[ff], g01[ff], g10[ff], g11[ff], s_xi, t_xi)
                        row0[ff] += v0 * d0
                        row1[ff] += v1 * d1
                        row2[ff] += v2 * d2
                        row3[ff] += v3 * d3
    return du


# ---------------------------------------------------------------------------------------------
# What the fused block calls (same contracts as the references)
# ---------------------------------------------------------------------------------------------

def output_transform(m, bias, n, oh, ow):
    """Same contract as the reference."""
    th, tw = tiles((oh, ow))
    f = bias.shape[0]
    expect_shape("output_transform", "M", m, (16, n * th * tw, f))
    z = np.empty((n, oh, ow, f), dtype=m.dtype)
    _output_transform_numba(_tile_major(m), bias, z, np.empty((3, f), dtype=m.dtype))
    return z


def output_transform_backward(dz):
    """Same contract as the reference: (dM (16, T, F), a view of a tile-major array; dbias)."""
    n, oh, ow, f = dz.shape
    th, tw = tiles((oh, ow))
    dm = np.empty((n * th * tw, 16, f), dtype=dz.dtype)
    dbias = np.zeros(f, dtype=dz.dtype)
    _output_transform_backward_numba(np.ascontiguousarray(dz), np.zeros((3, f), dtype=dz.dtype), *_st(dz.dtype),
                                     dm, dbias)
    return dm.transpose(1, 0, 2), dbias


def _st(dtype):
    return S.astype(dtype), T.astype(dtype)


#: The general path works through the batch a few images at a time, each group's tiles at most
#: this many, so that its M or dM (16 numbers per tile and filter) stays in the core's cache
#: between the kernel that writes it and the products that read it.
GROUP_TILES = 128


def _groups(n, tiles_per_image):
    """(image slice, tile slice) for each group of images, in order."""
    g = max(1, GROUP_TILES // tiles_per_image)
    return [(slice(b, min(n, b + g)), slice(b * tiles_per_image, min(n, b + g) * tiles_per_image))
            for b in range(0, n, g)]


def forward(x, kernel, bias, pad, z_hw):
    """x (N, H, W, C) -> (z, V, U): z (N, OH, OW, F) = conv(x, kernel) + bias, a 3×3 stride-1
    convolution with padding ``pad`` (PT, PB, PL, PR) whose output is z_hw = (OH, OW); V and U are
    the transformed input and kernel, which backward reuses."""
    th, tw = tiles(z_hw)
    n, c, f = x.shape[0], x.shape[3], bias.shape[0]
    expect_shape("winograd_conv.forward", "kernel", kernel, (3, 3, c, f))
    u = kernel_transform(kernel)
    p = _padded(x, pad[0], pad[2], th, tw)
    z = np.empty((n, *z_hw, f), dtype=x.dtype)
    sink = np.empty((3, f), dtype=x.dtype)
    if c == 1:
        v = np.empty((n * th * tw, 16), dtype=x.dtype)
        _one_channel_forward_numba(p[..., 0], np.ascontiguousarray(u[:, 0]), bias, v, z, sink)
        return z, v[:, :, None].transpose(1, 0, 2), u
    v = np.empty((n * th * tw, 16, c), dtype=x.dtype)              # V, tile-major
    m = np.empty((min(n * th * tw, max(th * tw, GROUP_TILES)), 16, f), dtype=x.dtype)   # one group's M
    e = np.empty((4, 4, c), dtype=x.dtype)
    for images, group in _groups(n, th * tw):
        vg, mg = v[group], m[:group.stop - group.start]
        _input_transform_numba(p[images], th, tw, vg, e)
        np.matmul(vg.transpose(1, 0, 2), u, out=mg.transpose(1, 0, 2))
        _output_transform_numba(mg, bias, z[images], sink)
    return z, v.transpose(1, 0, 2), u


def backward(dz, v, u, x_shape, pad, input_grad=True):
    """(dkernel, dbias, dx) from dz (N, OH, OW, F); dx is None without ``input_grad``. One input
    channel without dx (the first convolution in training) takes the one-channel dU kernel."""
    n, oh, ow, f = dz.shape
    th, tw = tiles((oh, ow))
    c = x_shape[3]
    expect_shape("winograd_conv.backward", "V", v, (16, n * th * tw, c))
    expect_shape("winograd_conv.backward", "U", u, (16, c, f))
    dz = np.ascontiguousarray(dz)
    dbias, zeros = np.zeros(f, dtype=dz.dtype), np.zeros((3, f), dtype=dz.dtype)
    if c == 1 and not input_grad:
        du = _one_channel_kernel_backward_numba(dz, v[:, :, 0].T, zeros, *_st(dz.dtype), dbias)
        return kernel_transform_backward(du[:, None]), dbias, None
    rows = min(n * th * tw, max(th * tw, GROUP_TILES))
    dm = np.empty((rows, 16, f), dtype=dz.dtype)                   # one group's dM, tile-major
    du, part = np.zeros((16, c, f), dtype=dz.dtype), np.empty((16, c, f), dtype=dz.dtype)
    if input_grad:
        dp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c), dtype=dz.dtype)
        dv, ut, e = np.empty((rows, 16, c), dtype=dz.dtype), np.ascontiguousarray(u.transpose(0, 2, 1)), \
            np.empty((4, 4, c), dtype=dz.dtype)
    for images, group in _groups(n, th * tw):
        k = group.stop - group.start
        dmg = dm[:k]
        _output_transform_backward_numba(dz[images], zeros, *_st(dz.dtype), dmg, dbias)
        np.matmul(v[:, group].transpose(0, 2, 1), dmg.transpose(1, 0, 2), out=part)     # dU += Vᵀ dM
        du += part
        if input_grad:
            np.matmul(dmg.transpose(1, 0, 2), ut, out=dv[:k].transpose(1, 0, 2))          # dV = dM Uᵀ
            _input_transform_backward_numba(dv[:k], th, tw, dp[images], e)
    dkernel = kernel_transform_backward(du)
    return dkernel, dbias, (_unpadded(dp, x_shape, pad[0], pad[2]) if input_grad else None)
