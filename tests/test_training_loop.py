"""What ``fit`` and ``evaluate`` promise about the data they go through.

- Shuffling: ``shuffle=True`` shows every sample once per epoch, in a new order each epoch;
  ``shuffle=False`` keeps the order of x; ``seed`` fixes the order, and other seeds give other
  orders; without ``seed`` a seeded model shuffles the same way on every run.
- Means: the loss and accuracy that ``evaluate`` returns, and that ``fit`` logs after each batch
  and each epoch, are exact means over the samples seen, for any number of samples and any batch
  size: a last batch smaller than the others weighs what its samples weigh, no more.

The batches fit trains on are observed by a layer that records the ids of the samples passing
through it (the input is each sample's id). The means are checked with a learning rate of 0 (a
schedule may give 0), so the weights never move and every batch's loss is that of the one model
whose per-sample losses ``predict`` gives.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn import Sequential
from tinycnn.callbacks import Callback
from tinycnn.layers import Dense, Layer
from tinycnn.optimizers import SGD
from tinycnn.schedules import LearningRateSchedule


class SampleIdRecorder(Layer):
    """Passes its input through, and records x[:, 0] (the sample ids) of every training batch."""

    per_sample = True

    def __init__(self, name=None):
        super().__init__(name=name)
        self.batches = []

    def forward(self, x, training=False):
        self._prepare(x)
        if training:
            self.batches.append(x[:, 0].astype(int).tolist())
        return x

    def backward(self, dout):
        return dout


def recorded_fit(n=50, epochs=2, batch_size=8, model_seed=0, threads=1, **fit_args):
    """The sample ids of every epoch, in the order fit trained on them, and the batches' sizes."""
    recorder = SampleIdRecorder()
    model = Sequential([recorder, Dense(3, activation="softmax")], input_shape=(1,), seed=model_seed)
    model.compile(SGD(0.01))
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.arange(n) % 3
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, threads=threads, **fit_args)
    n_train = int(n * (1.0 - fit_args.get("validation_split", 0.0)))     # as fit holds out
    steps = -(-n_train // batch_size)
    assert len(recorder.batches) == epochs * steps
    epochs_seen = [sum(recorder.batches[e * steps:(e + 1) * steps], []) for e in range(epochs)]
    return epochs_seen, [len(b) for b in recorder.batches], model


@pytest.mark.parametrize("threads", [1, 2])
def test_no_shuffle_keeps_the_order_of_x(threads):
    orders, sizes, _ = recorded_fit(n=50, batch_size=8, shuffle=False, threads=threads)
    assert orders == [list(range(50))] * 2
    assert sizes == [8] * 6 + [2] + [8] * 6 + [2]


@pytest.mark.parametrize("threads", [1, 2])
def test_shuffle_shows_every_sample_once_in_a_new_order_each_epoch(threads):
    orders, sizes, _ = recorded_fit(n=50, epochs=3, batch_size=8, seed=0, threads=threads)
    for order in orders:
        assert sorted(order) == list(range(50))
        assert order != list(range(50))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert sizes == ([8] * 6 + [2]) * 3


def test_a_seed_fixes_the_order_and_other_seeds_change_it():
    first = recorded_fit(seed=3)[0]
    assert recorded_fit(seed=3, model_seed=1)[0] == first          # the seed, not the model, decides
    others = [recorded_fit(seed=s)[0] for s in (4, 5)]
    assert all(other[0] != first[0] for other in others)
    assert others[0][0] != others[1][0]


def test_without_a_seed_the_models_generator_shuffles():
    """Sequential(seed=...) fixes the shuffling too; other model seeds shuffle otherwise."""
    assert recorded_fit(model_seed=11)[0] == recorded_fit(model_seed=11)[0]
    assert recorded_fit(model_seed=11)[0][0] != recorded_fit(model_seed=12)[0][0]


def test_shuffling_changes_what_is_learnt():
    _, _, shuffled = recorded_fit(seed=0)
    _, _, in_order = recorded_fit(shuffle=False)
    _, _, again = recorded_fit(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(shuffled.get_weights(), again.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(shuffled.get_weights(), in_order.get_weights()))


# -- exact means --------------------------------------------------------------------------------

class NoLearning(LearningRateSchedule):
    """A learning rate of 0 at every step: the weights stay as they are."""

    def __call__(self, step):
        return 0.0


class BatchLogs(Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def frozen_model(seed, fast=True):
    model = Sequential([Dense(5, activation="tanh"), Dense(3, activation="softmax")], input_shape=(4,), seed=seed)
    model.build((4,), "float64")
    model.compile(SGD(NoLearning()), fast=fast)
    return model


def per_sample(model, x, y):
    """Each sample's cross-entropy and whether it is classified right, from predict."""
    probs = model.predict(x)
    return -np.log(probs[np.arange(len(y)), y]), (probs.argmax(axis=1) == y).astype(float)


def data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 48), seed=st.integers(0, 2**16), fast=st.booleans())
def test_evaluate_is_the_mean_over_every_sample(n, batch_size, seed, fast):
    """In both modes: the fast mode's loss is its kernel (kernels/cross_entropy.py), the reference
    mode's the NumPy lines of losses.py."""
    model = frozen_model(seed, fast)
    x, y = data(n, seed)
    losses, correct = per_sample(model, x, y)
    loss, accuracy = model.evaluate(x, y, batch_size=batch_size)
    assert loss == pytest.approx(losses.mean(), rel=1e-10)
    assert accuracy == pytest.approx(correct.mean(), rel=1e-12)


def test_evaluate_weighs_a_partial_last_batch_by_its_samples():
    """The example of the bug report: 130 samples in batches of 128."""
    model = frozen_model(0)
    x, y = data(130, 0)
    y[128:] = (model.predict(x[128:]).argmax(axis=1) + 1) % 3     # two samples it gets wrong
    losses, correct = per_sample(model, x, y)
    assert model.evaluate(x, y, batch_size=128) == pytest.approx((losses.mean(), correct.mean()), rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 48), n_val=st.integers(1, 20),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16), fast=st.booleans())
