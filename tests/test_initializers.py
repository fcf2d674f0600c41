"""Initializers by name (``tinycnn/initializers.py``) against their formulas, and in the layers.

Each random initializer is drawn large (about 10^5 values), and its mean, variance and limits
compared with the formula in its docstring. The tolerances are statistical: the sample variance of
n values has a relative standard error of about sqrt(2 / n) (normal) or sqrt(0.8 / n) (uniform),
0.4% here, and each test allows 5%. PyTorch's default is also compared with PyTorch itself when
torch is installed.
"""

import json
import math

import numpy as np
import pytest

from tinycnn import Sequential, initializers, load_model
from tinycnn.layers import Conv2D, Dense, Flatten

CONV = (3, 3, 64, 96)          # fan_in 576, fan_out 864, 55,296 values
DENSE = (400, 300)             # fan_in 400, fan_out 300, 120,000 values

#: name -> (distribution, variance from (fan_in, fan_out))
VARIANCE_SCALING = {
    "glorot_uniform": ("uniform", lambda i, o: 2.0 / (i + o)),
    "glorot_normal": ("normal", lambda i, o: 2.0 / (i + o)),
    "he_uniform": ("uniform", lambda i, o: 2.0 / i),
    "he_normal": ("normal", lambda i, o: 2.0 / i),
    "lecun_uniform": ("uniform", lambda i, o: 1.0 / i),
    "lecun_normal": ("normal", lambda i, o: 1.0 / i),
    "torch_default": ("uniform", lambda i, o: 1.0 / (3.0 * i)),
}


def test_fans_as_keras_computes_them():
    assert initializers.fans((3, 3, 64, 96)) == (576, 864)
    assert initializers.fans((5, 3, 2, 7)) == (30, 105)         # KH*KW*C, KH*KW*F
    assert initializers.fans((400, 300)) == (400, 300)
    assert initializers.fans((10,)) == (10, 10)
    assert initializers.fans(()) == (1, 1)


@pytest.mark.parametrize("shape", [CONV, DENSE])
@pytest.mark.parametrize("name", sorted(VARIANCE_SCALING))
def test_variance_scaling_initializers_follow_their_formulas(name, shape):
    kind, variance = VARIANCE_SCALING[name]
    fan_in, fan_out = initializers.fans(shape)
    w = initializers.get(name)(shape, np.random.default_rng(0), np.float64)
    assert w.shape == shape and w.dtype == np.float64
    std = math.sqrt(variance(fan_in, fan_out))
    assert abs(w.mean()) < 5 * std / math.sqrt(w.size)           # 5 standard errors of the mean
    assert w.var() == pytest.approx(std ** 2, rel=0.05)
    if kind == "uniform":                                       # U(-limit, limit): Var = limit² / 3
        limit = math.sqrt(3.0) * std
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.999 * limit
        # flat: each tenth of [-limit, limit] holds a tenth of the values
        counts, _ = np.histogram(w, bins=10, range=(-limit, limit))
        np.testing.assert_allclose(counts / w.size, 0.1, atol=0.01)
    else:                                                       # truncated at 2 / 0.8796 stddevs
        limit = 2.0 * std / initializers.TRUNCATED_STDDEV
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit


def test_truncated_normal_keeps_the_variance_it_is_asked_for():
    w = initializers.truncated_normal((300_000,), np.random.default_rng(1), 0.5, np.float64)
    assert w.std() == pytest.approx(0.5, rel=0.01)
    assert np.abs(w).max() <= 2 * 0.5 / initializers.TRUNCATED_STDDEV


def test_zeros_and_ones():
    np.testing.assert_array_equal(initializers.get("zeros")((3, 2), None, np.float32), np.zeros((3, 2)))
    ones = initializers.get("ones")((4,), None, np.float64)
    assert ones.dtype == np.float64 and (ones == 1).all()


def test_torch_default_bias_takes_the_kernels_fan_in():
    """A bias (F,) has no fan-in of its own: given the kernel's, its bound is 1 / sqrt(that)."""
    bias = initializers.torch_default((100_000,), np.random.default_rng(0), np.float64, fan_in=25)
    assert np.abs(bias).max() <= 0.2 and np.abs(bias).max() > 0.1999
    assert bias.var() == pytest.approx(0.2 ** 2 / 3, rel=0.05)


def test_unknown_names_are_refused_at_construction():
    with pytest.raises(ValueError, match="Unknown initializer 'glorot'.*torch_default"):
        Dense(3, kernel_initializer="glorot")
    with pytest.raises(ValueError, match="Unknown initializer 'zero'"):
        Conv2D(3, 3, bias_initializer="zero")


