"""Fast twins of the layers, which the fast mode runs in their place. Not layers you add.

- :class:`ConvReLUMaxPool`: Conv2D, ReLU and MaxPool2D run as one block;
- :class:`ConvBatchNormReLUMaxPool`: Conv2D, BatchNormalization, ReLU and MaxPool2D run as one
  block (at the end of this file);
- :class:`Conv2DWithoutDx`: a Conv2D that is the first step with parameters, in training: its
  backward fills the gradients and skips dL/dx, which nobody needs;
- :class:`OnePassDropout`: Dropout whose mask is drawn and applied by one kernel.

ConvReLUMaxPool
---------------

A model written ``Conv2D(32, 3, activation="relu"), MaxPool2D(2)`` (or with a separate ``ReLU()``
layer between them) spends most of its memory traffic between those layers, on the convolution's
output z. In the fast mode (the default; ``tinycnn/plan.py``) ``fit``, ``evaluate`` and ``predict``
run such a run of layers as this block, which computes what the three layers compute one after
another, in fewer passes over memory:

    forward   z = im2col(x) @ kernel                        Conv2D's matrix product, no bias yet
              y, argmax = maxpool(relu(z + bias))           one pass: kernels/bias_relu_pool.py
    backward  dz, dbias = dy at each argmax where y > 0     one pass, never reading z
              dkernel = cols.T @ dz,  dx = col2im(dz @ kernel.T)      Conv2D's own backward

When the convolution is 3×3 with stride 1 and the pool 2×2 with stride 2 (both blocks of the Keras
MNIST CNN), and the input has one channel or at least winograd.MIN_CHANNELS, the block computes
the same thing by Winograd's F(2×2, 3×3) instead (kernels/winograd.py): each 2×2 tile of z is
one pool window, made from the 4×4 input tile under it with 16 multiplications instead of 36,
and z is never stored. Its results differ from im2col's by float rounding only.

The block's first step with parameters skips dx (``input_grad=False``, set by the plan): nobody
needs the gradient of the data. The parameters, gradients and saved weights stay the Conv2D's:
the block only borrows the three layers. It runs on the CPU; on the GPU the layers run one by one.
``tests/test_fast_paths.py::test_fused_block_equals_the_three_layers`` proves the block equal to
the layers, forward and backward, for both paths.
"""

import numpy as np

from ..backend import get_array_module
from ..kernels import winograd, winograd_conv
from ..kernels.batchnorm_relu_pool import (batch_statistics, batchnorm_gradient_sums, batchnorm_inference_gradient,
                                           batchnorm_input_gradient, batchnorm_relu_maxpool_forward,
                                           channel_moments)
from ..kernels.bias_relu_pool import bias_relu_maxpool_forward, maxpool_relu_backward
from ..kernels.dropout import dropout_forward
from ..kernels.im2col import col2im, im2col


