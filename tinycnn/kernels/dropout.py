"""Dropout's mask drawn and applied in one pass, from the same random numbers as the layer's.

Its reference is ``Dropout.draw_mask`` and ``Dropout.forward`` in ``layers/dropout.py``, which
draw each sample's mask from NumPy's Philox generator, keyed by (the layer's key, the batch's
number), and apply it, in NumPy lines a learner can read:

    stream = Philox(key=(key, batch));  stream.advance(first_sample * B)
    u      = stream.random_raw(N * 4B), as (N, 4B), the first U of each row      B = ceil(U / 4)
    keep   = u >= ceil(rate * 2^64)                    u / 2^64 >= rate
    scale  = keep * 1 / (1 - rate),   y = x * scale    (scale is kept for the backward pass)

That is five passes over memory, and NumPy's generator hands its numbers out one call of a C
function at a time. ``dropout_forward`` computes the same Philox numbers itself and writes y and
scale in the loop that makes them: the masks, y and scale are the layer's bit for bit.

Philox4x64-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; NumPy's Philox
is this one). A counter c = (c0, c1, c2, c3) and a key k = (k0, k1), all 64-bit, give four 64-bit
numbers after ten rounds:

    round                (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2     the 128-bit products' halves
                         c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    between two rounds   k0 += W0,  k1 += W1                              (mod 2^64)

NumPy's stream adds one to the counter before each use: counter value j + 1 gives the numbers
4j ... 4j + 3, and ``advance(d)`` adds d. So sample i of the batch (``first_sample + i``) reads
counter values (first_sample + i) * B + 1 ... (first_sample + i) * B + B, with c1 = c2 = c3 = 0.

Numba has no 128-bit integer: ``_mulhi`` builds the high half of a 64 × 64-bit product from four
32 × 32-bit products (the low half is the wrapped 64-bit product). The kernel runs the ten rounds
over all B counters of a sample side by side, one array per word, so that the compiler vectorises
each round across the counters, then lays the four words out in the stream's order.
``tests/test_dropout_kernel.py`` proves its masks, y and scale equal to the layer's, bit for bit.
"""

import math

import numpy as np

from .jit import jit

M0, M1 = np.uint64(0xD2E7470EE14C6C93), np.uint64(0xCA5A826395121157)     # Philox4x64's multipliers
W0, W1 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBB67AE8584CAA73B)     # and its key increments
ROUNDS = 10
_LOW, _32 = np.uint64(0xFFFFFFFF), np.uint64(32)


def threshold(rate):
    """The 64-bit number u is kept at or above: ceil(rate * 2^64), so that u / 2^64 >= rate."""
    return np.uint64(math.ceil(rate * 2 ** 64))


@jit(helper=True, inline=True)        # a call left in the rounds' loop would stop its vectorisation
def _mulhi(a, b):
    """The high 64 bits of the 128-bit product a * b, from 32-bit halves."""
    a0, a1, b0, b1 = a & _LOW, a >> _32, b & _LOW, b >> _32
    low = a0 * b0
    middle = a1 * b0 + (low >> _32)
    carry = (middle & _LOW) + a0 * b1
    return a1 * b1 + (middle >> _32) + (carry >> _32)


@jit()
def _dropout_forward_numba(x, key, batch, first, keep_from, keep_scale, y, scale):
    """x, y, scale (N, U). The counters' four words are arrays made here: arrays passed in might
    overlap, as far as the compiler knows, and it would not vectorise the rounds."""
    n, units = x.shape
    blocks = (units + 3) // 4
    c0, c1, c2, c3 = np.empty(blocks, np.uint64), np.empty(blocks, np.uint64), np.empty(blocks, np.uint64), \
        np.empty(blocks, np.uint64)
    u = np.empty(4 * blocks, np.uint64)
    zero = x.dtype.type(0)
    for i in range(n):
        start = np.uint64(first + i) * np.uint64(blocks) + np.uint64(1)
        for b in range(blocks):
            c0[b], c1[b], c2[b], c3[b] = start + np.uint64(b), np.uint64(0), np.uint64(0), np.uint64(0)
        k0, k1 = key, batch
        for r in range(ROUNDS):
            if r > 0:
                k0, k1 = k0 + W0, k1 + W1
            for b in range(blocks):                 # one round of every counter: vectorised
                a, d = c0[b], c2[b]
                c0[b], c1[b], c2[b], c3[b] = _mulhi(M1, d) ^ c1[b] ^ k0, M1 * d, _mulhi(M0, a) ^ c3[b] ^ k1, M0 * a
        for b in range(blocks):                     # the sample's numbers in the stream's order
            u[4 * b], u[4 * b + 1], u[4 * b + 2], u[4 * b + 3] = c0[b], c1[b], c2[b], c3[b]
        xi, yi, si = x[i], y[i], scale[i]
        for j in range(units):
            s = keep_scale if u[j] >= keep_from else zero
            si[j] = s
            yi[j] = xi[j] * s


def dropout_forward(x, key, batch, first_sample, rate):
    """x (N, ...) -> (y, scale), both x's shape and dtype: what Dropout's training forward
    computes for samples first_sample ... first_sample + N - 1 of batch ``batch`` (NumPy arrays).

    The counters only ever use their first word, c0: a carry into c1 would need (first_sample +
    N) * B >= 2^64, more numbers than any array holds."""
    n = x.shape[0]
    units = math.prod(x.shape[1:])
    flat = np.ascontiguousarray(x).reshape(n, units)
    y, scale = np.empty_like(flat), np.empty_like(flat)
    _dropout_forward_numba(flat, np.uint64(key), np.uint64(batch), first_sample, threshold(rate),
                           x.dtype.type(1.0 / (1.0 - rate)), y, scale)
    return y.reshape(x.shape), scale.reshape(x.shape)
