"""im2col and col2im: turning a convolution into one matrix product.

Notation (channels-last, as everywhere in tinycnn)
--------------------------------------------------
    N        batch size
    H, W     input height and width
    C        input channels
    KH, KW   kernel height and width
    SH, SW   strides
    PT, PB   zero padding added at the top and bottom
    PL, PR   zero padding added at the left and right
    OH, OW   output height and width:
                 OH = (H + PT + PB - KH) // SH + 1
                 OW = (W + PL + PR - KW) // SW + 1

What im2col does
----------------
A convolution slides a KH×KW window over the image. im2col copies every window into one row
of a matrix ``cols`` of shape (N*OH*OW, KH*KW*C): one row per output pixel, and the columns run
over (kh, kw, c) in that order. Then the whole convolution is a single matrix product::

    out = cols @ kernel.reshape(KH*KW*C, F)        # (N*OH*OW, F) == (N, OH, OW, F), NHWC

Worked example: one 4×4 image with one channel, a 3×3 kernel, stride 1, no padding, so
OH = OW = (4 - 3) // 1 + 1 = 2 and ``cols`` has 2*2 = 4 rows and 3*3 = 9 columns::

    image           cols            (kh,kw): 00 01 02 10 11 12 20 21 22
    a b c d         row 0 (oh=0, ow=0):       a  b  c  e  f  g  i  j  k
    e f g h         row 1 (oh=0, ow=1):       b  c  d  f  g  h  j  k  l
    i j k l         row 2 (oh=1, ow=0):       e  f  g  i  j  k  m  n  o
    m n o p         row 3 (oh=1, ow=1):       f  g  h  j  k  l  n  o  p

Pixel ``f`` appears in four rows (every window that covers it); corner ``a`` in one. With C
channels each entry becomes C adjacent columns, which is why the column order is (kh, kw, c).

What col2im does
----------------
col2im is the adjoint (transpose) of im2col, used by the backward pass: given d(loss)/d(cols), it
adds every entry back onto the pixel it was copied from. Pixel ``f`` above receives the sum of four
entries. The fast version is a *gather*: each input pixel loops over the (kh, kw) that could have
read it, sums those entries in a small buffer and writes its result once. Every output element is
written by exactly one loop iteration, so the loop maps onto parallel threads with no races and no
atomic additions (the GPU kernel does exactly that). Which output position read pixel p at
offset i solves o*S + i - P = p; that division is done once per call, into a lookup table.

Each operation comes twice: a short NumPy version (``*_reference``) to read, and a Numba version
that runs. Tests prove that they agree.

On the GPU (``kernels/cuda.py``)
--------------------------------
The same index arithmetic, with the loop nest replaced by one CUDA thread per element::

    Numba, on the CPU: a loop nest              CUDA, on the GPU: one thread per element
    ----------------------------------------    ------------------------------------------------
    im2col  for b, y, xo, i, j, ch:             thread t of N*OH*OW*KH*KW*C; % and / turn t
              h = y*SH + i - PT                 into (b, y, xo, i, j, ch), innermost first;
              w = xo*SW + j - PL                h = y*SH + i - PT;  w = xo*SW + j - PL;
              cols[...] = x[b, h, w, ch]        cols[t] = inside ? x[b, h, w, ch] : 0;
                          (0 outside)
    col2im  for b, h, w:  (one input pixel)     thread t of N*H*W*C is input pixel (b, h, w, ch);
              for i, j:   y, xo that read it    for i, j: y = (h + PT - i) / SH if it divides
                acc += cols[b, y, xo, i, j]       and is in range, likewise xo; acc += cols[...]
              dx[b, h, w] = acc                 dx[t] = acc;   (a gather: no atomics)
"""

import numpy as np

from ..backend import get_array_module
from .geometry import expect_shape, output_size
from .jit import jit


# ---------------------------------------------------------------------------------------------
# NumPy references: read these first.
# ---------------------------------------------------------------------------------------------

def im2col_reference(x, kh, kw, stride, pad):
    """(N, H, W, C) -> cols (N*OH*OW, KH*KW*C), the readable way.

    ``stride`` is (SH, SW), ``pad`` is (PT, PB, PL, PR). For each kernel offset (i, j), the pixels
    every window reads at that offset form a strided slice of the padded image.
    """
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x.shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
    return cols.reshape(n * oh * ow, kh * kw * c)


