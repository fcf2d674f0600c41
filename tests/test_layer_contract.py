"""The layer contract (tinycnn/layers/base.py) is checked where a learner breaks it.

Each test writes a layer of one's own with one realistic mistake, and shows that training it,
checking it with ``check_layer`` or saving it fails at once with an error that names the layer,
the array and the rule -- where before it trained silently on garbage, read past the end of an
array, or blamed the next layer.
"""

import warnings

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.gradcheck import check_layer
from tinycnn.layers import Dense, Flatten, Layer
from tinycnn.optimizers import SGD, Adam


class PerFeatureScale(Layer):
    """y = x * w, one weight per feature: a small correct layer the mistakes below start from."""

    per_sample = True

    def build(self, input_shape, dtype="float32", rng=None):
        super().build(input_shape, dtype)
        self.params = {"w": np.ones(input_shape, dtype=self.dtype)}

    def forward(self, x, training=False):
        self._prepare(x)
        self.x = x
        return x * self.params["w"]

    def backward(self, dout):
        self.grads["w"] = (dout * self.x).sum(axis=0)
        return dout * self.params["w"]


class SummedOverTooManyAxes(PerFeatureScale):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["w"] = (dout * self.x).sum(axis=(0, 1))       # (5,) for a (6, 5) parameter
        return dx


class MisspeltKey(PerFeatureScale):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads = {"W": self.grads["w"]}
        return dx


class WrongDx(PerFeatureScale):
    def backward(self, dout):
        super().backward(dout)
        return dout[:, ::2]                                        # half the features


class FlattensWithoutOutputShape(Layer):
    """Flattens in forward, but forgot output_shape: the base class says the shape is kept."""

    per_sample = True

    def forward(self, x, training=False):
        self._prepare(x)
        return x.reshape(len(x), -1)

    def backward(self, dout):
        return dout.reshape((len(dout),) + self.input_shape)


class WrongOutputShape(FlattensWithoutOutputShape):
    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)) + 1,)


def data(shape=(6, 5), n=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 3, n)


def model_with(layer, shape=(6, 5), optimizer=None, fast=True):
    model = Sequential([layer, Flatten(), Dense(3)], input_shape=shape, seed=0)
    model.compile(optimizer or Adam(1e-3), fast=fast)
    return model


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_gradient_of_the_wrong_shape_is_named_before_the_optimizer_reads_it(fast, threads):
    x, y = data()
    model = model_with(SummedOverTooManyAxes(name="scale"), fast=fast)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"scale: grads\['w'\] has shape \(5,\).*params\['w'\] has shape \(6, 5\)"):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, threads=threads)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))     # nothing written


@pytest.mark.parametrize("optimizer", [Adam(1e-3), SGD(0.1, momentum=0.9), SGD(0.1)])
def test_every_optimizer_checks_gradients_every_step(optimizer):
    """The contract check of fit runs on the first step; the optimizer's runs on every step, so
    a layer that goes wrong later is caught too, before any array is read past its end."""
    model = model_with(PerFeatureScale(name="scale"), optimizer=optimizer)
    layer = model.layers[0]
    layer.grads = {"w": np.zeros(4, np.float32)}
    model.layers[2].grads = {k: np.zeros_like(p) for k, p in model.layers[2].params.items()}
    with pytest.raises(ValueError, match=r"scale: grads\['w'\] has shape \(4,\)"):
        optimizer.step([layer, model.layers[2]])
    layer.grads = {"w": np.zeros((6, 5), np.float64)}
    with pytest.raises(ValueError, match=r"dtype float64.*dtype float32"):
        optimizer.step([layer])