def test_fits_logs_are_means_over_the_samples_seen(n, batch_size, n_val, threads, seed, fast):
    model = frozen_model(seed, fast)
    x, y = data(n, seed)
    x_val, y_val = data(n_val, seed + 1)
    losses, correct = per_sample(model, x, y)
    val_losses, val_correct = per_sample(model, x_val, y_val)
    logs = BatchLogs()
    history = model.fit(x, y, epochs=2, batch_size=batch_size, shuffle=False, verbose=0, threads=threads,
                        validation_data=(x_val, y_val), callbacks=[logs])
    steps = -(-n // batch_size)
    assert len(logs.logs) == 2 * steps
    for i, batch_logs in enumerate(logs.logs):
        seen = min((i % steps + 1) * batch_size, n)
        assert batch_logs["loss"] == pytest.approx(losses[:seen].mean(), rel=1e-10), (i, seen)
        assert batch_logs["accuracy"] == pytest.approx(correct[:seen].mean(), rel=1e-12), (i, seen)
    h = history.history
    assert h["loss"] == pytest.approx([losses.mean()] * 2, rel=1e-10)
    assert h["accuracy"] == pytest.approx([correct.mean()] * 2, rel=1e-12)
    assert h["val_loss"] == pytest.approx([val_losses.mean()] * 2, rel=1e-10)
    assert h["val_accuracy"] == pytest.approx([val_correct.mean()] * 2, rel=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_shuffled_epochs_loss_is_the_mean_over_the_whole_set(threads):
    model = frozen_model(3)
    x, y = data(37, 3)
    losses, correct = per_sample(model, x, y)
    history = model.fit(x, y, epochs=2, batch_size=10, seed=1, verbose=0, threads=threads)
    assert history.history["loss"] == pytest.approx([losses.mean()] * 2, rel=1e-10)
    assert history.history["accuracy"] == pytest.approx([correct.mean()] * 2, rel=1e-12)


@pytest.mark.parametrize("batch_size", [40, 37])
def test_a_partial_chunk_of_a_threads_share_weighs_its_samples(batch_size):
    """Two threads, shares of 20 (or 18 and 19) samples, each worked through in chunks of 16
    (parallel.CHUNK): the short chunk counts for its own samples in the batch's loss."""
    model = frozen_model(5)
    x, y = data(batch_size, 5)
    losses, _ = per_sample(model, x, y)
    history = model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0, threads=2)
    assert history.history["loss"] == pytest.approx([losses.mean()], rel=1e-10)


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    """As in Keras: training keeps the first floor(N * (1 - split)) samples, shuffled."""
    orders, _, _ = recorded_fit(n=50, epochs=2, batch_size=8, seed=0, validation_split=0.3)
    for order in orders:
        assert sorted(order) == list(range(35))