def pytorch_bound(fan_in):
    """PyTorch's own arithmetic (torch.nn.modules.conv._ConvNd.reset_parameters and Linear's):
    kaiming_uniform_(a=sqrt(5)) is U(-bound, bound) with bound = sqrt(3) * gain / sqrt(fan_in),
    gain = sqrt(2 / (1 + a²)); the bias is U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    return math.sqrt(3.0) * gain / math.sqrt(fan_in), 1 / math.sqrt(fan_in)


@pytest.mark.parametrize("layer, input_shape, fan_in", [
    (Conv2D(32, 3, kernel_initializer="torch_default", bias_initializer="torch_default"), (28, 28, 1), 9),
    (Conv2D(64, 3, kernel_initializer="torch_default", bias_initializer="torch_default"), (13, 13, 32), 288),
    (Dense(128, kernel_initializer="torch_default", bias_initializer="torch_default"), (1600,), 1600),
    (Dense(10, kernel_initializer="torch_default", bias_initializer="torch_default"), (128,), 128),
])
def test_a_layer_with_torch_default_has_pytorchs_bounds(layer, input_shape, fan_in):
    """The bn-dropout network's four layers as PyTorch starts them: every kernel and bias value
    within PyTorch's bound, the kernel's values filling it."""
    layer.build(input_shape, "float64", np.random.default_rng(0))
    kernel_bound, bias_bound = pytorch_bound(fan_in)
    assert kernel_bound == pytest.approx(1 / math.sqrt(fan_in), rel=1e-15)
    kernel, bias = layer.params["kernel"], layer.params["bias"]
    assert np.abs(kernel).max() <= kernel_bound and np.abs(bias).max() <= bias_bound
    assert np.abs(kernel).max() > 0.95 * kernel_bound
    assert np.abs(bias).max() > 0.5 * bias_bound and len(np.unique(bias)) == len(bias)    # drawn, not zeros


def test_torch_default_against_pytorch_itself():
    """The same layers made by PyTorch: the same bounds, and the same spread (the standard
    deviations of ~200,000 kernel values agree to 1%)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Linear(1600, 128)
    ours = Dense(128, kernel_initializer="torch_default", bias_initializer="torch_default", seed=0)
    ours.build((1600,), "float32")
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    assert fan_in == initializers.fans(ours.params["kernel"].shape)[0] == 1600
    w = theirs.weight.detach().numpy()
    assert np.abs(w).max() <= 1 / 40 and np.abs(ours.params["kernel"]).max() <= 1 / 40
    assert ours.params["kernel"].std() == pytest.approx(w.std(), rel=0.01)
    assert np.abs(theirs.bias.detach().numpy()).max() <= 1 / 40
    conv = torch.nn.Conv2d(32, 64, 3)                         # PyTorch's (F, C, KH, KW) layout
    assert torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)[0] == initializers.fans((3, 3, 32, 64))[0]


def test_keras_initializers_on_a_bias_use_the_bias_shape():
    """As Keras: an array of one axis (F,) has fan_in = fan_out = F, whatever the kernel's."""
    layer = Dense(50_000, bias_initializer="glorot_uniform")
    layer.build((3,), "float64", np.random.default_rng(0))
    limit = math.sqrt(6.0 / (50_000 + 50_000))
    assert np.abs(layer.params["bias"]).max() <= limit and np.abs(layer.params["bias"]).max() > 0.99 * limit


def test_the_defaults_are_unchanged():
    """Glorot-uniform kernels and zero biases, the kernel drawn first from the layer's generator:
    a seeded model starts from the same weights as before bias_initializer existed."""
    layer = Conv2D(8, 3, seed=5)
    layer.build((6, 6, 2), "float32")
    expected = np.random.default_rng(5).uniform(-math.sqrt(6 / (18 + 72)), math.sqrt(6 / (18 + 72)), (3, 3, 2, 8))
    np.testing.assert_array_equal(layer.params["kernel"], expected.astype(np.float32))
    assert not layer.params["bias"].any()


def test_both_initializers_are_saved_with_the_model(tmp_path):
    model = Sequential([Conv2D(4, 3, kernel_initializer="he_uniform", bias_initializer="torch_default"), Flatten(),
                        Dense(3, kernel_initializer="torch_default", bias_initializer="ones")],
                       input_shape=(6, 6, 1), seed=0)
    configs = [layer.get_config() for layer in model.layers]
    assert (configs[0]["kernel_initializer"], configs[0]["bias_initializer"]) == ("he_uniform", "torch_default")
    assert (configs[2]["kernel_initializer"], configs[2]["bias_initializer"]) == ("torch_default", "ones")
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [layer.get_config() for layer in loaded.layers] == json.loads(json.dumps(configs))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_config_saved_before_bias_initializer_loads_with_zeros():
    config = {"name": "d", "units": 3, "activation": None, "kernel_initializer": "glorot_uniform"}
    layer = Dense.from_config(config)
    assert layer.bias_initializer == "zeros"
    layer.build((4,), "float32")
    assert not layer.params["bias"].any()


def test_same_seed_same_torch_default_weights():
    def weights(seed):
        layer = Dense(5, kernel_initializer="torch_default", bias_initializer="torch_default", seed=seed)
        layer.build((7,), "float32")
        return layer.params["kernel"], layer.params["bias"]

    for a, b in zip(weights(3), weights(3)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights(3)[1], weights(4)[1])
