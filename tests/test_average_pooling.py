"""AveragePooling2D and GlobalAveragePooling2D: worked examples small enough to average in your
head, Keras's treatment of "same" padding, the short names, saving and loading, and training split
over threads. Their gradient checks are in test_gradients.py, their GPU checks in test_gpu.py."""

import numpy as np
import pytest

from tinycnn import Sequential, load_model
from tinycnn.layers import (LAYERS, AveragePooling2D, AvgPool2D, Conv2D, Dense, GlobalAveragePooling2D,
                            GlobalAvgPool2D)
from tinycnn.parallel import DataParallel

#:  0  1  2  3
#:  4  5  6  7
#:  8  9 10 11
#: 12 13 14 15
IMAGE = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)


def test_a_2x2_pool_of_a_4x4_image():
    """(0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, (8+9+12+13)/4 = 10.5, (10+11+14+15)/4 = 12.5."""
    layer = AveragePooling2D()                     # pool_size=(2, 2), strides = pool_size
    y = layer.forward(IMAGE)
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # each pixel is in one window of four: a quarter of that window's gradient
    dout = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(layer.backward(dout)[0, :, :, 0], [[0.25, 0.25, 0.5, 0.5],
                                                                     [0.25, 0.25, 0.5, 0.5],
                                                                     [0.75, 0.75, 1.0, 1.0],
                                                                     [0.75, 0.75, 1.0, 1.0]])


def test_same_padding_averages_the_pixels_inside_the_image_only():
    """3x3 windows, stride 1, "same": one row and column of padding on every side. The top-left
    window holds 0, 1, 4, 5 and five padded zeros: Keras averages the four pixels, (0+1+4+5)/4 =
    2.5, not 10/9. The one to its right holds 0, 1, 2, 4, 5, 6: 18/6 = 3."""
    layer = AveragePooling2D(3, strides=1, padding="same")
    y = layer.forward(IMAGE)[0, :, :, 0]
    assert y.shape == (4, 4)
    assert y[0, 0] == 2.5 and y[0, 1] == 3.0 and y[1, 1] == 5.0   # (0+1+2+4+5+6+8+9+10)/9 = 5
    constant = np.full((1, 5, 5, 2), 7.0)            # a constant image pools to itself, edges too
    np.testing.assert_array_equal(AveragePooling2D(3, strides=1, padding="same").forward(constant), constant)
    # backward: the corner pixel is in 4 windows, of 4, 6, 6 and 9 image pixels
    dx = layer.backward(np.ones((1, 4, 4, 1)))[0, :, :, 0]
    assert dx[0, 0] == pytest.approx(1 / 4 + 1 / 6 + 1 / 6 + 1 / 9)


def test_same_padding_with_a_window_that_overhangs_one_side():
    """2x2 windows, stride 2, on a 3x3 image: Keras pads one row at the bottom and one column at
    the right, so the right-hand windows hold two pixels and the corner one pixel."""
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)     # 0 1 2 / 3 4 5 / 6 7 8
    y = AveragePooling2D(2, padding="same").forward(x)[0, :, :, 0]
    np.testing.assert_array_equal(y, [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]])


def test_global_average_pooling_of_a_4x4_image():
    """The average of 0..15 is 7.5; every pixel gets 1/16 of the gradient."""
    x = np.concatenate([IMAGE, 2 * IMAGE], axis=-1)             # two channels: 7.5 and 15
    layer = GlobalAveragePooling2D()
    np.testing.assert_array_equal(layer.forward(x), [[7.5, 15.0]])
    dx = layer.backward(np.array([[16.0, 32.0]]))
    np.testing.assert_array_equal(dx[..., 0], np.ones((1, 4, 4)))
    np.testing.assert_array_equal(dx[..., 1], np.full((1, 4, 4), 2.0))
    kept = GlobalAveragePooling2D(keepdims=True)
    assert kept.forward(x).shape == (1, 1, 1, 2) and kept.output_shape((4, 4, 2)) == (1, 1, 2)


def test_the_outputs_keep_the_input_dtype():
    x = np.ones((2, 6, 6, 3), dtype=np.float32)
    for layer in (AveragePooling2D(3, 2, "same"), GlobalAveragePooling2D()):
        y = layer.forward(x)
        assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32


def test_the_short_names_are_the_same_classes_and_register_nothing():
    assert AvgPool2D is AveragePooling2D and GlobalAvgPool2D is GlobalAveragePooling2D
    assert LAYERS["AveragePooling2D"] is AveragePooling2D
    assert LAYERS["GlobalAveragePooling2D"] is GlobalAveragePooling2D
    assert "AvgPool2D" not in LAYERS and "GlobalAvgPool2D" not in LAYERS
    assert AvgPool2D().name == "average_pooling2d" and GlobalAvgPool2D().name == "global_average_pooling2d"


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="padding"):
        AveragePooling2D(padding="full")
    with pytest.raises(ValueError, match="pool_size"):
        AveragePooling2D(pool_size=0)
    with pytest.raises(TypeError, match="keepdims"):
        GlobalAveragePooling2D(keepdims="False")
    with pytest.raises(ValueError, match="takes images"):
        GlobalAveragePooling2D().forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        AveragePooling2D(5).forward(np.ones((1, 4, 4, 1)))


def small_model():
    return Sequential([
        Conv2D(4, 3, activation="relu", padding="same"),
        AvgPool2D(2, padding="same"),
        Conv2D(6, 3, activation="relu"),
        AveragePooling2D((2, 1), strides=1),
        GlobalAvgPool2D(),
        Dense(3, activation="softmax"),
    ], input_shape=(9, 9, 1), seed=0)


def test_a_model_with_them_saves_and_loads_with_the_same_predictions(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 9, 9, 1), dtype=np.float32), rng.integers(0, 3, 24)
    model = small_model()
    model.compile("adam")
    model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [type(layer).__name__ for layer in loaded.layers] == [
        "Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D", "GlobalAveragePooling2D", "Dense"]
    assert [layer.get_config() for layer in loaded.layers] == [layer.get_config() for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    kept = Sequential([GlobalAveragePooling2D(keepdims=True)], input_shape=(4, 4, 2))
    kept.save(tmp_path / "k.npz")
    assert load_model(tmp_path / "k.npz").layers[0].keepdims is True


def test_per_sample_a_batch_split_over_threads_gives_the_whole_batch_gradient():
    """per_sample = True lets fit split a batch over the cores; the shares' gradients must add up
    to the whole batch's."""
    assert AveragePooling2D.per_sample and GlobalAveragePooling2D.per_sample
    rng = np.random.default_rng(1)
    model = small_model()
    model.build((9, 9, 1), "float64")
    model.compile("adam")
    x, y = rng.random((10, 9, 9, 1)), rng.integers(0, 3, 10)
    whole_logits, whole_loss = model.plan().loss_and_gradients(x, y)
    serial = {(layer.name, k): g.copy() for layer in model.layers for k, g in layer.grads.items()}
    with DataParallel(model, 3) as parallel:
        logits, loss = parallel.train_step(x, y)
    np.testing.assert_allclose(logits, whole_logits, rtol=1e-12)
    assert loss == pytest.approx(whole_loss, rel=1e-12)
    for layer in model.layers:
        for k, g in layer.grads.items():
            np.testing.assert_allclose(g, serial[(layer.name, k)], rtol=1e-10, atol=1e-14)
