"""Sequential: the Keras API, the seed model's summary, determinism, learning, and bad input."""

import time

import numpy as np
import pytest

from conftest import seed_model
from tinycnn import Sequential, plan
from tinycnn.callbacks import Callback
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax
from tinycnn.optimizers import SGD, Adam


def glyph_task(n, size=12, seed=0, noise=0.1):
    """A 10-class image task that needs convolution: each class is a fixed random 3x3 glyph,
    stamped at a random position on a noisy 12x12 canvas. Only the glyph's shape says the
    class; its position does not, so a network must detect it anywhere."""
    rng = np.random.default_rng(seed)
    glyphs = np.random.default_rng(42).integers(0, 2, size=(10, 3, 3)).astype(np.float32)
    glyphs[:, 1, 1] = 1.0                         # no glyph is blank
    y = rng.integers(0, 10, size=n)
    x = rng.normal(0, noise, size=(n, size, size, 1)).astype(np.float32)
    rows, cols = rng.integers(0, size - 2, size=n), rng.integers(0, size - 2, size=n)
    for i in range(n):
        x[i, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3, 0] += glyphs[y[i]]
    return x, y


def small_cnn(seed=0):
    """Two convolutions and pooling down to 1x1: it finds a glyph wherever it is."""
    return Sequential([Conv2D(16, 3, activation="relu"), MaxPool2D(2), Conv2D(32, 3, activation="relu"),
                       MaxPool2D(3), Flatten(), Dense(10, activation="softmax")],
                      input_shape=(12, 12, 1), seed=seed)


def test_seed_model_summary_matches_keras():
    text = seed_model().summary(print_fn=lambda s: None)
    rows = [line.split() for line in text.splitlines() if "(None," in line]
    assert [(r[0], " ".join(r[2:-1]), r[-1]) for r in rows] == [
        ("conv2d", "(None, 26, 26, 32)", "320"),
        ("max_pool2d", "(None, 13, 13, 32)", "0"),
        ("conv2d_1", "(None, 11, 11, 64)", "18,496"),
        ("max_pool2d_1", "(None, 5, 5, 64)", "0"),
        ("flatten", "(None, 1600)", "0"),
        ("dense", "(None, 64)", "102,464"),
        ("dense_1", "(None, 10)", "650"),
    ]
    assert "Total params: 121,930" in text and "Non-trainable params: 0" in text
    assert seed_model().count_params() == 121_930


def test_summary_columns_never_run_together_with_long_names():
    import re
    from tinycnn.layers import RandomTranslation
    model = Sequential([RandomTranslation(0.1, 0.1), Conv2D(4, 3, name="a" * 50), Flatten(),
                        Dense(1000)], input_shape=(28, 28, 1))
    text = model.summary(print_fn=lambda s: None)
    rows = [line for line in text.splitlines() if "(None," in line]
    assert re.fullmatch(r"random_translation \(RandomTranslation\) {2,}\(None, 28, 28, 1\) {2,}0", rows[0])
    assert re.fullmatch("a" * 50 + r" \(Conv2D\) {2,}\(None, 26, 26, 4\) {2,}40", rows[1])
    assert re.fullmatch(r"dense \(Dense\) {2,}\(None, 1000\) {2,}2,705,000", rows[3])
    assert len({len(row) for row in rows}) == 1                       # the columns line up
    assert len({len(line) for line in text.splitlines() if line and set(line) <= set("_=")}) == 1


