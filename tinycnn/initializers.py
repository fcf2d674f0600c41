"""How parameters start: Glorot-uniform kernels and zero biases (Keras's defaults), or He-normal.

Every function takes the shape, a ``numpy.random.Generator`` and a dtype, so the same seed gives
the same weights on every device. Fans follow Keras: a Dense kernel (in, out) has fan_in = in and
fan_out = out; a Conv2D kernel (KH, KW, C_in, F) has fan_in = KH*KW*C_in and fan_out = KH*KW*F.
"""

import numpy as np


def fans(shape):
    """(fan_in, fan_out) of a kernel shape, as Keras computes them."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = int(np.prod(shape[:-2]))
    return receptive_field * shape[-2], receptive_field * shape[-1]


def glorot_uniform(shape, rng, dtype=np.float32):
    """Uniform in [-limit, limit] with limit = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).

    It keeps the variance of activations and of gradients roughly equal from layer to layer.
    """
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(shape, rng, dtype=np.float32):
    """Normal with stddev sqrt(2 / fan_in), truncated at two standard deviations (He et al. 2015).

    Made for ReLU networks, which zero half their inputs. As in Keras, values beyond two standard
    deviations are drawn again, and the scale is divided by 0.8796 (the stddev of a standard
    normal truncated to [-2, 2]) so the truncated values keep the intended variance.
    """
    fan_in, _ = fans(shape)
    stddev = np.sqrt(2.0 / fan_in) / 0.87962566103423978
    z = rng.standard_normal(size=shape)
    while np.any(outside := np.abs(z) > 2.0):
        z[outside] = rng.standard_normal(size=int(outside.sum()))
    return (z * stddev).astype(dtype)


def zeros(shape, rng=None, dtype=np.float32):
    """All zeros: the Keras default for biases."""
    return np.zeros(shape, dtype=dtype)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "he_normal": he_normal, "zeros": zeros}


def get(name):
    """Look up an initializer by name, with a clear error for an unknown one."""
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}") from None
