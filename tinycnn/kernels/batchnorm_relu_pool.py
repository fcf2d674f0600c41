"""BatchNormalization + ReLU + max-pool in few passes: what follows a convolution in bn-dropout.

PyTorch's MNIST example (``--arch bn-dropout``) writes Conv2D → BatchNormalization → ReLU →
MaxPool2D. Layer by layer, the three after the convolution make about a dozen passes over its
output z (N, H, W, C), the largest array of the step, each doing one addition or multiplication
per number: the mean, the centred values, their squares, the variance, x̂, gamma * x̂ + beta,
ReLU, pool, and as many again backward. These kernels do the same arithmetic in four passes over
z forward and one backward, each a loop over z that Numba compiles.

Notation: as in :mod:`.pooling` (N, H, W, C the convolution's output; PH, PW, SH, SW, PT, PL the
pool's window, strides and padding; OH, OW the pooled size). M = N*H*W values per channel;
mean, inv_std = 1 / sqrt(var + eps), gamma and beta are (C,).

Forward, given the statistics (the batch's in training, the moving averages in inference)
    x̂         = (z - mean) * inv_std
    v         = gamma * x̂ + beta                              BatchNormalization, as it computes it
    y, argmax = maxpool(relu(v))                              one pass, as bias_relu_pool's kernel
    x̂max      = x̂ at each window's argmax                     (N, OH, OW, C), kept for backward
The batch's statistics come from one pass over z, both sums in float64:
    s1, s2    = Σ z, Σ z²  per channel                        (channel_moments)
    mean      = s1 / M,  var = s2 / M - mean²                 (batch_statistics, with inv_std =
                                                              1 / sqrt(var + eps) and the moving
                                                              averages: a few numbers per channel,
                                                              in one call after the meeting)
The layer (layers/normalization.py) takes the variance in a second pass, Σ (z - mean)², which
never subtracts two large numbers. Here a batch split over threads meets once to add both sums
instead of twice, and the subtraction costs digits: a float64 sum of M numbers is good to about
M · 10⁻¹⁶ of itself at worst, so with M up to 10⁵ the variance keeps float32's precision while
mean² / var stays below about 10⁴ (the mean within about a hundred standard deviations). A
float64 model loses as many digits as mean² / var has.

Backward, given dL/dy (N, OH, OW, C). Write dv = dL/dv: zero except at each window's argmax where
y > 0, where it is dy (ReLU and max-pool's backward, as in bias_relu_pool). BatchNormalization's
backward (layers/normalization.py) needs two sums of dv, which only the argmax pixels add to, so
they are sums over the pooled outputs, with the x̂ the forward kept there:
    dbeta     = Σ dv,   dgamma = Σ dv * x̂                     (batchnorm_gradient_sums: over the
                = Σ dy (y > 0),  Σ dy (y > 0) x̂max            pooled outputs, reading no z)
    dz        = gamma * inv_std / M * (M dv - dbeta - x̂ * dgamma)     (batchnorm_input_gradient)
In inference mean and var are constants: dz = dv * gamma * inv_std.

The sums are separate functions because a batch split over threads adds the shares' sums
between them (``tinycnn/parallel.py``): the statistics of the whole batch, then its dbeta and
dgamma. ``*_reference`` below are the layers' own operations one after another, and the tests
compare the kernels with them.
"""

import numpy as np

from .geometry import expect_shape, output_size
from .jit import jit
from .pooling import maxpool_backward_reference, maxpool_forward_reference


# ---------------------------------------------------------------------------------------------
# NumPy references: the layers' own operations, one after another.
# ---------------------------------------------------------------------------------------------

def channel_moments_reference(z):
    """z (N, H, W, C) -> (2, C) float64: Σ z and Σ z² over N, H, W."""
    z64 = z.astype(np.float64)
    return np.stack([z64.sum(axis=(0, 1, 2)), (z64 * z64).sum(axis=(0, 1, 2))])


