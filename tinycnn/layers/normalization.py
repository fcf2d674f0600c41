"""BatchNormalization: normalise each channel with the batch's statistics, then scale and shift."""

import warnings

import numpy as np

from .. import checks
from ..backend import get_array_module
from .base import Layer


def channel_sums(a):
    """Σ over every axis but the last: (..., C) -> (C,), the same as a.sum(axis=(0, 1, 2)) for
    images. Computed as ones @ a.reshape(M, C), which BLAS does several times faster than NumPy's
    reduction over leading axes (as Conv2D computes its bias gradient)."""
    a2 = a.reshape(-1, a.shape[-1])
    return get_array_module(a).ones(a2.shape[0], dtype=a.dtype) @ a2


class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, per channel (Ioffe & Szegedy 2015).

    Shapes
        x, y            (N, H, W, C) or (N, D): any shape; the LAST axis holds the channels
        gamma, beta     (C,)   trainable: scale (starts at 1) and shift (starts at 0)
        moving_mean     (C,)   in ``self.state``: not trained, saved with the model (starts at 0)
        moving_variance (C,)   in ``self.state`` (starts at 1)

    Statistics are taken over every axis but the last, so each channel of an image is averaged
    over the batch *and* all its pixels: M = N*H*W values per channel (M = N for (N, D) input).
    Every such sum is ``channel_sums``: the column sums of x viewed as an (M, C) matrix.

    Training (``training=True``): mean and var are the batch's, var the biased one (divided by M,
    as Keras does), and the moving averages follow them, in place:
        moving_mean     = momentum * moving_mean     + (1 - momentum) * mean
        moving_variance = momentum * moving_variance + (1 - momentum) * var
    Inference: mean and var are the moving averages, so a sample's output does not depend on the
    other samples in its batch.

    Backward. Write s = sqrt(var + eps), xhat = (x - mean) / s and dxhat = dout * gamma; sums Σ
    run over the M values of one channel.
        dL/dbeta  = Σ dout                  beta is added to every value
        dL/dgamma = Σ dout * xhat           gamma multiplies xhat
    In training, mean and var depend on x too: d mean/dx_i = 1/M and d var/dx_i = 2(x_i - mean)/M.
    So the chain rule through xhat_j = (x_j - mean) / s gives
        dL/dx_i = Σ_j dxhat_j * [(δ_ij - 1/M) / s - (x_j - mean)(x_i - mean) / (M s³)]
                = (1 / (M s)) * (M dxhat_i - Σ_j dxhat_j - xhat_i Σ_j dxhat_j xhat_j)
    and since gamma is constant within a channel, Σ dxhat = gamma dL/dbeta and
    Σ dxhat*xhat = gamma dL/dgamma:
        dL/dx = gamma / (M s) * (M dout - dL/dbeta - xhat * dL/dgamma)
    In inference mean and var are constants, and dL/dx = dout * gamma / s.

    What ``fit`` runs. With ``compile(fast=False)`` this code runs as written, in one thread. By
    default a batch is split over the CPU cores, and each thread runs a
    :class:`BatchNormAcrossShares` (below) in this layer's place, which normalises its share with
    the whole batch's statistics (``tests/test_split_regularization.py`` proves it equal to this
    code on the whole batch); and a Conv2D → BatchNormalization → ReLU → MaxPool2D runs as one
    fused block (``layers/fused.py``: ``ConvBatchNormReLUMaxPool``,
    ``tests/test_fused_batchnorm.py``).
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None):
        super().__init__(name=name)
        # Python floats, never NumPy float64 scalars: in NumPy 2, np.float64(0.99) * a float32
        # array is float64, while 0.99 * the same array stays float32.
        self.momentum = checks.number(momentum, "momentum", 0.0, 1.0)
        self.epsilon = checks.number(epsilon, "epsilon", minimum=0.0, low_open=True)
        if self.momentum < 0.5:
            warnings.warn(f"BatchNormalization(momentum={momentum}): this momentum is Keras's, the weight of the old "
                          "moving statistics (default 0.99), so the moving mean and variance follow the last batch "
                          f"almost alone. PyTorch's momentum={momentum} is Keras's momentum={1 - self.momentum:g}.",
                          stacklevel=3)

    def build(self, input_shape, dtype="float32", rng=None):
        if len(input_shape) < 1:
            raise ValueError(f"{self.name}: BatchNormalization needs at least one axis per sample.")
        super().build(input_shape, dtype)
        c = self.input_shape[-1]
        self.params = {"gamma": np.ones(c, dtype=self.dtype), "beta": np.zeros(c, dtype=self.dtype)}
        self.state = {"moving_mean": np.zeros(c, dtype=self.dtype),
                      "moving_variance": np.ones(c, dtype=self.dtype)}

    def forward(self, x, training=False):
        self._prepare(x)
        xp = get_array_module(x)
        if training:
            m = x.size // x.shape[-1]            # M values per channel
            mean = channel_sums(x) / m
            centred = x - mean
            var = channel_sums(centred * centred) / m      # two passes: no cancellation
            moving_mean, moving_var = self.state["moving_mean"], self.state["moving_variance"]
            moving_mean[...] = self.momentum * moving_mean + (1.0 - self.momentum) * mean
            moving_var[...] = self.momentum * moving_var + (1.0 - self.momentum) * var
        else:
            var = self.state["moving_variance"]
            centred = x - self.state["moving_mean"]
        self.training = bool(training)
        self.inv_std = 1.0 / xp.sqrt(var + self.epsilon)     # 1 / s, (C,)
        centred *= self.inv_std                  # in place: centred becomes xhat
        self.xhat = centred
        return self.params["gamma"] * self.xhat + self.params["beta"]

    def backward(self, dout):
        gamma, xhat = self.params["gamma"], self.xhat
        self.grads["beta"] = channel_sums(dout)
        self.grads["gamma"] = channel_sums(dout * xhat)
        if not self.training:
            return dout * (gamma * self.inv_std)
        m = dout.size // dout.shape[-1]          # M values per channel
        return (gamma * self.inv_std / m) * (m * dout - self.grads["beta"] - xhat * self.grads["gamma"])

    def get_config(self):
        return {"name": self.name, "momentum": self.momentum, "epsilon": self.epsilon}


