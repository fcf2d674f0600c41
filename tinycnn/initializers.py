"""How parameters start, by name: Keras's initializers, and PyTorch's default for its layers.

Every initializer is a function

    init(shape, rng, dtype=np.float32, fan_in=None) -> array of ``shape``

drawing from the ``numpy.random.Generator`` rng, so the same seed gives the same weights on every
device. A layer asks for its kernel by ``kernel_initializer`` and its bias by ``bias_initializer``
(Keras's names and defaults: "glorot_uniform" and "zeros"), and passes ``fan_in``, the number of
inputs each output unit sums (its kernel's fan-in), to both.

Fans follow Keras (:func:`fans`): a Dense kernel (in, out) has fan_in = in and fan_out = out; a
Conv2D kernel (KH, KW, C_in, F) has fan_in = KH*KW*C_in and fan_out = KH*KW*F; an array of one
axis, such as a bias (F,), has fan_in = fan_out = F. Keras's initializers take the fans of the
array they fill, as Keras does, and so ignore ``fan_in``: on a kernel the two agree.

PyTorch's ``nn.Conv2d`` and ``nn.Linear`` start otherwise, both their weight and their bias from
the layer's fan-in (:func:`torch_default`): the bias, which has no fan-in of its own, needs the
kernel's, which is why every initializer is handed it.

The variance-scaling family (Glorot, He, LeCun) draws with variance scale / n, n being fan_in,
fan_out or their mean: uniform in [-limit, limit] with limit = sqrt(3 * scale / n), or a normal
truncated at two standard deviations (:func:`truncated_normal`), scaled so that the truncated
values keep the variance scale / n.
"""

import math

import numpy as np

#: The standard deviation of a standard normal truncated to [-2, 2]: dividing by it makes the
#: truncated values' variance the intended one (Keras's constant).
TRUNCATED_STDDEV = 0.87962566103423978


def fans(shape):
    """(fan_in, fan_out) of an array's shape, as Keras computes them (see the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return receptive_field * shape[-2], receptive_field * shape[-1]


def uniform(shape, rng, limit, dtype=np.float32):
    """Uniform in [-limit, limit]."""
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def truncated_normal(shape, rng, stddev, dtype=np.float32):
    """Normal with mean 0 and standard deviation ``stddev / TRUNCATED_STDDEV``, values beyond two
    of those standard deviations drawn again: the truncated values have standard deviation
    ``stddev`` (Keras's ``TruncatedNormal`` as its variance-scaling initializers use it)."""
    z = rng.standard_normal(size=shape)
    while np.any(outside := np.abs(z) > 2.0):
        z[outside] = rng.standard_normal(size=int(outside.sum()))
    return (z * (stddev / TRUNCATED_STDDEV)).astype(dtype)


# -- Keras's (they take the fans of the array they fill) ------------------------------------------

def glorot_uniform(shape, rng, dtype=np.float32, fan_in=None):
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).

    Keras's default kernel. It keeps the variance of activations and of gradients roughly equal
    from layer to layer: Var = limit² / 3 = 2 / (fan_in + fan_out).
    """
    n_in, n_out = fans(shape)
    return uniform(shape, rng, math.sqrt(6.0 / (n_in + n_out)), dtype)


def glorot_normal(shape, rng, dtype=np.float32, fan_in=None):
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    n_in, n_out = fans(shape)
    return truncated_normal(shape, rng, math.sqrt(2.0 / (n_in + n_out)), dtype)


def he_uniform(shape, rng, dtype=np.float32, fan_in=None):
    """Uniform in [-limit, limit], limit = sqrt(6 / fan_in) (He et al. 2015): Var = 2 / fan_in.

    Made for ReLU networks, which zero half their inputs: twice the variance of LeCun's.
    """
    return uniform(shape, rng, math.sqrt(6.0 / fans(shape)[0]), dtype)


def he_normal(shape, rng, dtype=np.float32, fan_in=None):
    """Truncated normal with stddev sqrt(2 / fan_in) (He et al. 2015)."""
    return truncated_normal(shape, rng, math.sqrt(2.0 / fans(shape)[0]), dtype)


def lecun_uniform(shape, rng, dtype=np.float32, fan_in=None):
    """Uniform in [-limit, limit], limit = sqrt(3 / fan_in) (LeCun et al. 1998): Var = 1 / fan_in."""
    return uniform(shape, rng, math.sqrt(3.0 / fans(shape)[0]), dtype)


def lecun_normal(shape, rng, dtype=np.float32, fan_in=None):
    """Truncated normal with stddev sqrt(1 / fan_in) (LeCun et al. 1998)."""
    return truncated_normal(shape, rng, math.sqrt(1.0 / fans(shape)[0]), dtype)


def zeros(shape, rng=None, dtype=np.float32, fan_in=None):
    """All zeros: Keras's default bias."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, rng=None, dtype=np.float32, fan_in=None):
    """All ones."""
    return np.ones(shape, dtype=dtype)


# -- PyTorch's ----------------------------------------------------------------------------------

def torch_default(shape, rng, dtype=np.float32, fan_in=None):
    """PyTorch's default for ``nn.Conv2d`` and ``nn.Linear``, weight and bias alike: uniform in
    [-b, b] with b = 1 / sqrt(fan_in), fan_in being the layer's (its kernel's; computed from
    ``shape`` when not given, which is right for a kernel).

    The weight: PyTorch calls ``kaiming_uniform_(w, a=sqrt(5))``, whose bound is
    gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a²)) = sqrt(1/3), so b = 1 / sqrt(fan_in).
    The bias: PyTorch draws it from the same bound, 1 / sqrt(fan_in) of the weight. Var = 1 / (3 fan_in),
    a third of LeCun's. (PyTorch lays a Conv2d weight out (F, C, KH, KW) and Keras (KH, KW, C, F);
    the fan-in, KH*KW*C, is the same.)
    """
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    return uniform(shape, rng, 1.0 / math.sqrt(fan_in), dtype)


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_uniform,
                                         lecun_normal, zeros, ones, torch_default)}


def get(name):
    """Look up an initializer by name, with a clear error for an unknown one; a function is
    returned as it is (it must take the arguments above)."""
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}") from None