def col2im_reference(cols, x_shape, kh, kw, stride, pad):
    """cols (N*OH*OW, KH*KW*C) -> (N, H, W, C): add each entry back where im2col copied it from."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x_shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    cols = cols.reshape(n, oh, ow, kh, kw, c)
    dpadded = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dpadded[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] += cols[:, :, :, i, j, :]
    return dpadded[:, pt:pt + h, pl:pl + w, :]


# ---------------------------------------------------------------------------------------------
# Numba kernels: the same index arithmetic, written as loops.
#   input row    h = oh*SH + kh - PT     (zero when outside the image)
#   input column w = ow*SW + kw - PL
# ---------------------------------------------------------------------------------------------

@jit()
def _im2col_numba(x, kh, kw, sh, sw, pt, pl, oh, ow):
    n, h, w, c = x.shape
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for b in range(n):
        for y in range(oh):
            h0 = y * sh - pt                               # top input row of the window
            for xo in range(ow):
                w0 = xo * sw - pl                          # left input column of the window
                if h0 >= 0 and h0 + kh <= h and w0 >= 0 and w0 + kw <= w:
                    for i in range(kh):                    # inside the image: no checks needed
                        for j in range(kw):
                            for ch in range(c):
                                cols[b, y, xo, i, j, ch] = x[b, h0 + i, w0 + j, ch]
                    continue
                for i in range(kh):                        # at an edge: padding reads as zero
                    hi = h0 + i
                    for j in range(kw):
                        wi = w0 + j
                        inside = 0 <= hi < h and 0 <= wi < w
                        for ch in range(c):
                            cols[b, y, xo, i, j, ch] = x[b, hi, wi, ch] if inside else 0
    return cols.reshape(n * oh * ow, kh * kw * c)


@jit(helper=True)
def _source_table(size, k, stride, pad, out):
    """table[p, i] = the output position o whose window put input p at offset i (o*stride + i -
    pad == p), or -1 if none: col2im's index arithmetic, worked out once per call."""
    table = np.full((size, k), -1, dtype=np.int64)
    for o in range(out):
        for i in range(k):
            p = o * stride + i - pad
            if 0 <= p < size:
                table[p, i] = o
    return table


@jit()
def _col2im_numba(cols, n, h, w, c, kh, kw, sh, sw, pt, pl, oh, ow):
    cols = cols.reshape(n, oh, ow, kh, kw, c)
    rows = _source_table(h, kh, sh, pt, oh)        # rows[hi, i] = y, or -1
    cols_of = _source_table(w, kw, sw, pl, ow)     # cols_of[wi, j] = xo, or -1
    dx = np.empty((n, h, w, c), dtype=cols.dtype)
    for b in range(n):                      # each input pixel gathers its own sum: no races
        acc = np.empty(c, dtype=cols.dtype)
        for hi in range(h):
            for wi in range(w):
                acc[:] = 0
                for i in range(kh):
                    y = rows[hi, i]
                    if y < 0:
                        continue
                    for j in range(kw):
                        xo = cols_of[wi, j]
                        if xo < 0:
                            continue
                        for ch in range(c):
                            acc[ch] += cols[b, y, xo, i, j, ch]
                dx[b, hi, wi, :] = acc
    return dx


# ---------------------------------------------------------------------------------------------
# What the layers call: the fast kernel for the array's device.
# ---------------------------------------------------------------------------------------------

def im2col(x, kh, kw, stride, pad):
    """(N, H, W, C) -> cols (N*OH*OW, KH*KW*C). Same contract as :func:`im2col_reference`."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x.shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    if get_array_module(x) is not np:
        from . import cuda
        return cuda.im2col(x, kh, kw, stride, pad)
    return _im2col_numba(np.ascontiguousarray(x), kh, kw, sh, sw, pt, pl, oh, ow)


def col2im(cols, x_shape, kh, kw, stride, pad):
    """cols (N*OH*OW, KH*KW*C) -> (N, H, W, C). Same contract as :func:`col2im_reference`."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = x_shape
    oh, ow = output_size(h, kh, sh, pt, pb), output_size(w, kw, sw, pl, pr)
    expect_shape("col2im", "cols", cols, (n * oh * ow, kh * kw * c))
    if get_array_module(cols) is not np:
        from . import cuda
        return cuda.col2im(cols, x_shape, kh, kw, stride, pad)
    return _col2im_numba(np.ascontiguousarray(cols), n, h, w, c, kh, kw, sh, sw, pt, pl, oh, ow)
