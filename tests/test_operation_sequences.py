"""Random sequences of what careless users do to models, driven by hypothesis.

The operations: build a model, fit it, share its optimizer with another, reuse one of its layers,
save and load it, copy weights between models, change its layers (pop and add), fit again. After
every step, no model may be left whose ``predict`` and ``evaluate`` disagree, and the process
must still be alive (a crash of the interpreter ends the test run). Misuse must be refused with a
clear error (ValueError), never half done.
"""

import gc
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tinycnn import Sequential, load_model
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D
from tinycnn.optimizers import SGD, Adam

SHAPE = (6, 6, 1)
RNG = np.random.default_rng(0)
X = RNG.random((12, *SHAPE), dtype=np.float32)
Y = RNG.integers(0, 3, 12)


def new_layers(kind):
    if kind == "conv":
        return [Conv2D(2, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3, activation="softmax")]
    return [Flatten(), Dense(4, activation="relu"), Dense(3, activation="softmax")]


class ModelOperations(RuleBasedStateMachine):
    models = Bundle("models")

    def __init__(self):
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.live = []
        self.saved = 0

    def teardown(self):
        self.folder.cleanup()

    @rule(target=models, kind=st.sampled_from(["conv", "dense"]), optimizer=st.sampled_from(["adam", "sgd"]),
          fast=st.booleans(), seed=st.integers(0, 3))
    def build(self, kind, optimizer, fast, seed):
        model = Sequential(new_layers(kind), input_shape=SHAPE, seed=seed)
        model.compile(Adam(1e-2) if optimizer == "adam" else SGD(0.1, momentum=0.9), fast=fast)
        self.live.append(model)
        return model

    @rule(model=models, threads=st.sampled_from([1, 2]))
    def fit(self, model, threads):
        model.fit(X, Y, epochs=1, batch_size=5, verbose=0, seed=0, threads=threads)

    @rule(a=models, b=models)
    def share_optimizer(self, a, b):
        if a is b:
            b.compile(a.optimizer, fast=a.fast)
            return
        before = b.optimizer
        with pytest.raises(ValueError, match="already belongs to"):
            b.compile(a.optimizer)
        assert b.optimizer is before

    @rule(a=models, kind=st.sampled_from(["conv", "dense"]))
    def reuse_layer(self, a, kind):
        weights = a.get_weights()
        with pytest.raises(ValueError, match="already belongs to"):
            Sequential([a.layers[-1]])
        with pytest.raises(ValueError, match="already in this model"):
            Sequential(new_layers(kind) + [new_layers(kind)[-1]] * 2)
        assert all(np.array_equal(u, v) for u, v in zip(weights, a.get_weights()))

    @rule(target=models, model=models)
    def save_and_load(self, model):
        self.saved += 1
        path = f"{self.folder.name}/m{self.saved}.npz"
        model.save(path)
        loaded = load_model(path)          # in the fast mode, whatever the model's: rounding may differ
        np.testing.assert_allclose(model.predict(X), loaded.predict(X), rtol=1e-5, atol=1e-7)
        self.live.append(loaded)
        return loaded

    @rule(a=models, b=models)
    def copy_weights(self, a, b):
        same = [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
        before = b.get_weights()
        if same:
            b.set_weights(a.get_weights())
            return
        with pytest.raises(ValueError, match="Expected|expected shape"):
            b.set_weights(a.get_weights())
        assert all(np.array_equal(u, v) for u, v in zip(before, b.get_weights()))

    @rule(model=models, units=st.sampled_from([3, 5]))
    def change_layers(self, model, units):
        model.pop()
        model.add(Dense(units, activation="softmax"))
        if units != 3:                       # labels in [0, 3) still fit 5 classes
            assert model.output_shape == (5,)

    @rule(model=consumes(models))
    def forget(self, model):
        self.live = [m for m in self.live if m is not model]
        del model
        gc.collect()

    @invariant()
    def predict_and_evaluate_agree(self):
        for model in self.live:
            if model.loss is None or not model.built:
                continue
            probs = model.predict(X)
            loss, accuracy = model.evaluate(X, Y)
            expected_loss = float(-np.log(probs[np.arange(len(Y)), Y]).mean())
            assert loss == pytest.approx(expected_loss, rel=1e-4, abs=1e-5)
            assert accuracy == pytest.approx(float((probs.argmax(axis=1) == Y).mean()))


TestModelOperations = ModelOperations.TestCase
TestModelOperations.settings = settings(max_examples=15, stateful_step_count=10, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
