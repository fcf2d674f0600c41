"""ConvReLUMaxPool: Conv2D, ReLU and MaxPool2D run as one block, for speed. Not a layer you add.

A model written ``Conv2D(32, 3, activation="relu"), MaxPool2D(2)`` (or with a separate ``ReLU()``
layer between them) spends most of its memory traffic between those layers, on the convolution's
output. ``fit`` therefore runs such a run of layers as this block (see ``tinycnn/plan.py``),
which gives the same numbers as the three layers one after another:

    forward   z = im2col(x) @ kernel                       Conv2D's matrix product, no bias yet
              y = maxpool(relu(z + bias))                  one pass: kernels/bias_relu_pool.py
    backward  dz, dbias = where y > 0, dy to each argmax    one pass, never reading z
              dkernel, dx = Conv2D's own backward from dz
              (or, when a kernel row holds ROW_MIN numbers or more, dkernel and dx straight from
               the non-zero entries of dz, without forming it: the same sums, fewer of them)

When the convolution is 3×3 with stride 1 and the pool 2×2 with stride 2 (the seed model's two
blocks), and the input has one channel or at least winograd.MIN_CHANNELS, the block computes
the same thing by Winograd's F(2×2, 3×3) instead (kernels/winograd.py): each 2×2 tile of z is
one pool window, made from the 4×4 input tile under it with 16 multiplications instead of 36,
and z is never stored. Its results differ from im2col's by float rounding only.

The parameters, gradients and saved weights stay the Conv2D's: the block only borrows the three
layers. It runs on the CPU; on the GPU the layers run one by one.
"""

from ..kernels import winograd
from ..kernels.bias_relu_pool import (ROW_MIN, bias_relu_maxpool_forward, conv_relu_maxpool_backward,
                                      maxpool_relu_backward)


class ConvReLUMaxPool:
    """Conv2D → ReLU → MaxPool2D, fused. Shapes: x (N, H, W, C) -> y (N, OH', OW', F) pooled."""

    def __init__(self, conv, pool):
        self.conv, self.pool = conv, pool
        self.name = f"{conv.name}+relu+{pool.name}"

    params = property(lambda self: self.conv.params)      # the Conv2D's own dicts
    grads = property(lambda self: self.conv.grads)

    def forward(self, x, training=False):
        self.x = x
        conv, pool = self.conv, self.pool
        self.winograd = winograd.applies(x.shape[3], conv.kernel_size, conv.strides, pool.pool_size,
                                         pool.strides, pool.pad)
        if self.winograd:
            z_hw = conv.out_hw
            self.z_shape = (x.shape[0], *z_hw, conv.filters)
            self.y, self.argmax, self.v, self.u = winograd.forward(
                x, conv.params["kernel"], conv.params["bias"], conv.pad, z_hw)
            return self.y
        z = self.conv.linear_forward(x, add_bias=False)
        self.z_shape = z.shape
        self.y, self.argmax = bias_relu_maxpool_forward(z, self.conv.params["bias"], *self.pool.pool_size,
                                                        self.pool.strides, self.pool.pad)
        return self.y

    def backward(self, dy, input_grad=True):
        conv = self.conv
        kh, kw, c, f = conv.params["kernel"].shape
        if self.winograd:
            conv.grads["kernel"], conv.grads["bias"], dx = winograd.backward(
                dy, self.argmax, self.y, self.v, self.u, self.x.shape, conv.pad, self.z_shape[1:3], input_grad)
            return dx
        if kw * c >= ROW_MIN:             # long kernel rows: skip dz's zeros (bias_relu_pool.py)
            conv.grads["kernel"], conv.grads["bias"], dx = conv_relu_maxpool_backward(
                dy, self.argmax, self.y, self.x, conv.params["kernel"], self.z_shape[1:3],
                conv.strides, conv.pad, input_grad)
            return dx
        dz, dbias = maxpool_relu_backward(dy, self.argmax, self.y, self.z_shape)
        return conv.linear_backward(dz, input_grad, bias_grad=dbias)
