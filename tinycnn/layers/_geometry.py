"""Shared by Conv2D and MaxPool2D: reading (h, w) arguments and working out padding."""

from .. import checks
from ..kernels.geometry import output_size, same_padding


def pair(value, what):
    """3 -> (3, 3); (3, 2) -> (3, 2); with a clear error for anything else."""
    return checks.pair(value, what)


def check_padding(padding):
    return checks.choice(padding, "padding", ("valid", "same"))


def paddings(height, width, window, stride, padding):
    """(PT, PB, PL, PR): zero for "valid"; Keras's asymmetric split for "same"."""
    if padding == "valid":
        return (0, 0, 0, 0)
    return same_padding(height, window[0], stride[0]) + same_padding(width, window[1], stride[1])


def window_geometry(name, kind, input_shape, window, stride, padding):
    """Padding (PT, PB, PL, PR) and output size (OH, OW) of a sliding window over one image,
    with a clear error for input that is not an image or a window that does not fit."""
    if len(input_shape) != 3:
        raise ValueError(f"{name}: {kind} takes images (batch, height, width, channels), got "
                         f"per-sample shape {tuple(input_shape)}; for grayscale images add the "
                         "channel axis with x[..., None].")
    h, w, _ = input_shape
    pad = paddings(h, w, window, stride, padding)
    oh, ow = spatial_output(h, w, window, stride, pad)
    if oh < 1 or ow < 1:
        raise ValueError(f"{name}: a {window} window does not fit a {h}x{w} image with "
                         f"padding='{padding}'; use a smaller window or padding='same'.")
    return pad, (oh, ow)


def spatial_output(height, width, window, stride, pad):
    """(OH, OW) for the given padding, with OH = (H + PT + PB - KH) // SH + 1."""
    pt, pb, pl, pr = pad
    oh = output_size(height, window[0], stride[0], pt, pb)
    ow = output_size(width, window[1], stride[1], pl, pr)
    return oh, ow