class ConvReLUMaxPool:
    """Conv2D → ReLU → MaxPool2D, fused. Shapes: x (N, H, W, C) -> y (N, OH', OW', F) pooled."""

    def __init__(self, conv, pool, input_grad=True):
        self.conv, self.pool, self.input_grad = conv, pool, input_grad
        self.name = f"{conv.name}+relu+{pool.name}"

    params = property(lambda self: self.conv.params)      # the Conv2D's own dicts
    grads = property(lambda self: self.conv.grads)

    def output_shape(self, input_shape):
        return self.pool.output_shape(self.conv.output_shape(input_shape))

    def forward(self, x, training=False):
        conv, pool = self.conv, self.pool
        conv._prepare(x)
        kernel, bias = conv.params["kernel"], conv.params["bias"]
        self.x_shape = x.shape
        self.z_shape = (x.shape[0], *conv.out_hw, conv.filters)
        self.winograd = winograd.applies(x.shape[3], conv.kernel_size, conv.strides, pool.pool_size,
                                         pool.strides, pool.pad)
        if self.winograd:
            self.y, self.argmax, self.v, self.u = winograd.forward(x, kernel, bias, conv.pad, conv.out_hw)
            return self.y
        self.cols = im2col(x, *conv.kernel_size, conv.strides, conv.pad)
        z = (self.cols @ kernel.reshape(-1, conv.filters)).reshape(self.z_shape)
        self.y, self.argmax = bias_relu_maxpool_forward(z, bias, *pool.pool_size, pool.strides, pool.pad)
        return self.y

    def backward(self, dy):
        conv, grads = self.conv, self.conv.grads
        kernel = conv.params["kernel"]
        if self.winograd:
            grads["kernel"], grads["bias"], dx = winograd.backward(
                dy, self.argmax, self.y, self.v, self.u, self.x_shape, conv.pad, conv.out_hw, self.input_grad)
            return dx
        dz, grads["bias"] = maxpool_relu_backward(dy, self.argmax, self.y, self.z_shape)
        dz = dz.reshape(-1, conv.filters)
        grads["kernel"] = (self.cols.T @ dz).reshape(kernel.shape)
        if not self.input_grad:
            return None
        return col2im(dz @ kernel.reshape(-1, conv.filters).T, self.x_shape, *conv.kernel_size, conv.strides,
                      conv.pad)


class Conv2DWithoutDx:
    """A Conv2D in training, when it is the first step with parameters: the layer's own forward,
    and a backward that stops at its gradients.

    Conv2D.backward ends with dcols = dz @ kernel.T and dx = col2im(dcols): a matrix product and
    a pass over the input that only the layer before would read, and before the first step with
    parameters there is only the data (or augmentation, which needs no gradient). This backward
    is Conv2D's first lines: dkernel = cols.T @ dz, dbias = dz summed; it returns None.
    ``tests/test_fast_paths.py::test_conv_without_dx_fills_the_gradients_conv2d_fills`` proves
    the gradients equal.
    """

    def __init__(self, conv):
        self.conv, self.name = conv, conv.name

    params = property(lambda self: self.conv.params)      # the Conv2D's own dicts
    grads = property(lambda self: self.conv.grads)

    def output_shape(self, input_shape):
        return self.conv.output_shape(input_shape)

    def forward(self, x, training=False):
        return self.conv.forward(x, training)

    def backward(self, dout):
        conv = self.conv
        dz = dout if conv.activation is None else conv.activation.backward(dout)
        dz = dz.reshape(-1, conv.filters)
        conv.grads["kernel"] = (conv.cols.T @ dz).reshape(conv.params["kernel"].shape)
        conv.grads["bias"] = get_array_module(dz).ones(dz.shape[0], dtype=dz.dtype) @ dz
        return None


class OnePassDropout:
    """Dropout in training, on the CPU, by one kernel (``kernels/dropout.py``) that computes the
    layer's Philox numbers itself and writes y and scale as it makes them: the layer's own mask,
    y and scale, bit for bit, in one pass instead of NumPy's five. Everything else is the layer's:
    its backward, and its own forward in inference, with a ``fixed_mask``, or on the GPU.
    ``tests/test_dropout_kernel.py`` proves the twin equal to the layer, whole and split.
    """

    def __init__(self, layer):
        self.layer, self.name = layer, layer.name

    params = property(lambda self: self.layer.params)     # none, but the plan asks
    grads = property(lambda self: self.layer.grads)
    per_sample = property(lambda self: self.layer.per_sample)     # parallel.py asks

    def output_shape(self, input_shape):
        return self.layer.output_shape(input_shape)

    def forward(self, x, training=False):
        layer = self.layer
        if not training or layer.rate == 0.0 or layer.fixed_mask is not None or not isinstance(x, np.ndarray):
            return layer.forward(x, training)
        layer._prepare(x)
        y, layer.scale = dropout_forward(x, layer._key, *layer.next_draw(), layer.rate)
        return y

    def backward(self, dout):
        return self.layer.backward(dout)


