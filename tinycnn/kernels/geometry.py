"""The geometry of a sliding window: how long the output is, and Keras's "same" padding; and the
shape check every kernel's wrapper makes before it hands arrays to a kernel.

Shared by im2col, the pooling kernels, their CUDA versions and the layers, and importing nothing,
so that none of them has to import another to know a window's size.
"""


def expect_shape(kernel, what, array, shape):
    """Refuse ``array`` unless its shape is ``shape``. The compiled kernels index their arrays
    without bounds checks (Numba and CUDA alike), so a wrapper checks every array it is handed
    against the sizes the kernel will index, and an array of the wrong size is a ValueError here
    instead of a read or write past its end."""
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{kernel}: {what} has shape {tuple(array.shape)}, but the kernel indexes it as "
                         f"{tuple(shape)}.")


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
