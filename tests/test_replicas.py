"""Thread copies of a layer (``parallel.replica``) share its parameters and nothing else.

``fit`` splits a batch over threads, and each thread runs its share through copies of the
model's layers (``tinycnn/parallel.py``). The copies must share the parameter arrays, so that one
optimizer step updates every thread's weights, and must share nothing that a forward or backward
pass writes: a layer remembers what its backward needs (Conv2D's columns, ReLU's mask, the
argmax of a max-pool), and two threads writing one such cache would race.

Checked for every layer that may be split over threads (``per_sample``), with every activation
inside Dense and Conv2D: the structure (which attributes are the same objects), and the
behaviour (two copies interleaved as two threads may run them give what each gives alone).
"""

import copy

import numpy as np
import pytest

from tinycnn import Sequential, layers
from tinycnn.layers import (LAYERS, AveragePooling2D, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
                            LeakyReLU, MaxPool2D, ReLU, Reshape, Sigmoid, Softmax, Tanh)
from tinycnn.optimizers import SGD
from tinycnn.parallel import DataParallel, replica

ACTIVATIONS = [None, "relu", "leaky_relu", "sigmoid", "tanh", "softmax"]

#: (label, a function making the layer, the shape of one sample)
CASES = ([(f"Dense-{a}", lambda a=a: Dense(5, activation=a), (6,)) for a in ACTIVATIONS]
         + [(f"Conv2D-{a}", lambda a=a: Conv2D(3, 3, padding="same", activation=a), (5, 5, 2)) for a in ACTIVATIONS]
         + [("Conv2D-LeakyReLU(0.05)", lambda: Conv2D(3, 2, activation=LeakyReLU(0.05)), (5, 5, 2)),
            ("ReLU", ReLU, (6,)), ("LeakyReLU", lambda: LeakyReLU(0.2), (6,)), ("Sigmoid", Sigmoid, (6,)),
            ("Tanh", Tanh, (6,)), ("Softmax", Softmax, (6,)),
            ("MaxPool2D", lambda: MaxPool2D(2), (4, 4, 2)),
            ("MaxPool2D-overlapping", lambda: MaxPool2D(3, strides=1, padding="same"), (4, 4, 2)),
            ("Flatten", Flatten, (3, 3, 2)), ("Reshape", lambda: Reshape((9, 2)), (3, 3, 2)),
            ("AveragePooling2D", lambda: AveragePooling2D(2), (4, 4, 2)),
            ("AveragePooling2D-overlapping", lambda: AveragePooling2D(3, strides=1, padding="same"), (4, 4, 2)),
            ("GlobalAveragePooling2D", GlobalAveragePooling2D, (4, 4, 2))]
         # Dropout splits over threads once each sample's mask is drawn on its own (per_sample)
         + ([("Dropout", lambda: Dropout(0.5, seed=0), (6,))] if Dropout.per_sample else []))


def built(make, shape):
    layer = make()
    layer.build(shape, "float64")
    return layer


def test_every_layer_that_threads_may_copy_is_checked_here():
    """A new per-sample layer of tinycnn's must join CASES."""
    checked = {type(make()) for _, make, _ in CASES}
    splittable = {cls for cls in LAYERS.values() if cls.per_sample and cls.__module__.startswith("tinycnn.layers")
                  and cls is not layers.Activation}
    assert splittable <= checked, f"add to CASES: {sorted(c.__name__ for c in splittable - checked)}"


@pytest.mark.parametrize("label, make, shape", CASES, ids=[c[0] for c in CASES])
def test_a_replica_shares_the_parameter_arrays(label, make, shape):
    layer = built(make, shape)
    twin = replica(layer)
    assert twin.params.keys() == layer.params.keys() and twin.state.keys() == layer.state.keys()
    for k in layer.params:
        assert twin.params[k] is layer.params[k]
        layer.params[k] += 1.0                           # an optimizer step, in place
        assert np.array_equal(twin.params[k], layer.params[k])
    for k in layer.state:
        assert twin.state[k] is layer.state[k]


@pytest.mark.parametrize("label, make, shape", CASES, ids=[c[0] for c in CASES])
def test_a_pass_through_a_replica_leaves_the_original_untouched(label, make, shape):
    """Everything the original holds, followed through its attributes (an activation's too),
    dicts and arrays (compared by value): a forward and backward pass of the copy changes none
    of it. Only the parameters are shared, and a pass does not write them."""
    rng = np.random.default_rng(1)
    layer = built(make, shape)
    layer.forward(rng.standard_normal((2, *shape)), training=True)     # caches exist, as in fit
    layer.backward(rng.standard_normal((2, *layer.output_shape(shape))))
    before = _snapshot(layer)
    twin = replica(layer)
    twin.forward(rng.standard_normal((3, *shape)), training=True)
    twin.backward(rng.standard_normal((3, *layer.output_shape(shape))))
    _assert_same(before, _snapshot(layer), label)


