"""Every array a model file stores is checked against the shape it must fill, custom layers too.

A stored weight of the wrong shape must never load: NumPy would broadcast a (1,) or a (3, 1, 1)
array into a (3, 3, 1) weight, and the model would run with weights nobody trained. The built-in
layers' shapes are planned from the architecture before the model is built
(``serialization.planned_weight_shapes``); a layer of the user's own is built first and then
checked; the optimizer's state is checked against its parameter. Here every array of a
saved model -- weights, non-trainable state and optimizer slots, of built-in and custom layers
-- is replaced in turn by arrays of the same dtype and other shapes, and each file is refused.
"""

import numpy as np
import pytest

from tinycnn import Sequential, load_model
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, Layer
from tinycnn.serialization import ModelFileError


class PixelScale(Layer):
    """A layer of the user's own: multiplies every pixel by a weight of its own, (H, W, C), and
    counts the batches it has seen in a state array."""

    per_sample = True

    def build(self, input_shape, dtype="float32", rng=None):
        super().build(input_shape, dtype)
        self.params = {"scale": np.linspace(0.5, 1.5, np.prod(input_shape)).reshape(input_shape).astype(self.dtype)}
        self.state = {"seen": np.zeros(2, dtype=self.dtype)}

    def forward(self, x, training=False):
        self._prepare(x)
        self.x = x
        if training:
            self.state["seen"] += 1
        return x * self.params["scale"]

    def backward(self, dout):
        self.grads["scale"] = (dout * self.x).sum(axis=0)
        return dout * self.params["scale"]


def trained_model():
    model = Sequential([PixelScale(), Conv2D(2, 2), BatchNormalization(), Flatten(),
                        Dense(3, activation="softmax")], input_shape=(3, 3, 1), seed=0)
    model.compile("adam")
    rng = np.random.default_rng(0)
    model.fit(rng.random((6, 3, 3, 1), dtype=np.float32), np.arange(6) % 3, epochs=1, batch_size=3,
              verbose=0, threads=1)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(the path of a saved model, its arrays by name)."""
    path = tmp_path_factory.mktemp("saved") / "model.npz"
    trained_model().save(path)
    with np.load(path, allow_pickle=False) as f:
        return path, {k: f[k] for k in f.files}


def wrong_shapes(shape):
    """Arrays shapes that are not ``shape``: one that broadcasts into it, the same values in
    another shape, one value more, one fewer."""
    size = int(np.prod(shape))
    candidates = [(1,), (size,), (1, *shape), tuple(reversed(shape)), (size + 1,), (max(size - 1, 0),)]
    if len(shape) >= 2:
        candidates.append(shape[:-1])
    seen, out = set(), []
    for c in candidates:
        if c != tuple(shape) and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def stored_arrays():
    """The names of the weights, state and Adam slots the saved model holds (p/, s/, o/)."""
    model = trained_model()
    return sorted([f"p/{i}/{k}" for i, layer in enumerate(model.layers) for k in layer.params]
                  + [f"s/{i}/{k}" for i, layer in enumerate(model.layers) for k in layer.state]
                  + [f"o/{i}/{k}/{slot}" for i, layer in enumerate(model.layers) for k in layer.params
                     for slot in ("m", "v")])


KEYS = stored_arrays()


def test_every_array_the_file_holds_is_checked_here(saved):
    _, arrays = saved
    assert set(KEYS) == {k for k in arrays if k[:2] in ("p/", "s/", "o/")}
    assert {"p/0/scale", "s/0/seen", "o/0/scale/m", "p/1/kernel", "s/2/moving_mean"} <= set(KEYS)


def test_the_file_loads_as_it_was_saved(saved):
    path, arrays = saved
    model = load_model(path)
    for i, layer in enumerate(model.layers):
        for k, a in layer.params.items():
            np.testing.assert_array_equal(a, arrays[f"p/{i}/{k}"])
        for k, a in layer.state.items():
            np.testing.assert_array_equal(a, arrays[f"s/{i}/{k}"])


@pytest.mark.parametrize("key", KEYS)
def test_an_array_of_another_shape_is_refused(saved, tmp_path, key):
    _, arrays = saved
    shape = arrays[key].shape
    for wrong in wrong_shapes(shape):
        values = np.resize(arrays[key], wrong).astype(arrays[key].dtype)     # the same dtype
        path = tmp_path / f"{'x'.join(map(str, wrong)) or 'scalar'}.npz"
        np.savez(path, **{**arrays, key: values})
        with pytest.raises(ModelFileError) as err:
            load_model(path)
        assert str(path) in str(err.value), err.value
