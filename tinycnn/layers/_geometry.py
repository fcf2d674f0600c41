"""Shared by Conv2D and MaxPool2D: reading (h, w) arguments and working out padding."""

from ..kernels.im2col import output_size, same_padding


def pair(value, what):
    """3 -> (3, 3); (3, 2) -> (3, 2); with a clear error for anything else."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return value


def check_padding(padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def paddings(height, width, window, stride, padding):
    """(PT, PB, PL, PR): zero for "valid"; Keras's asymmetric split for "same"."""
    if padding == "valid":
        return (0, 0, 0, 0)
    return same_padding(height, window[0], stride[0]) + same_padding(width, window[1], stride[1])


def spatial_output(height, width, window, stride, pad):
    """(OH, OW) for the given padding, with OH = (H + PT + PB - KH) // SH + 1."""
    pt, pb, pl, pr = pad
    oh = output_size(height, window[0], stride[0], pt, pb)
    ow = output_size(width, window[1], stride[1], pl, pr)
    return oh, ow
