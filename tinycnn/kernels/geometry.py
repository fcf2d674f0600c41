"""The geometry of a sliding window: how long the output is, and Keras's "same" padding.

Shared by im2col, the pooling kernels, their CUDA versions and the layers, and importing nothing,
so that none of them has to import another to know a window's size.
"""


def output_size(size, kernel, stride, pad_before, pad_after):
    """Output length of a sliding window: (size + pad_before + pad_after - kernel) // stride + 1."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def same_padding(size, kernel, stride):
    """Keras's "same" padding along one axis: (before, after), the extra one after.

    The output length is ceil(size / stride); the total padding is what makes the last window
    fit, split as evenly as possible with the odd pixel at the bottom/right, as Keras and
    TensorFlow do.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
