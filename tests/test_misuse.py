"""Misuse that used to crash the interpreter, corrupt memory or train silently on garbage.

- one optimizer shared by two models: refused at compile (it read and wrote past the end of its
  moment arrays: a segmentation fault or "double free" in 5 runs of 8);
- one layer in two places, or in two models: refused (gradients were wrong, and building the
  second model re-initialised the first one's weights);
- two threads calling one model: the second call fails at once;
- models that cannot learn: a warning that says why;
- a divergence message that names the cause it can see, not always the learning rate;
- every kernel wrapper refuses arrays of sizes its kernel would index past.
"""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.callbacks import Callback
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, Softmax
from tinycnn.optimizers import SGD, Adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_OPTIMIZER = """
import numpy as np
from tinycnn import Sequential
from tinycnn.layers import Dense
from tinycnn.optimizers import {optimizer}
rng = np.random.default_rng(0)
y = rng.integers(0, 10, 32)
opt = {optimizer}()
refused = 0
for f in (4, 5, 4, 5, 4, 5):
    m = Sequential([Dense(10, activation="softmax")], input_shape=(f,))
    try:
        m.compile(optimizer=opt)
    except ValueError as err:
        assert "already belongs to" in str(err), err
        refused += 1
        m.compile(optimizer={optimizer}())
    m.fit(rng.random((32, f), dtype=np.float32), y, epochs=2, verbose=0)
assert refused == 5, refused
"""


@pytest.mark.parametrize("optimizer", ["Adam", "SGD"])
def test_the_shared_optimizer_loop_never_crashes(optimizer):
    """The loop from the bug report, 100 times over in a subprocess: no signal, every sharing
    refused with a clear error (the SGD variant: momentum would be used in the default SGD
    too if it had state; here it shows the refusal does not depend on the optimizer)."""
    code = "for _ in range(100):\n" + "".join("    " + line + "\n" for line in
                                               SHARED_OPTIMIZER.format(optimizer=optimizer).strip().splitlines())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])


def test_an_optimizer_belongs_to_one_model():
    opt = Adam()
    a = Sequential([Dense(3)], input_shape=(4,))
    a.compile(opt)
    a.compile(opt)                                   # the same model again: fine
    b = Sequential([Dense(3)], input_shape=(4,))
    with pytest.raises(ValueError, match=r"This Adam optimizer already belongs to the model 'sequential'.*"
                                         r"optimizer of its own"):
        b.compile(opt)
    assert b.optimizer is None                       # nothing half-set
    del a
    import gc
    gc.collect()
    with pytest.raises(ValueError, match="another model, which is gone"):
        b.compile(opt)


def test_a_rebuilt_model_starts_its_optimizer_afresh():
    """Rebuilt for another input shape, the model has new weights: the old moments would not fit
    them (and used to end in a false 'diverged')."""
    rng = np.random.default_rng(0)
    model = Sequential([Dense(3)])
    model.compile(SGD(0.1, momentum=0.9))
    model.fit(rng.random((8, 4), dtype=np.float32), rng.integers(0, 3, 8), verbose=0)
    assert model.optimizer.state and model.optimizer.iterations == 1
    model.build((6,))
    assert model.optimizer.state == {} and model.optimizer.iterations == 0
    model.fit(rng.random((8, 6), dtype=np.float32), rng.integers(0, 3, 8), verbose=0)


def test_stale_optimizer_state_is_a_clear_error_not_a_crash():
    """A layer replaced behind the model's back, with the same name and another shape."""
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 4), dtype=np.float32), rng.integers(0, 3, 8)
    model = Sequential([Dense(5), Dense(3)], input_shape=(4,), seed=0)
    model.compile(Adam())
    model.fit(x, y, verbose=0)
    model.layers[0] = Dense(7, name="dense")
    model.layers[0].build((4,))
    model.layers[1] = Dense(3, name="dense_1")
    model.layers[1].build((7,))
    with pytest.raises(ValueError, match=r"optimizer's m for dense/kernel has shape \(4, 5\).*\(4, 7\)"):
        model.fit(x, y, verbose=0)