class ConvBatchNormReLUMaxPool:
    """Conv2D → BatchNormalization → ReLU → MaxPool2D, fused. Shapes: x (N, H, W, C) -> y
    (N, OH', OW', F) pooled, as the four layers give it.

    PyTorch's MNIST network (``--arch bn-dropout``) puts BatchNormalization between each
    convolution and its ReLU. In the fast mode such a run of four layers runs as this block,
    which computes what they compute one after another, in fewer passes over the convolution's
    output z (``kernels/batchnorm_relu_pool.py`` derives each kernel):

        forward   z = im2col(x) @ kernel + bias               Conv2D's own lines (or Winograd's, below)
                  mean = Σ z / M,  var = Σ z² / M - mean²      in training: the batch's (both sums
                                                              in float64, in one pass), and the
                                                              moving averages follow them
                  y, argmax = maxpool(relu(gamma * (z - mean) / sqrt(var + eps) + beta))   one pass,
                                                              keeping x̂ at each argmax
        backward  dbeta, dgamma = Σ dv, Σ dv * x̂               over the pooled outputs only
                  dz = gamma / (M s) * (M dv - dbeta - x̂ dgamma)                  one pass over z
                  dkernel = cols.T @ dz, dbias = Σ dz, dx = col2im(dz @ kernel.T)   Conv2D's own

    (dv being dL/d(BatchNormalization's output): dy at each window's argmax where y > 0, else 0.)
    A 3×3 stride-1 convolution with one input channel or at least winograd.MIN_CHANNELS (both
    of bn-dropout's) computes z, and dkernel, dbias and dx from dz, by Winograd's algorithm
    instead (``kernels/winograd_conv.py``): F(4×4, 3×3), 36 multiplications per 4×4 output tile
    instead of 144, or, for one input channel without dx, F(2×2, 3×3) in one loop over the
    filters. The same numbers but for float rounding. In training, when that one-channel block's
    2×2 tiles are its pool's windows (a 2×2 max-pool of stride 2), one kernel computes dz tile by
    tile from the formula above and goes on to dkernel and dbias, never writing dz.
    In inference the statistics are the moving averages. Split over threads
    (``tinycnn/parallel.py``), each thread's block adds its share's sums to the others' through
    ``sums`` (``parallel.SumsAcrossShares``), as ``BatchNormAcrossShares`` does, so that every
    share normalises with the whole batch's statistics; ``sums=None`` is one thread, the whole
    batch. The parameters, gradients and moving averages stay the layers': the block only borrows
    them. CPU only. ``tests/test_fused_batchnorm.py::test_the_block_equals_the_four_layers`` proves
    the block equal to the layers, in training and inference, whole and split, on both paths.
    """

    def __init__(self, conv, norm, pool, input_grad=True, sums=None, k=0):
        self.conv, self.norm, self.pool, self.input_grad = conv, norm, pool, input_grad
        self.sums, self.k = sums, k
        self.name = f"{conv.name}+{norm.name}+relu+{pool.name}"

    def across_shares(self, sums, k):
        """This block as thread k runs it when a batch is split (``parallel.ACROSS_SHARES``)."""
        return ConvBatchNormReLUMaxPool(self.conv, self.norm, self.pool, self.input_grad, sums, k)

    # The convolution's and the normalisation's parameters (no name is in both), for the plan's
    # checks; the optimizer reads them from the layers themselves.
    params = property(lambda self: {**self.conv.params, **self.norm.params})
    grads = property(lambda self: {**self.conv.grads, **self.norm.grads})

    def output_shape(self, input_shape):
        return self.pool.output_shape(self.conv.output_shape(input_shape))

    def _total(self, part):
        """Σ over the whole batch of a per-channel sum over this block's input (see above)."""
        return part if self.sums is None else self.sums.total(self.k, part)

    def forward(self, x, training=False):
        conv, norm, pool = self.conv, self.norm, self.pool
        conv._prepare(x)
        kernel = conv.params["kernel"]
        self.x_shape = x.shape
        self.winograd = winograd_conv.applies(x.shape[3], conv.kernel_size, conv.strides)
        # The one-channel kernels, and each 2×2 tile one pool window (winograd.applies's test, as
        # the Conv2D → ReLU → MaxPool2D block makes it): the backward computes dz tile by tile.
        self.dz_in_tiles = (self.winograd and winograd_conv.one_channel(x.shape[3], self.input_grad)
                            and winograd.applies(1, conv.kernel_size, conv.strides, pool.pool_size, pool.strides,
                                                 pool.pad))
        if self.winograd:
            z, self.v, self.u = winograd_conv.forward(x, kernel, conv.params["bias"], conv.pad, conv.out_hw,
                                                        self.input_grad)
        else:
            self.cols = im2col(x, *conv.kernel_size, conv.strides, conv.pad)
            z = self.cols @ kernel.reshape(-1, conv.filters)
            z += conv.params["bias"]
            z = z.reshape(x.shape[0], *conv.out_hw, conv.filters)
        norm._prepare(z)
        self.training = bool(training)
        if training:
            samples = len(x) if self.sums is None else self.sums.samples
            self.m = samples * conv.out_hw[0] * conv.out_hw[1]        # M values per channel
            total = self._total(channel_moments(z))                   # float64 sums, one meeting
            mean, inv_std = batch_statistics(total, self.m, norm.epsilon, norm.momentum, norm.state["moving_mean"],
                                             norm.state["moving_variance"], update=self.k == 0)   # once a batch
        else:
            mean, var = norm.state["moving_mean"], norm.state["moving_variance"]
            inv_std = 1.0 / np.sqrt(var + norm.epsilon)
        self.z, self.mean, self.inv_std = z, mean, inv_std
        self.y, self.argmax, self.xhat_max = batchnorm_relu_maxpool_forward(
            z, mean, self.inv_std, norm.params["gamma"], norm.params["beta"], *pool.pool_size, pool.strides, pool.pad)
        return self.y

    def backward(self, dy):
        conv, norm = self.conv, self.norm
        kernel, gamma = conv.params["kernel"], norm.params["gamma"]
        sums = batchnorm_gradient_sums(dy, self.y, self.xhat_max)     # (dbeta, dgamma) as rows
        norm.grads["beta"], norm.grads["gamma"] = sums                 # this share's, if split
        if self.training:
            dbeta, dgamma = self._total(sums)
            if self.dz_in_tiles:            # the first convolution: dz never written (winograd_conv)
                conv.grads["kernel"], conv.grads["bias"] = winograd_conv.one_channel_batchnorm_backward(
                    dy, self.argmax, self.y, self.z, self.v, self.mean, self.inv_std, gamma, dbeta, dgamma, self.m)
                return None
            dz = batchnorm_input_gradient(dy, self.argmax, self.y, self.z, self.mean, self.inv_std, gamma,
                                          dbeta, dgamma, self.m)
        else:
            dz = batchnorm_inference_gradient(dy, self.argmax, self.y, self.z.shape, gamma, self.inv_std)
        if self.winograd:
            conv.grads["kernel"], conv.grads["bias"], dx = winograd_conv.backward(dz, self.v, self.u, self.x_shape,
                                                                                 conv.pad, self.input_grad)
            return dx
        dz = dz.reshape(-1, conv.filters)
        conv.grads["kernel"] = (self.cols.T @ dz).reshape(kernel.shape)
        conv.grads["bias"] = np.ones(dz.shape[0], dtype=dz.dtype) @ dz
        if not self.input_grad:
            return None
        return col2im(dz @ kernel.reshape(-1, conv.filters).T, self.x_shape, *conv.kernel_size, conv.strides,
                      conv.pad)