def batch_statistics_reference(total, m, epsilon, momentum, moving_mean, moving_var, update):
    """total (2, C) float64, the whole batch's Σ z and Σ z² over m values per channel -> (mean,
    inv_std), each (C,) in the moving averages' dtype; when ``update``, the moving averages follow
    them in place (BatchNormalization's momentum)."""
    s1, s2 = total / m
    mean, var = s1.astype(moving_mean.dtype), np.maximum(s2 - s1 * s1, 0).astype(moving_mean.dtype)
    if update:
        moving_mean[...] = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var[...] = momentum * moving_var + (1.0 - momentum) * var
    return mean, 1.0 / np.sqrt(var + epsilon)


def batchnorm_relu_maxpool_forward_reference(z, mean, inv_std, gamma, beta, ph, pw, stride, pad):
    """z (N, H, W, C) -> y, argmax, x̂max (N, OH, OW, C), as BatchNormalization, ReLU and MaxPool2D;
    x̂max is x̂ = (z - mean) * inv_std at each window's argmax (flat in z's H*W, as argmax is)."""
    xhat = (z - mean) * inv_std
    v = gamma * xhat + beta                         # BatchNormalization, with these statistics
    y, argmax = maxpool_forward_reference(np.maximum(v, 0), ph, pw, stride, pad)
    n, h, w, c = z.shape
    xhat_max = np.take_along_axis(xhat.reshape(n, h * w, c), argmax.reshape(n, -1, c), axis=1)
    return y, argmax, xhat_max.reshape(y.shape)


def _dv_reference(dy, argmax, y, z_shape):
    return maxpool_backward_reference(dy * (y > 0), argmax, z_shape)    # max-pool, then ReLU


def batchnorm_gradient_sums_reference(dy, y, xhat_max):
    """(dbeta, dgamma), each (C,): Σ dv and Σ dv * x̂ over N, H, W, which only the argmax pixels
    add to: Σ dy (y > 0) and Σ dy (y > 0) x̂max over the pooled outputs (the module docstring)."""
    dv = dy * (y > 0)
    return dv.sum(axis=(0, 1, 2)), (dv * xhat_max).sum(axis=(0, 1, 2))


def batchnorm_input_gradient_reference(dy, argmax, y, z, mean, inv_std, gamma, dbeta, dgamma, m):
    """dz (N, H, W, C) in training, with the sums dbeta, dgamma and the count m of the whole batch."""
    dv = _dv_reference(dy, argmax, y, z.shape)
    return (gamma * inv_std / m) * (m * dv - dbeta - (z - mean) * inv_std * dgamma)


def batchnorm_inference_gradient_reference(dy, argmax, y, z_shape, gamma, inv_std):
    """dz (N, H, W, C) when the statistics are constants (the moving averages)."""
    return _dv_reference(dy, argmax, y, z_shape) * (gamma * inv_std)


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@jit()
def _channel_moments_numba(z2):
    # The sums are arrays made here, not passed in: the compiler then knows that they overlap
    # nothing, and vectorises the loop over the channels without a test at every pixel.
    m, c = z2.shape
    s1, s2 = np.zeros(c, dtype=np.float64), np.zeros(c, dtype=np.float64)
    for i in range(m):
        row = z2[i]
        for ch in range(c):
            v = np.float64(row[ch])
            s1[ch] += v
            s2[ch] += v * v
    out = np.empty((2, c), dtype=np.float64)
    out[0], out[1] = s1, s2
    return out


@jit()
def _batch_statistics_numba(total, m, epsilon, momentum, rest, moving_mean, moving_var, update, mean, inv_std):
    # NumPy's arithmetic, number by number: float64 sums and divisions, rounded to the model's
    # dtype t, then t's arithmetic with the Python floats rounded to t (rest = 1.0 - momentum,
    # taken in Python as the reference takes it); np.maximum(d, 0) keeps a NaN
    t = mean.dtype.type
    one, eps, mom, rst = t(1.0), t(epsilon), t(momentum), t(rest)
    for ch in range(total.shape[1]):
        s1, s2 = total[0, ch] / m, total[1, ch] / m
        d = s2 - s1 * s1
        var = t(d if d >= 0.0 or d != d else 0.0)
        mu = t(s1)
        mean[ch] = mu
        inv_std[ch] = one / np.sqrt(var + eps)
        if update:
            moving_mean[ch] = mom * moving_mean[ch] + rst * mu
            moving_var[ch] = mom * moving_var[ch] + rst * var