class BatchNormAcrossShares:
    """A copy of a BatchNormalization layer that runs one thread's share of a batch, normalising
    with the statistics of the whole batch, as PyTorch's SyncBatchNorm does across devices. Not a
    layer you add: ``tinycnn/parallel.py`` runs one per thread in place of the layer.

    Every Σ of ``BatchNormalization`` runs over the M values of a channel in the whole batch.
    With the batch split into shares, each thread sums its own share, and ``sums.total(k, part)``
    (``parallel.SumsAcrossShares``) waits for every share's part and returns their sum, the same
    numbers in every thread. So the forward pass needs two such meeting points, and the backward
    one; what happens between them is the layer's own arithmetic, line for line:

        forward   mean  = total(Σ x) / M                         M = N * (values per sample)
                  var   = total(Σ (x - mean)²) / M
                  y     = gamma * (x - mean) / sqrt(var + eps) + beta
        backward  dL/dbeta, dL/dgamma = Σ dout, Σ dout * xhat    this share's: the gradients
                  dL/dx = gamma / (M s) * (M dout - total(dL/dbeta) - xhat * total(dL/dgamma))

    The share's own dL/dbeta and dL/dgamma go into ``grads``, and ``DataParallel`` adds the
    shares' gradients, as for every layer. The moving averages are updated once, by share 0.
    ``tests/test_split_regularization.py`` proves the shares' outputs, dL/dx and gradients equal
    to the layer's on the whole batch.

    ``layer`` is the thread's copy of the layer (``parallel.replica``: the model's parameters and
    moving averages, grads of its own); ``sums`` is shared by the copies of one layer, and knows
    the batch's N (``sums.samples``); ``k`` is the thread's share.
    """

    def __init__(self, layer, sums, k):
        self.layer, self.sums, self.k, self.name = layer, sums, k, layer.name

    params = property(lambda self: self.layer.params)      # the layer's own dicts
    grads = property(lambda self: self.layer.grads)

    def output_shape(self, input_shape):
        return self.layer.output_shape(input_shape)

    def forward(self, x, training=False):
        layer = self.layer
        if not training:                    # the moving averages: nothing to share
            self.training = False
            return layer.forward(x, training)
        layer._prepare(x)
        xp = get_array_module(x)
        self.training = True
        self.m = self.sums.samples * (x[0].size // x.shape[-1])      # M values per channel, whole batch
        mean = self.sums.total(self.k, channel_sums(x)) / self.m
        centred = x - mean
        var = self.sums.total(self.k, channel_sums(centred * centred)) / self.m
        if self.k == 0:
            moving_mean, moving_var = layer.state["moving_mean"], layer.state["moving_variance"]
            moving_mean[...] = layer.momentum * moving_mean + (1.0 - layer.momentum) * mean
            moving_var[...] = layer.momentum * moving_var + (1.0 - layer.momentum) * var
        self.inv_std = 1.0 / xp.sqrt(var + layer.epsilon)
        centred *= self.inv_std
        self.xhat = centred
        return layer.params["gamma"] * self.xhat + layer.params["beta"]

    def backward(self, dout):
        if not self.training:
            return self.layer.backward(dout)
        grads, gamma, xhat = self.layer.grads, self.layer.params["gamma"], self.xhat
        grads["beta"] = channel_sums(dout)
        grads["gamma"] = channel_sums(dout * xhat)
        dbeta, dgamma = self.sums.total(self.k, get_array_module(dout).stack([grads["beta"], grads["gamma"]]))
        return (gamma * self.inv_std / self.m) * (self.m * dout - dbeta - xhat * dgamma)