def test_a_layer_is_one_place_in_one_model():
    d = Dense(8, activation="relu")
    with pytest.raises(ValueError, match=r"Layer 'dense' is already in this model, at position 0"):
        Sequential([d, d, Dense(3)])
    first = Sequential([Dense(8), Dense(3)], input_shape=(4,), seed=0)
    before = first.get_weights()
    with pytest.raises(ValueError, match=r"Layer 'dense' already belongs to the model 'sequential'"):
        Sequential(first.layers, input_shape=(4,), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, first.get_weights()))     # untouched
    second = Sequential([Dense(8), Dense(3)], input_shape=(4,), seed=1)
    second.set_weights(first.get_weights())                                         # the way to copy
    assert all(np.array_equal(a, b) for a, b in zip(before, second.get_weights()))


def test_a_layer_of_a_model_that_is_gone_can_be_used_again():
    import gc
    d = Dense(3)
    model = Sequential([d], input_shape=(4,))
    del model
    gc.collect()
    Sequential([d], input_shape=(4,))


class Pause(Callback):
    """Holds fit inside its first batch until the test lets it go."""

    def __init__(self):
        self.inside, self.go = threading.Event(), threading.Event()

    def on_batch_end(self, batch, logs=None):
        self.inside.set()
        self.go.wait(timeout=30)


def test_a_second_thread_gets_an_error_at_once_not_a_mixed_up_model():
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4), dtype=np.float32), rng.integers(0, 3, 64)
    model = Sequential([Dense(5), Dense(3)], input_shape=(4,), seed=0)
    model.compile(Adam())
    pause = Pause()
    errors = []
    trainer = threading.Thread(target=lambda: model.fit(x, y, epochs=1, batch_size=32, verbose=0,
                                                        callbacks=[pause]))
    trainer.start()
    try:
        assert pause.inside.wait(timeout=30)
        for call in (lambda: model.predict(x), lambda: model.evaluate(x, y), lambda: model.get_weights(),
                     lambda: model.fit(x, y, verbose=0), lambda: model.save("never.npz")):
            with pytest.raises(RuntimeError, match="busy with fit in another thread") as err:
                call()
            errors.append(err)
    finally:
        pause.go.set()
        trainer.join(timeout=60)
    assert len(errors) == 5
    model.predict(x)                                   # free again once fit has returned


def test_a_callback_may_use_the_model_inside_fit():
    """The same thread may nest calls: EarlyStopping and ModelCheckpoint read and save weights."""
    class Peek(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = self.model.get_weights()
            self.pred = self.model.predict(np.zeros((2, 4), np.float32))

    rng = np.random.default_rng(0)
    model = Sequential([Dense(3)], input_shape=(4,), seed=0)
    model.compile(Adam())
    peek = Peek()
    model.fit(rng.random((8, 4), dtype=np.float32), rng.integers(0, 3, 8), verbose=0, callbacks=[peek])
    assert len(peek.weights) == 2 and peek.pred.shape == (2, 3)


def warned(model, **fit):
    rng = np.random.default_rng(0)
    x, y = rng.random((fit.pop("n", 8), *model.input_shape), dtype=np.float32), np.zeros(fit.pop("n_y", 8), int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:len(y)], y, verbose=0, threads=1, **fit)
    return [str(w.message) for w in caught]


def test_models_that_cannot_learn_say_why():
    one = Sequential([Dense(1, activation="softmax")], input_shape=(4,))
    one.compile("adam")
    assert any("softmax over 1 unit" in m for m in warned(one))
    twice = Sequential([Dense(3, activation="softmax"), Softmax()], input_shape=(4,))
    twice.compile("adam")
    assert any("applies a softmax to dense's softmax" in m for m in warned(twice))
    bn = Sequential([Dense(3), BatchNormalization(), Dense(3)], input_shape=(4,))
    bn.compile("adam")
    assert any("one value per channel in a batch of 1 (use a batch_size" in m for m in warned(bn, batch_size=1))
    assert any("last batch of each epoch holds 9 % 4 = 1" in m for m in warned(bn, batch_size=4, n=9, n_y=9))
    assert not warned(bn, batch_size=4)
    conv_bn = Sequential([Conv2D(2, 3), BatchNormalization(), Flatten(), Dense(3)], input_shape=(5, 5, 1))
    conv_bn.compile("adam")
    assert not warned(conv_bn, batch_size=1)           # 9 values per channel: it learns
    fine = Sequential([Dense(3, activation="softmax")], input_shape=(4,))
    fine.compile("adam")
    assert not warned(fine)