@jit()
def _batchnorm_relu_maxpool_forward_numba(z, mean, inv_std, gamma, beta, ph, pw, sh, sw, pt, pl, oh, ow):
    n, h, w, c = z.shape
    y = np.empty((n, oh, ow, c), dtype=z.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int32)
    xhat_max = np.empty((n, oh, ow, c), dtype=z.dtype)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                best, where, at = y[b, yo, xo], argmax[b, yo, xo], xhat_max[b, yo, xo]   # this window's
                first = True
                for i in range(ph):
                    hi = yo * sh + i - pt
                    if hi < 0 or hi >= h:
                        continue
                    for j in range(pw):
                        wi = xo * sw + j - pl
                        if wi < 0 or wi >= w:
                            continue
                        for ch in range(c):
                            xh = (z[b, hi, wi, ch] - mean[ch]) * inv_std[ch]
                            v = gamma[ch] * xh + beta[ch]
                            larger = first or (v > best[ch]) or ((v != v) and (best[ch] == best[ch]))
                            best[ch] = v if larger else best[ch]
                            where[ch] = hi * w + wi if larger else where[ch]
                            at[ch] = xh if larger else at[ch]
                        first = False
                for ch in range(c):
                    best[ch] = 0 if best[ch] <= 0 else best[ch]     # ReLU; NaN stays NaN
    return y, argmax, xhat_max


@jit()
def _batchnorm_gradient_sums_numba(dy, y, xhat_max):
    n, oh, ow, c = dy.shape
    dbeta = np.zeros(c, dtype=np.float64)
    dgamma = np.zeros(c, dtype=np.float64)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):         # dv = dy where y > 0: selects, not branches
                    g = dy[b, yo, xo, ch] if y[b, yo, xo, ch] > 0 else 0.0
                    dbeta[ch] += g
                    dgamma[ch] += g * xhat_max[b, yo, xo, ch]
    sums = np.empty((2, c), dtype=dy.dtype)     # one array: what a split batch's threads add up
    sums[0], sums[1] = dbeta, dgamma
    return sums


@jit()
def _batchnorm_input_gradient_numba(dy, argmax, y, z, mean, inv_std, gamma, dbeta, dgamma, m):
    n, hw, c = z.shape                          # (N, H*W, C), as above
    oh, ow = dy.shape[1], dy.shape[2]
    k = gamma * inv_std / m                     # (C,)
    dz = np.empty_like(z)
    for b in range(n):                          # every pixel: the terms of the whole channel
        for p in range(hw):
            for ch in range(c):
                dz[b, p, ch] = k[ch] * (-dbeta[ch] - (z[b, p, ch] - mean[ch]) * inv_std[ch] * dgamma[ch])
    for b in range(n):                          # the argmax pixels: plus k * M * dv
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    g = dy[b, yo, xo, ch] if y[b, yo, xo, ch] > 0 else 0.0
                    dz[b, argmax[b, yo, xo, ch], ch] += k[ch] * m * g
    return dz


@jit()
def _batchnorm_inference_gradient_numba(dy, argmax, y, h, w, scale):
    n, oh, ow, c = dy.shape
    dz = np.zeros((n, h * w, c), dtype=dy.dtype)
    for b in range(n):
        for yo in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    if y[b, yo, xo, ch] > 0:
                        dz[b, argmax[b, yo, xo, ch], ch] += dy[b, yo, xo, ch] * scale[ch]
    return dz.reshape(n, h, w, c)