def _snapshot(obj, seen=None):
    """A copy of everything reachable from ``obj`` through layers' attributes, dicts and lists;
    arrays and random generators by value, other objects by identity."""
    seen = set() if seen is None else seen
    if isinstance(obj, np.ndarray):
        return ("array", id(obj), obj.copy())
    if isinstance(obj, np.random.Generator):
        return ("generator", id(obj), obj.bit_generator.state)
    if id(obj) in seen:
        return ("seen", id(obj))
    if isinstance(obj, layers.Layer):
        seen.add(id(obj))
        return ("layer", id(obj), {k: _snapshot(v, seen) for k, v in vars(obj).items()})
    if isinstance(obj, dict):
        seen.add(id(obj))
        return ("dict", id(obj), {k: _snapshot(v, seen) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, id(obj), [_snapshot(v, seen) for v in obj])
    return ("object", id(obj))


def _assert_same(a, b, where):
    assert a[:2] == b[:2], f"{where} is now another object ({a[0]})"
    if a[0] == "array":
        np.testing.assert_array_equal(a[2], b[2], err_msg=f"{where} was written")
    elif a[0] == "generator":
        assert a[2] == b[2], f"{where} drew numbers"
    elif a[0] in ("layer", "dict"):
        assert a[2].keys() == b[2].keys(), f"{where} gained or lost {set(a[2]) ^ set(b[2])}"
        for k in a[2]:
            _assert_same(a[2][k], b[2][k], f"{where}.{k}")
    elif a[0] in ("list", "tuple"):
        assert len(a[2]) == len(b[2]), f"{where} changed length"
        for i, (x, y) in enumerate(zip(a[2], b[2])):
            _assert_same(x, y, f"{where}[{i}]")


@pytest.mark.parametrize("label, make, shape", CASES, ids=[c[0] for c in CASES])
def test_two_copies_interleaved_give_what_each_gives_alone(label, make, shape):
    """Both forwards, then both backwards: the order two threads may run them in. Each copy's
    dx and gradients must be those it computes on its own."""
    rng = np.random.default_rng(0)
    layer = built(make, shape)
    x1, x2 = rng.standard_normal((3, *shape)), rng.standard_normal((4, *shape)) - 0.5
    y_shape = layer.output_shape(shape)
    d1, d2 = rng.standard_normal((3, *y_shape)), rng.standard_normal((4, *y_shape))

    def alone(x, d):
        """What a copy of the layer as it is now computes on its own."""
        own = copy.deepcopy(layer)
        y = own.forward(x, training=True)
        dx = own.backward(d)
        return y, dx, {k: g.copy() for k, g in own.grads.items()}

    layer.forward(x1, training=True)        # caches exist, as in fit, where copies are made
    layer.backward(d1)
    expected = [alone(x1, d1), alone(x2, d2)]
    twin = replica(layer)
    ys = [layer.forward(x1, training=True), twin.forward(x2, training=True)]
    dxs = [layer.backward(d1), twin.backward(d2)]
    for each, y, dx, (y_alone, dx_alone, grads_alone) in zip((layer, twin), ys, dxs, expected):
        np.testing.assert_array_equal(y, y_alone)
        np.testing.assert_array_equal(dx, dx_alone)
        assert each.grads.keys() == grads_alone.keys()
        for k in grads_alone:
            np.testing.assert_array_equal(each.grads[k], grads_alone[k])


def test_data_parallel_threads_run_copies_sharing_only_the_parameters():
    model = Sequential([Conv2D(4, 3, activation="tanh"), MaxPool2D(2), Conv2D(4, 3, activation="relu"),
                        MaxPool2D(2), Flatten(), Dense(3, activation="softmax")], input_shape=(14, 14, 1))
    model.compile(SGD(0.1))
    parallel = DataParallel(model, 3)
    copies = [[step for step in plan.steps] for plan in parallel.plans]
    assert len(copies) == 3
    for k in (1, 2):
        for mine, theirs in zip(copies[0], copies[k]):
            assert mine is not theirs
            for name in mine.params:
                assert theirs.params[name] is mine.params[name]
            assert theirs.grads is not mine.grads or not mine.params
    for k, grads in enumerate(parallel.grads_of):
        for j in range(k):
            assert all(a is not b for a, b in zip(grads, parallel.grads_of[j]))