def test_input_shape_then_add_builds_as_it_goes():
    model = Sequential(input_shape=(28, 28, 1), seed=0)
    model.add(Conv2D(32, 3, activation="relu"))
    model.add(MaxPool2D(2))
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    assert model.built and model.output_shape == (10,)
    assert model.count_params() == 320 + 13 * 13 * 32 * 10 + 10
    assert model.predict(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


def test_parameter_layouts_and_dtypes():
    model = seed_model(dtype="float64")
    conv, dense = model.layers[0], model.layers[5]
    assert conv.params["kernel"].shape == (3, 3, 1, 32) and conv.params["bias"].shape == (32,)
    assert dense.params["kernel"].shape == (1600, 64) and dense.params["bias"].shape == (64,)
    assert all(p.dtype == np.float64 for layer in model.layers for p in layer.params.values())
    assert not dense.params["bias"].any()          # zero biases, as Keras
    limit = np.sqrt(6 / (9 * 1 + 9 * 32))          # Glorot-uniform bound for the first kernel
    assert np.abs(conv.params["kernel"]).max() <= limit


def test_layer_builds_on_first_forward_in_the_input_dtype(rng):
    layer = Dense(3)
    y = layer.forward(rng.standard_normal((2, 4)))
    assert layer.params["kernel"].dtype == np.float64 and y.shape == (2, 3)
    with pytest.raises(TypeError, match="float32"):
        Dense(3).forward(np.ones((2, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="built for float64"):
        layer.forward(np.ones((2, 4), dtype=np.float32))


def test_unique_layer_names():
    names = [layer.name for layer in seed_model().layers]
    assert names == ["conv2d", "max_pool2d", "conv2d_1", "max_pool2d_1", "flatten", "dense", "dense_1"]


def test_softmax_head_trains_through_the_fused_loss(rng):
    """A Keras-style model that ends in softmax hands its logits to the loss, not log(softmax)."""
    model = Sequential([Dense(3, activation="softmax")], input_shape=(2,), seed=0)
    model.compile("sgd")
    model.layers[0].params["kernel"][...] = [[5000.0, -5000.0, 0.0], [0.0, 0.0, 0.0]]
    x, y = np.array([[2.0, 0.0]], dtype=np.float32), np.array([1])     # logits 1e4, -1e4, 0
    logits = model.plan().forward(x, training=True)
    np.testing.assert_allclose(logits, [[10000.0, -10000.0, 0.0]])
    loss = model.loss.forward(logits, y)
    assert loss == pytest.approx(20000.0)                    # -log softmax = 1e4 - (-1e4), finite
    dlogits = model.loss.backward()
    np.testing.assert_allclose(dlogits, [[1.0, -1.0, 0.0]], atol=1e-6)   # softmax - onehot
    probs = model.predict(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    # A separate Softmax layer is skipped the same way.
    model2 = Sequential([Dense(3), Softmax()], input_shape=(2,), seed=0)
    assert plan.final_softmax(model2.layers) is model2.layers[1]
    assert [type(s) for s in model2.plan().steps] == [Dense]


def test_a_seeded_model_trains_the_same_without_a_fit_seed():
    x, y = glyph_task(128)
    histories = []
    for _ in range(2):
        model = small_cnn(seed=11)
        model.compile("adam")
        histories.append(model.fit(x, y, epochs=2, verbose=0).history)
    assert histories[0] == histories[1]


def test_same_seed_same_weights_and_history():
    x, y = glyph_task(256)
    runs = []
    for _ in range(2):
        model = small_cnn(seed=7)
        model.compile(Adam(1e-3))
        history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=3, validation_split=0.25)
        runs.append((model.get_weights(), history.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]
    assert set(runs[0][1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(runs[0][1]["loss"]) == 2


def test_learns_a_synthetic_image_task():
    """The CNN learns to >= 95% on held-out data, in seconds, a task where a linear model
    (softmax regression on the pixels) stays below 40%: it takes convolution and pooling."""
    x, y = glyph_task(4000, seed=0)
    x_test, y_test = glyph_task(1000, seed=1)
    model = small_cnn(seed=0)
    model.compile(Adam(1e-2))
    start = time.perf_counter()
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0, seed=0)
    assert time.perf_counter() - start < 60            # seconds, not minutes (about 1 s here)
    loss, acc = model.evaluate(x_test, y_test)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert acc >= 0.95, f"test accuracy {acc:.3f}"
    assert model.predict(x_test[:5]).shape == (5, 10)

    linear = Sequential([Flatten(), Dense(10, activation="softmax")], input_shape=(12, 12, 1), seed=0)
    linear.compile(Adam(1e-2))
    linear.fit(x, y, epochs=8, batch_size=32, verbose=0, seed=0)
    assert linear.evaluate(x_test, y_test)[1] < 0.4


def test_validation_split_takes_the_last_fraction(monkeypatch):
    x, y = glyph_task(100)
    model = small_cnn()
    model.compile("adam")
    seen = {}
    real = model._evaluate                  # what fit validates with, each epoch

    def spy(xv, yv, *args):
        seen["x"] = xv
        return real(xv, yv, *args)

    monkeypatch.setattr(model, "_evaluate", spy)
    model.fit(x, y, epochs=1, validation_split=0.2, verbose=0, seed=0)
    np.testing.assert_array_equal(seen["x"], x[80:])
    # Keras trains on floor(N * (1 - split)): 54 samples, split 0.1 -> 48 train, 6 validation
    model.fit(x[:54], y[:54], epochs=1, validation_split=0.1, verbose=0, seed=0)
    np.testing.assert_array_equal(seen["x"], x[48:54])


def test_verbose_modes(capsys):
    x, y = glyph_task(64)
    model = small_cnn()
    model.compile("adam")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, batch_size=32, verbose=2, validation_split=0.25)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "Epoch 1/2" and "loss:" in out[1] and "val_accuracy:" in out[1]
    assert len(out) == 4
    model.fit(x, y, epochs=1, batch_size=32, verbose=1)
    out = capsys.readouterr().out
    assert "2/2" in out and "accuracy:" in out


# -- bad input ----------------------------------------------------------------------------

@pytest.fixture
def compiled():
    model = seed_model()
    model.compile("adam")
    return model


def test_missing_channel_axis_names_both_shapes_and_the_fix(compiled):
    with pytest.raises(ValueError) as err:
        compiled.fit(np.zeros((4, 28, 28), np.float32), np.zeros(4, int), verbose=0)
    assert "(4, 28, 28)" in str(err.value) and "(N, 28, 28, 1)" in str(err.value)
    assert "x[..., None]" in str(err.value)


def test_wrong_image_size(compiled):
    with pytest.raises(ValueError, match=r"\(2, 32, 32, 3\).*\(N, 28, 28, 1\)"):
        compiled.predict(np.zeros((2, 32, 32, 3), np.float32))


def test_uint8_images_get_a_scaling_hint(compiled):
    with pytest.raises(TypeError, match="255"):
        compiled.fit(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, int), verbose=0)


@pytest.mark.parametrize("labels, match", [
    (np.array([0.5, 1, 2, 3]), "integers"),
    (np.array([0, 1, 2, 10]), r"\[0, 9\]"),
    (np.array([-1, 1, 2, 3]), r"\[0, 9\]"),
    (np.eye(10)[[0, 1, 2, 3]], "one-hot"),
    (np.array([0, 1, 2]), "4 samples but y has 3"),
])
def test_bad_labels(compiled, labels, match):
    with pytest.raises(ValueError, match=match):
        compiled.fit(np.zeros((4, 28, 28, 1), np.float32), labels, verbose=0)


def test_nan_and_inf_in_x(compiled):
    x = np.zeros((4, 28, 28, 1), np.float32)
    x[1, 3, 3, 0] = np.nan
    x[2, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN or infinite"):
        compiled.fit(x, np.zeros(4, int), verbose=0)


def test_empty_x_bad_batch_size_bad_split(compiled):
    x, y = np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, int)
    with pytest.raises(ValueError, match="empty"):
        compiled.fit(x[:0], y[:0], verbose=0)
    for bs in (0, -3, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            compiled.fit(x, y, batch_size=bs, verbose=0)
    for split in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="validation_split"):
            compiled.fit(x, y, validation_split=split, verbose=0)


def test_fit_before_compile():
    with pytest.raises(RuntimeError, match="compile"):
        seed_model().fit(np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, int), verbose=0)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_diverging_loss_names_epoch_and_batch():
    model = small_cnn()
    model.compile(SGD(1.0))
    x, y = glyph_task(96)
    x[32:] = 3e38             # finite input (float32 max is 3.4e38) that overflows in the second batch
    before = None

    class Snapshot(Callback):
        def on_batch_end(self, batch, logs=None):
            nonlocal before
            before = model.get_weights()

    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 2.*lower learning rate") as err:
        model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0, callbacks=[Snapshot()])
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)               # the bad batch changed nothing
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    history = err.value.history                                   # the partial epoch: batch 1 of 3
    assert history is model.history
    assert history.epoch == [0] and history.diverged_at == {"epoch": 1, "batch": 1, "batches": 3}
    assert set(history.history) == {"loss", "accuracy"} and len(history.history["loss"]) == 1


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="padding"):
        Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(4, 0)
    with pytest.raises(ValueError, match="activation"):
        Dense(4, activation="tanhh")
    with pytest.raises(ValueError, match="Flatten"):
        Sequential([Dense(4)], input_shape=(5, 5, 1))
    with pytest.raises(ValueError, match="does not fit"):
        Sequential([Conv2D(4, 5)], input_shape=(3, 3, 1))


def test_relu_layer_and_activation_shorthand_agree(rng):
    x = rng.standard_normal((3, 6, 6, 2)).astype(np.float32)
    a = Conv2D(4, 3, activation="relu", seed=1)
    b = Conv2D(4, 3, seed=1)
    np.testing.assert_array_equal(a.forward(x), ReLU().forward(b.forward(x)))


def test_float16_is_refused_with_a_fix(compiled):
    with pytest.raises(TypeError, match="float32 or float64"):
        compiled.predict(np.zeros((2, 28, 28, 1), np.float16))
    with pytest.raises(TypeError, match="float32 or float64"):
        Dense(3).forward(np.zeros((2, 4), np.float16))