class SetLearningRate(Callback):
    def __init__(self, value):
        self.value = value

    def on_batch_end(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.value


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_a_bad_learning_rate_is_named_as_the_cause(value):
    rng = np.random.default_rng(0)
    model = Sequential([Dense(3)], input_shape=(4,), seed=0)
    model.compile(SGD(0.1))
    with pytest.raises(FloatingPointError, match=r"Training stopped at epoch 1, batch 2: the learning rate is "
                                                 r"(-0.1|nan), and it must be a finite number >= 0.*callback") as err:
        model.fit(rng.random((64, 4), dtype=np.float32), rng.integers(0, 3, 64), batch_size=32, verbose=0,
                  callbacks=[SetLearningRate(value)])
    assert "lower" not in str(err.value)


def test_non_finite_weights_are_named_as_the_cause():
    rng = np.random.default_rng(0)
    model = Sequential([Dense(3)], input_shape=(4,), seed=0)
    model.compile(SGD(0.1))
    kernel = np.zeros((4, 3))
    kernel[1, 2] = np.nan
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"dense.kernel: 1 values are NaN or infinite.*Nothing was set"):
        model.set_weights([kernel, np.ones(3)])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.layers[0].params["kernel"][1, 2] = np.nan            # written past set_weights
    with pytest.raises(FloatingPointError, match=r"The weights were not finite before this step \(dense/kernel"):
        model.fit(rng.random((8, 4), dtype=np.float32), rng.integers(0, 3, 8), verbose=0)


def test_the_input_scale_is_blamed_only_when_it_is_large():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 64)
    for scale, blamed in ((1.0, False), (1e20, True)):
        model = Sequential([Flatten(), Dense(10, activation="softmax")], input_shape=(6, 6, 1), seed=0)
        model.compile(SGD(1e38) if scale == 1.0 else Adam(1e-3))
        with pytest.raises(FloatingPointError) as err:
            model.fit((rng.random((64, 6, 6, 1)) * scale).astype(np.float32), y, epochs=3, verbose=0)
        assert ("scale images" in str(err.value)) == blamed, str(err.value)
        assert "learning rate too high" in str(err.value)


def test_every_kernel_wrapper_refuses_arrays_it_would_index_past():
    from tinycnn.kernels import affine, bias_relu_pool, im2col, pooling, winograd
    f32 = np.float32
    x = np.zeros((2, 6, 6, 3), f32)
    cases = [
        lambda: im2col.col2im(np.zeros((2 * 16, 27 - 1), f32), x.shape, 3, 3, (1, 1), (0, 0, 0, 0)),
        lambda: pooling.maxpool_backward(np.zeros((2, 3, 3, 3), f32), np.zeros((2, 3, 3, 2), np.int32),
                                         x.shape, 2, 2, (2, 2), (0, 0, 0, 0)),
        lambda: pooling.maxpool_backward(np.zeros((2, 4, 3, 3), f32), np.zeros((2, 4, 3, 3), np.int32),
                                         x.shape, 2, 2, (2, 2), (0, 0, 0, 0)),
        lambda: bias_relu_pool.bias_relu_maxpool_forward(x, np.zeros(2, f32), 2, 2, (2, 2), (0, 0, 0, 0)),
        lambda: bias_relu_pool.maxpool_relu_backward(np.zeros((2, 3, 3, 3), f32), np.zeros((2, 3, 3, 3), np.int32),
                                                     np.zeros((2, 3, 2, 3), f32), x.shape),
        lambda: affine.affine_sample(x, np.zeros((1, 6))),
        lambda: affine.affine_sample_backward(x, np.zeros((2, 5))),
        lambda: winograd.forward(x, np.zeros((3, 3, 2, 4), f32), np.zeros(4, f32), (0, 0, 0, 0), (4, 4)),
    ]
    for case in cases:
        with pytest.raises(ValueError, match="has shape .* but the kernel indexes it as|must agree"):
            case()
    y, argmax, v, u = winograd.forward(x, np.zeros((3, 3, 3, 4), f32), np.zeros(4, f32), (0, 0, 0, 0), (4, 4))
    with pytest.raises(ValueError, match="argmax has shape"):
        winograd.backward(np.zeros_like(y), argmax[:1], y, v, u, x.shape, (0, 0, 0, 0), (4, 4))