# ---------------------------------------------------------------------------------------------
# What the fused block calls (CPU only), with the references' contracts
# ---------------------------------------------------------------------------------------------

def _check_pooled(kernel, dy, argmax, y, z_shape):
    expect_shape(kernel, "argmax", argmax, dy.shape)
    expect_shape(kernel, "y", y, dy.shape)
    if dy.shape[0] != z_shape[0] or dy.shape[3] != z_shape[3]:
        raise ValueError(f"{kernel}: dy has shape {tuple(dy.shape)}, but z has {tuple(z_shape)}: "
                         "they must agree on the batch and the channels.")


def channel_moments(z):
    """Same contract as :func:`channel_moments_reference`."""
    return _channel_moments_numba(np.ascontiguousarray(z).reshape(-1, z.shape[-1]))


def batch_statistics(total, m, epsilon, momentum, moving_mean, moving_var, update):
    """Same contract as :func:`batch_statistics_reference`, bit for bit, in one call: it runs just
    after a split batch's threads meet, where every NumPy call would hold Python's GIL while the
    other thread waits for it (docs/performance.md)."""
    c = moving_mean.shape[0]
    expect_shape("batch_statistics", "total", total, (2, c))
    expect_shape("batch_statistics", "moving_var", moving_var, (c,))
    mean, inv_std = np.empty(c, dtype=moving_mean.dtype), np.empty(c, dtype=moving_mean.dtype)
    _batch_statistics_numba(total, float(m), float(epsilon), float(momentum), 1.0 - momentum, moving_mean, moving_var,
                            bool(update), mean, inv_std)
    return mean, inv_std


def batchnorm_relu_maxpool_forward(z, mean, inv_std, gamma, beta, ph, pw, stride, pad):
    """Same contract as :func:`batchnorm_relu_maxpool_forward_reference`."""
    (sh, sw), (pt, pb, pl, pr) = stride, pad
    n, h, w, c = z.shape
    oh, ow = output_size(h, ph, sh, pt, pb), output_size(w, pw, sw, pl, pr)
    for what, a in (("mean", mean), ("inv_std", inv_std), ("gamma", gamma), ("beta", beta)):
        expect_shape("batchnorm_relu_maxpool_forward", what, a, (c,))
    return _batchnorm_relu_maxpool_forward_numba(np.ascontiguousarray(z), mean, inv_std, gamma, beta,
                                                 ph, pw, sh, sw, pt, pl, oh, ow)


def batchnorm_gradient_sums(dy, y, xhat_max):
    """Same contract as :func:`batchnorm_gradient_sums_reference`, as one (2, C) array whose rows
    are dbeta and dgamma (a split batch's threads add it up as it is)."""
    expect_shape("batchnorm_gradient_sums", "y", y, dy.shape)
    expect_shape("batchnorm_gradient_sums", "xhat_max", xhat_max, dy.shape)
    return _batchnorm_gradient_sums_numba(np.ascontiguousarray(dy), y, xhat_max)


def batchnorm_input_gradient(dy, argmax, y, z, mean, inv_std, gamma, dbeta, dgamma, m):
    """Same contract as :func:`batchnorm_input_gradient_reference`."""
    _check_pooled("batchnorm_input_gradient", dy, argmax, y, z.shape)
    n, h, w, c = z.shape
    dz = _batchnorm_input_gradient_numba(np.ascontiguousarray(dy), argmax, y,
                                         np.ascontiguousarray(z).reshape(n, h * w, c), mean, inv_std, gamma,
                                         dbeta, dgamma, z.dtype.type(m))
    return dz.reshape(z.shape)


def batchnorm_inference_gradient(dy, argmax, y, z_shape, gamma, inv_std):
    """Same contract as :func:`batchnorm_inference_gradient_reference`."""
    _check_pooled("batchnorm_inference_gradient", dy, argmax, y, z_shape)
    return _batchnorm_inference_gradient_numba(np.ascontiguousarray(dy), argmax, y, z_shape[1], z_shape[2],
                                               gamma * inv_std)