def test_a_misspelt_gradient_key_names_the_layer_and_the_rule():
    x, y = data()
    model = model_with(MisspeltKey(name="scale"))
    with pytest.raises(ValueError, match=r"scale: backward must fill grads with exactly the keys of params "
                                         r"\(\['w'\]\); missing \['w'\]; not parameters: \['W'\]"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="exactly the keys of params"):
        check_layer(MisspeltKey(name="scale"), x.astype(np.float64))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_a_dx_of_the_wrong_shape_is_named_at_the_layer_that_returned_it(fast):
    x, y = data()
    model = Sequential([Dense(5), WrongDx(name="wrong_dx"), Dense(3)], input_shape=(5,), seed=0)
    model.compile(Adam(), fast=fast)
    with pytest.raises(ValueError, match=r"wrong_dx: backward returned dx of shape \(\d+, 3\), but its input x "
                                         r"had shape \(\d+, 5\)"):
        model.fit(x[:, 0], y, epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"wrong_dx: backward returned dx of shape \(4, 3\)"):
        check_layer(WrongDx(name="wrong_dx"), np.ones((4, 5)))


def test_a_forgotten_output_shape_is_named_when_the_model_is_built():
    """Without the check, Dense would be built for (6, 5) and say 'put a Flatten() before it'."""
    with pytest.raises(ValueError, match=r"flat: forward returned shape \(1, 30\) for input \(1, 6, 5\), but "
                                         r"output_shape\(6, 5\) says \(6, 5\)"):
        Sequential([FlattensWithoutOutputShape(name="flat"), Dense(3)], input_shape=(6, 5))
    model = Sequential([PerFeatureScale()], input_shape=(6, 5))        # add() to a built model checks too
    with pytest.raises(ValueError, match=r"flat: forward returned shape \(1, 30\)"):
        model.add(FlattensWithoutOutputShape(name="flat"))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_a_wrong_output_shape_is_named_on_the_first_step(fast):
    x, y = data()
    model = Sequential([WrongOutputShape(name="flat"), Dense(3)], seed=0)
    model.compile(Adam(), fast=fast)
    with pytest.raises(ValueError, match=r"flat: forward returned shape \(\d+, 30\).*says \(31,\)"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"flat: forward returned shape"):
        check_layer(WrongOutputShape(name="flat"), np.ones((2, 6, 5)))


def test_the_correct_layer_passes_every_check():
    x, y = data()
    errors = check_layer(PerFeatureScale(), x.astype(np.float64))
    assert max(errors.values()) < 1e-6
    for fast in (True, False):
        model = model_with(PerFeatureScale(name="scale"), fast=fast)
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, threads=1)


class SizedPool(Layer):
    """Stores its argument under another name: get_config must still return it."""

    def __init__(self, size=2, name=None):
        super().__init__(name=name)
        self.pool_size = (size, size)

    def forward(self, x, training=False):
        return x

    def backward(self, dout):
        return dout


class SizedPoolWithConfig(SizedPool):
    def get_config(self):
        return {"name": self.name, "size": self.pool_size[0]}


def test_a_config_that_would_not_rebuild_the_layer_is_refused_at_save(tmp_path):
    model = Sequential([SizedPool(size=3)], input_shape=(4,))
    with pytest.raises(ValueError, match=r"pool: SizedPool.get_config\(\) does not rebuild the layer as it is: its "
                                         r"attribute 'pool_size' is \(3, 3\) here and \(2, 2\) after loading"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    Sequential([SizedPoolWithConfig(size=3)], input_shape=(4,)).save(tmp_path / "ok.npz")


def test_a_layer_without_per_sample_says_once_that_fit_runs_in_one_thread():
    class Unsplit(PerFeatureScale):
        per_sample = False

    x, y = data()
    model = model_with(Unsplit(name="unsplit"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            model.fit(x, y, epochs=1, batch_size=8, verbose=0, threads=2)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "layer 'unsplit' (Unsplit) has per_sample = False" in messages[0]
    assert messages[0].startswith("fit trains in one thread, not 2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, threads=1)        # asked for: no word
        model_with(PerFeatureScale(name="scale")).fit(x, y, epochs=1, batch_size=8, verbose=0, threads=2)
