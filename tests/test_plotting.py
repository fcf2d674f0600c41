"""Tests for tinycnn.plotting: saved PNGs, the helpers that choose what to draw, errors."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinycnn import plotting as P  # selects the Agg backend when headless

import matplotlib.image as mpimg  # noqa: E402  (after the backend is chosen)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

def assert_real_png(path, min_w=200, min_h=150):
    """The file exists, is a PNG, decodes, is of plausible size and is not blank."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, f"implausibly small image {w}x{h}"
    assert w <= 5000 and h <= 5000, f"implausibly large image {w}x{h}"
    colours = np.unique(img.reshape(-1, img.shape[2]), axis=0)
    assert len(colours) > 10, "image is (nearly) a single colour"
    # no temporary files left next to it
    assert [p.name for p in path.parent.iterdir() if p.name.startswith("tmp")] == []
    return img


def fake_digits(n=60, size=28, seed=1):
    """Blob-ish uint8 "digit" images, labels and predictions (some wrong)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    for i, label in enumerate(labels):
        cy, cx = size / 2 + rng.normal(0, 2, size=2)
        r = 4 + label / 2
        ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.8
        images[i][ring] = 255
    preds = labels.copy()
    wrong = rng.choice(n, size=n // 6, replace=False)
    preds[wrong] = (labels[wrong] + 1 + rng.integers(0, 9, size=len(wrong))) % 10
    return images, labels, preds


def runs(mask):
    """(start, stop) of each run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    return list(zip(edges[::2], edges[1::2]))


def drawn(fig):
    """Lay the figure out and draw it, as savefig did (a closed figure needs a canvas again)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def assert_numbers_above_their_tiles(fig, ax):
    """In a montage (filters, feature maps), number i sits above tile i, nearer to it than to the
    row of tiles above, and covers no pixel of any tile. Returns the tiles' (rows, cols) runs."""
    image = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
    data = ~np.isnan(image)
    row_runs, col_runs = runs(data.any(axis=1)), runs(data.any(axis=0))
    renderer = drawn(fig)
    to_data = ax.transData.inverted()
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(len(ax.texts)))
    for text in ax.texts:
        (x0, y0), (x1, y1) = to_data.transform(text.get_window_extent(renderer).get_points())
        (x0, x1), (top, bottom) = sorted((x0, x1)), sorted((y0, y1))   # image rows grow downwards
        rows = [r for r in range(data.shape[0]) if r + 0.5 > top and r - 0.5 < bottom]
        cols = [c for c in range(data.shape[1]) if c + 0.5 > x0 and c - 0.5 < x1]
        assert not data[np.ix_(rows, cols)].any(), f"number {text.get_text()} covers a tile"
        i = int(text.get_text())
        (r0, _), (c0, c1) = row_runs[i // len(col_runs)], col_runs[i % len(col_runs)]
        assert c0 - 0.5 <= (x0 + x1) / 2 <= c1 - 0.5                  # over its own tile's columns
        assert bottom <= r0 - 0.5                                        # above its tile
        if i >= len(col_runs):                                           # nearer it than the row above
            above = row_runs[i // len(col_runs) - 1][1] - 0.5
            assert (r0 - 0.5) - bottom < top - above
    return row_runs, col_runs


@pytest.fixture(autouse=True)
def no_leaked_figures():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a figure was left open"


# --------------------------------------------------------------------------- #
# import behaviour and backend (in fresh interpreters)
# --------------------------------------------------------------------------- #

def _run_python(code, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_changes)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=str(REPO), timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_tinycnn_does_not_load_matplotlib_but_plotting_does_and_is_headless():
    out = _run_python(
        "import sys\n"
        "import tinycnn\n"
        "print('matplotlib' in sys.modules, end=' ')\n"
        "import tinycnn.plotting\n"
        "import matplotlib\n"
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules,"
        " matplotlib.get_backend().lower())\n"
    )
    assert out == "False True True agg"


def test_explicit_mplbackend_is_respected():
    out = _run_python("import tinycnn.plotting, matplotlib; print(matplotlib.get_backend().lower())",
                      MPLBACKEND="pdf")
    assert out == "pdf"


@pytest.mark.parametrize("env, platform, pyplot_loaded, chosen, expected", [
    ({}, "linux", False, None, True),                          # headless Linux: Agg
    ({"DISPLAY": ""}, "linux", False, None, True),             # empty DISPLAY is no display
    ({"DISPLAY": ":0"}, "linux", False, None, False),          # a display: leave it
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False, None, False),
    ({"MPLBACKEND": "TkAgg"}, "linux", False, None, False),    # the user's choice wins
    ({}, "linux", True, None, False),                          # pyplot already set up
    ({}, "linux", False, "svg", False),                        # matplotlib.use("svg") earlier
    ({}, "linux", False, "TkAgg", True),                       # an unusable GUI choice
    ({}, "darwin", False, None, False),
    ({}, "win32", False, None, False),
])
def test_backend_decision(env, platform, pyplot_loaded, chosen, expected):
    assert P._should_use_agg(env, platform, pyplot_loaded, chosen) is expected


# --------------------------------------------------------------------------- #
# 1. plot_history
# --------------------------------------------------------------------------- #

HISTORY = {
    "loss": [1.2, 0.6, 0.4, 0.3],
    "accuracy": [0.62, 0.84, 0.90, 0.93],
    "val_loss": [0.8, 0.5, 0.45, 0.44],
    "val_accuracy": [0.75, 0.86, 0.89, 0.90],
}


def test_plot_history_saves_png_with_two_panels(tmp_path):
    path = tmp_path / "history.png"
    fig = P.plot_history(HISTORY, path=path)
    assert_real_png(path, min_w=600)
    ax_acc, ax_loss = fig.axes[:2]
    assert "accuracy" in ax_acc.get_title().lower() and "loss" in ax_loss.get_title().lower()
    for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        train, val = ax.get_lines()
        np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3, 4])  # epochs from 1
        np.testing.assert_allclose(train.get_ydata(), HISTORY[key])
        np.testing.assert_allclose(val.get_ydata(), HISTORY["val_" + key])
        assert val.get_linestyle() == "--" and val.get_marker() not in (None, "None", "")
        assert train.get_marker() not in (None, "None", "")                # few epochs: markers
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["training (running mean over the epoch)", "validation (at the end of the epoch)"]
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_plot_history_says_training_figures_are_running_means():
    fig = P.plot_history(HISTORY)
    note = " ".join(fig._supxlabel.get_text().split())
    assert "running means over each epoch's batches" in note
    assert "validation can sit above training" in note


def test_plot_history_many_epochs_draws_lines_without_markers():
    n = 40
    fig = P.plot_history({"loss": np.linspace(1, 0.1, n), "accuracy": np.linspace(0.5, 0.99, n),
                          "val_loss": np.linspace(1, 0.3, n), "val_accuracy": np.linspace(0.5, 0.9, n)})
    for ax in fig.axes[:2]:
        for line in ax.get_lines():
            assert line.get_marker() in (None, "None", "") and line.get_linestyle() in ("-", "--")


def test_plot_history_single_epoch_is_markers_with_their_values():
    fig = P.plot_history({"loss": [1.0832], "accuracy": [0.6178], "val_loss": [0.8017],
                          "val_accuracy": [0.7]})
    ax_acc = fig.axes[0]
    for line in ax_acc.get_lines():      # markers, and no line: the legend shows what is drawn
        assert line.get_linestyle() == "None" and line.get_marker() not in (None, "None", "")
    assert [h.get_linestyle() for h in ax_acc.get_legend().legend_handles] == ["None", "None"]
    assert [(t.get_text(), t.get_ha()) for t in ax_acc.texts] == [("0.618", "right"), ("0.700", "left")]
    low, high = ax_acc.get_ylim()        # neither point on the frame
    assert low < 0.6178 - 0.005 and high > 0.7 + 0.005


def test_plot_history_single_epoch_without_validation(tmp_path):
    path = tmp_path / "one.png"
    fig = P.plot_history({"loss": [0.5], "accuracy": [0.8]}, path=path)
    img = assert_real_png(path)
    assert "validation" not in fig._supxlabel.get_text()
    for ax in fig.axes[:2]:
        (line,) = ax.get_lines()
        assert line.get_marker() not in (None, "None", "")  # a lone point must be visible
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1.0]  # integer epochs only, even with one epoch
    # the blue training marker was actually drawn
    rgb = img[..., :3]
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.3)
    assert blue.sum() > 5


@pytest.mark.parametrize("name", ["acc", "sparse_categorical_accuracy", "categorical_accuracy"])
def test_plot_history_takes_accuracy_under_keras_s_other_names(name):
    fig = P.plot_history({"loss": [1.0, 0.5], name: [0.5, 0.7], "val_loss": [0.9, 0.6], f"val_{name}": [0.6, 0.65]})
    train, val = fig.axes[0].get_lines()
    np.testing.assert_allclose(train.get_ydata(), [0.5, 0.7])
    np.testing.assert_allclose(val.get_ydata(), [0.6, 0.65])


def test_plot_history_rejects_bad_input():
    with pytest.raises(ValueError, match="accuracy"):
        P.plot_history({"loss": [1.0, 0.5]})
    with pytest.raises(ValueError, match="one value per epoch"):
        P.plot_history({"loss": [1.0, 0.5], "accuracy": [0.5]})
    with pytest.raises(ValueError, match="non-empty"):
        P.plot_history({"loss": [], "accuracy": []})


# --------------------------------------------------------------------------- #
# 2-3. confusion matrix
# --------------------------------------------------------------------------- #

def test_confusion_matrix_by_hand():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    expected = np.array([[1, 1, 0],
                         [0, 1, 0],
                         [1, 0, 2]])
    cm = P.confusion_matrix(y_true, y_pred)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, expected)
    cm4 = P.confusion_matrix(np.array(y_true, dtype=np.uint8), y_pred, num_classes=4)
    np.testing.assert_array_equal(cm4[:3, :3], expected)
    assert cm4[3].sum() == 0 and cm4[:, 3].sum() == 0


@pytest.mark.parametrize("y_true, y_pred, kwargs, message", [
    ([0, 1, 2], [0, 1], {}, "same length"),
    ([0.0, 1.0], [0, 1], {}, "integer"),
    ([0, -1], [0, 1], {}, "non-negative"),
    ([0, 5], [0, 1], {"num_classes": 3}, "num_classes"),
    ([[1, 0], [0, 1]], [0, 1], {}, r"1-D.*argmax"),
])
def test_confusion_matrix_validates(y_true, y_pred, kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.confusion_matrix(y_true, y_pred, **kwargs)


def test_plot_confusion_matrix_default_mnist(tmp_path):
    _, labels, preds = fake_digits(200)
    path = tmp_path / "cm.png"
    fig = P.plot_confusion_matrix(labels, preds, path=path)
    assert_real_png(path, min_w=400, min_h=400)
    ax = fig.axes[0]
    cm = P.confusion_matrix(labels, preds, num_classes=10)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == 100
    for (i, j), text in texts.items():
        assert text.get_text() == str(cm[i, j])
    # the darkest cell (largest count) is annotated in white, an empty one in black
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    assert texts[(i, j)].get_color() == "white"
    zi, zj = np.argwhere(cm == 0)[0]
    assert texts[(zi, zj)].get_color() == "black"
    assert ax.get_xlabel() == "Predicted" and ax.get_ylabel() == "True"
    acc = np.mean(labels == preds)
    assert f"{acc:.2%}" in ax.get_title()


def test_plot_confusion_matrix_class_names(tmp_path):
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    y_true = np.array([0, 1, 2, 9, 9, 6])
    y_pred = np.array([6, 1, 2, 9, 7, 0])
    path = tmp_path / "sub" / "cm_fashion.png"  # missing directories are created
    fig = P.plot_confusion_matrix(y_true, y_pred, class_names=names, path=path)
    assert_real_png(path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xticklabels()[0].get_rotation() != 0
    assert "50.00%" in ax.get_title()
    with pytest.raises(ValueError, match="class_names"):
        P.plot_confusion_matrix([0, 1], [0, 2], class_names=["a", "b"])


# --------------------------------------------------------------------------- #
# 4. predictions
# --------------------------------------------------------------------------- #

def test_choose_examples_includes_mistakes_and_is_deterministic():
    y_true = np.arange(300) % 10
    y_pred = y_true.copy()
    wrong = np.array([7, 55, 123, 250, 299])
    y_pred[wrong] = (y_pred[wrong] + 1) % 10
    picks = P.choose_examples(y_true, y_pred, n=25, seed=0)
    assert picks.shape == (25,) and len(set(picks.tolist())) == 25
    n_wrong = np.isin(picks, wrong).sum()
    assert n_wrong == 5  # up to a third of 25 (8), limited by the 5 that exist
    np.testing.assert_array_equal(picks, P.choose_examples(y_true, y_pred, n=25, seed=0))
    others = [P.choose_examples(y_true, y_pred, n=25, seed=s) for s in (1, 2, 3)]
    assert any(not np.array_equal(picks, o) for o in others)

    many_wrong = (y_true + (np.arange(300) % 2)) % 10  # half wrong
    picks = P.choose_examples(y_true, many_wrong, n=25, seed=4)
    assert (y_true[picks] != many_wrong[picks]).sum() == 8  # 25 // 3
    # a tiny grid still shows a mistake
    assert (y_true[P.choose_examples(y_true, y_pred, n=2)] != y_pred[P.choose_examples(
        y_true, y_pred, n=2)]).sum() == 1


def test_choose_examples_edge_cases():
    y = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(P.choose_examples(y, y, n=10), [0, 1, 2, 3])  # n > N
    all_wrong = P.choose_examples(y, (y + 1) % 4, n=3)
    assert len(all_wrong) == 3
    with pytest.raises(ValueError, match="same length"):
        P.choose_examples(y, y[:3], n=2)
    with pytest.raises(ValueError, match="n must be a whole number >= 1, got 0"):
        P.choose_examples(y, y, n=0)


def test_plot_predictions_marks_right_and_wrong_by_more_than_colour(tmp_path):
    images, labels, preds = fake_digits(80)
    path = tmp_path / "pred.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # e.g. "Glyph 10004 missing from font": ✔ drawn as a box
        fig = P.plot_predictions(images[..., None].astype(np.float32) / 255.0, labels, preds,
                                 path=path, seed=3)
    assert_real_png(path, min_w=400, min_h=400)
    picks = P.choose_examples(labels, preds, 25, seed=3)
    image_axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(image_axes) == 25 and len(fig.axes) == 25  # 5 x 5
    reds = blues = 0
    for ax, i in zip(image_axes, picks):
        title = ax.title
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
        assert ax.get_images()[0].get_cmap().name == "gray"
        if labels[i] == preds[i]:
            assert title.get_text() == f"✔ {preds[i]}" and title.get_color() == "tab:blue"
            blues += 1
        else:
            assert title.get_text() == f"✘ {preds[i]}\ntrue: {labels[i]}" and title.get_color() == "tab:red"
            reds += 1
    assert reds >= 1 and blues >= 1
    how = " ".join(fig._suptitle.get_text().split())          # wrapped to the figure's width
    wrong = int(np.sum(labels != preds))
    assert (f"25 of the 80 test images, picked at random (seed 3): {reds} of the {wrong} misclassified, "
            f"{blues} of the {80 - wrong} classified right") in how
    assert "not the error rate" in how and f"{wrong / 80:.1%}" in how
    assert "probability" not in how                 # no probs given: no confidence claimed


def test_plot_predictions_shows_each_prediction_s_probability():
    images, labels, preds = fake_digits(40)
    probs = np.full((40, 10), 0.02)
    probs[np.arange(40), preds] = 0.82
    probs[0, preds[0]] = 0.9995                      # rounds to 100% but is not sure: 99.9%
    fig = P.plot_predictions(images, labels, probs=probs, class_names=[f"c{k}" for k in range(10)], n=40)
    titles = {i: ax.get_title() for i, ax in zip(range(40), fig.axes)}   # all 40 are shown, in order
    assert titles[0].startswith(f"{'✔' if labels[0] == preds[0] else '✘'} c{preds[0]} (99.9%)")
    for i in range(1, 40):
        mark = "✔" if labels[i] == preds[i] else "✘"
        assert titles[i].split("\n")[0] == f"{mark} c{preds[i]} (82%)"
    assert "probability the model gave its prediction" in " ".join(fig._suptitle.get_text().split())


def test_plot_predictions_validates():
    images, labels, preds = fake_digits(10)
    with pytest.raises(ValueError, match=r"same length.*images has 10.*y_true has 9"):
        P.plot_predictions(images, labels[:9], preds[:9])
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, 1\)"):
        P.plot_predictions(np.zeros((10, 28, 28, 3)), labels, preds)
    for twice_or_never in ({}, {"y_pred": preds, "probs": np.eye(10)[preds]}):
        with pytest.raises(ValueError, match="give the predictions once: y_pred.*or probs"):
            P.plot_predictions(images, labels, **twice_or_never)
    with pytest.raises(TypeError, match="show must be True or False"):
        P.plot_predictions(images, labels, preds, show="no")


# --------------------------------------------------------------------------- #
# 5. filters
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("shape", [(3, 3, 1, 8), (5, 5, 4, 6), (3, 3, 1, 32)])
def test_plot_filters(tmp_path, shape):
    kernel = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    path = tmp_path / "filters.png"
    fig = P.plot_filters(kernel, path=path, layer_name="conv2d")
    assert_real_png(path)
    kh, kw, _, f = shape
    assert fig._suptitle.get_text().startswith(f"conv2d: {f} filters, {kh}x{kw}")   # which layer
    (ax,) = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    im = ax.get_images()[0]
    mean = kernel.mean(axis=2)
    row_runs, col_runs = assert_numbers_above_their_tiles(fig, ax)   # numbered, never on a weight
    assert len(col_runs) == min(f, 8) and len(row_runs) == -(-f // 8)
    shown = im.get_array()
    for i in range(f):                       # filter i is tile i, in rows of 8
        (r, _), (c, _) = row_runs[i // 8], col_runs[i % 8]
        np.testing.assert_allclose(shown[r:r + kh, c:c + kw], mean[:, :, i], rtol=1e-5, atol=1e-6)
    lo, hi = im.get_clim()                   # one scale, centred at 0, so one colour bar explains it
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(mean).max())
    (bar,) = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert "weight" in bar.get_ylabel()
    width, height = fig.get_size_inches() * fig.dpi
    assert width <= 1000 and height <= 800


def test_plot_filters_rejects_wrong_ndim():
    with pytest.raises(ValueError, match=r"\(KH, KW, C_in, F\).*shape \(3, 3, 8\)"):
        P.plot_filters(np.zeros((3, 3, 8)))


# --------------------------------------------------------------------------- #
# 6. feature maps
# --------------------------------------------------------------------------- #

def test_plot_feature_maps(tmp_path):
    images, _, _ = fake_digits(1)
    rng = np.random.default_rng(0)
    maps = [("conv1", np.maximum(rng.normal(size=(26, 26, 8)), 0)),
            ("conv2", np.maximum(rng.normal(size=(1, 11, 11, 32)), 0))]  # batch axis of 1 is dropped
    path = tmp_path / "fmaps.png"
    fig = P.plot_feature_maps(images[0][..., None], maps, path=path, max_channels=16, activation="ReLU")
    assert_real_png(path)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    image_panels = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    (text_panel,) = [ax for ax in fig.axes if not ax.get_images() and ax.get_label() != "<colorbar>"]
    assert len(image_panels) == 3 and len(bars) == 2                # every layer has a colour bar,
    ax_in, ax1, ax2 = image_panels
    assert [ax.get_ylabel() for ax in ax_in.child_axes] == ["pixel"]    # and so has the input
    assert ax_in.get_title(loc="left").startswith("input image, 28x28")
    np.testing.assert_array_equal(ax_in.get_images()[0].get_array(), images[0])
    # beside the input, where there was empty space, how to read the figure, ReLU included
    drawn(fig)
    assert text_panel.get_position().x0 > ax_in.get_position().x1
    assert text_panel.get_position().y0 >= ax1.get_position().y1
    how = " ".join(text_panel.texts[0].get_text().split())
    assert "after ReLU, so none is below 0" in how and "own colour scale" in how
    assert "(after ReLU)" in fig._suptitle.get_text()
    assert all(bar.get_ylabel() == "activation (after ReLU)" for bar in bars)
    assert ax1.get_ylabel().startswith("conv1") and "8 channels" in ax1.get_ylabel()
    assert ax2.get_ylabel().startswith("conv2") and "0-15 of 32" in ax2.get_ylabel()
    for ax, channels in ((ax1, 8), (ax2, 16)):                   # numbered, never on an activation
        assert len(ax.texts) == channels and all(t.get_fontsize() >= 8 for t in ax.texts)
        row_runs, col_runs = assert_numbers_above_their_tiles(fig, ax)
    (r, _), (c, _) = row_runs[0], col_runs[0]
    np.testing.assert_allclose(ax2.get_images()[0].get_array()[r:r + 11, c:c + 11], maps[1][1][0, :, :, 0])
    width, height = fig.get_size_inches() * fig.dpi
    assert width <= 1000 and height <= 800


def test_plot_feature_maps_says_nothing_of_an_activation_it_was_not_told():
    rng = np.random.default_rng(0)
    fig = P.plot_feature_maps(np.zeros((28, 28)), [("conv", rng.normal(size=(26, 26, 4)))])
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + fig._suptitle.get_text()
    assert "ReLU" not in texts and "after" not in fig._suptitle.get_text()


def test_plot_feature_maps_validates():
    with pytest.raises(ValueError, match=r"\(H', W', C\)"):
        P.plot_feature_maps(np.zeros((28, 28)), [("conv1", np.zeros((26, 26)))])
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 1\)"):
        P.plot_feature_maps(np.zeros((2, 28, 28)), [("conv1", np.zeros((26, 26, 4)))])
    with pytest.raises(ValueError, match="max_channels must be a whole number >= 1, got 0"):
        P.plot_feature_maps(np.zeros((28, 28)), [("conv1", np.zeros((26, 26, 4)))], max_channels=0)


# --------------------------------------------------------------------------- #
# 7. mistakes
# --------------------------------------------------------------------------- #

def test_most_confident_mistakes_by_hand():
    y_true = np.array([0, 1, 2, 0, 1])
    probs = np.array([
        [0.10, 0.80, 0.10],  # wrong: says 1 with 0.80
        [0.05, 0.90, 0.05],  # right
        [0.97, 0.02, 0.01],  # wrong: says 0 with 0.97
        [0.40, 0.00, 0.60],  # wrong: says 2 with 0.60
        [0.20, 0.30, 0.50],  # wrong: says 2 with 0.50
    ])
    np.testing.assert_array_equal(P.most_confident_mistakes(y_true, probs, n=16), [2, 0, 3, 4])
    np.testing.assert_array_equal(P.most_confident_mistakes(y_true, probs, n=2), [2, 0])
    assert P.most_confident_mistakes([1, 1, 0, 2, 2], probs, n=3).size == 0  # all right


def test_plot_mistakes_titles(tmp_path):
    images, labels, preds = fake_digits(40)
    probs = np.full((40, 10), 0.01)
    probs[np.arange(40), preds] = 1 - 0.09 - np.linspace(0, 0.5, 40)
    path = tmp_path / "mistakes.png"
    fig = P.plot_mistakes(images, labels, probs, n=4, path=path)
    assert_real_png(path)
    idx = P.most_confident_mistakes(labels, probs, n=4)
    image_axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(image_axes) == 4
    for ax, i in zip(image_axes, idx):
        pct = round(100 * probs[i, preds[i]])
        assert ax.get_title() == f"✘ {preds[i]} ({pct}%)\ntrue: {labels[i]}"
        assert ax.title.get_color() == "tab:red"
    assert fig._suptitle.get_text().startswith(f"The 4 most confident mistakes, of {np.sum(labels != preds)}")


def test_plot_mistakes_without_mistakes_says_so(tmp_path):
    images, labels, _ = fake_digits(5)
    probs = np.eye(10)[labels]
    path = tmp_path / "none.png"
    fig = P.plot_mistakes(images, labels, probs, path=path)
    assert_real_png(path, min_w=100, min_h=100)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("No mistakes" in t for t in texts)


def test_plot_mistakes_validates():
    images, labels, _ = fake_digits(5)
    with pytest.raises(ValueError, match=r"probs has 4 rows.*\(5, K\)"):
        P.plot_mistakes(images, labels, np.full((4, 10), 0.1))
    with pytest.raises(ValueError, match="softmax"):
        P.plot_mistakes(images, labels, np.full((5, 10), 3.0))


# --------------------------------------------------------------------------- #
# saving
# --------------------------------------------------------------------------- #

def test_save_into_a_file_instead_of_a_directory_fails_clearly(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("I am a file")
    target = blocker / "history.png"
    with pytest.raises(OSError, match=re.escape(str(blocker))):
        P.plot_history(HISTORY, path=target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]
    assert blocker.read_text() == "I am a file"


def test_failed_replace_leaves_no_temp_file(tmp_path):
    existing_dir = tmp_path / "taken"
    existing_dir.mkdir()
    with pytest.raises(OSError, match=re.escape(str(tmp_path))):
        P.plot_history(HISTORY, path=existing_dir)  # os.replace onto a directory fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert list(existing_dir.iterdir()) == []


def test_overwrites_existing_png(tmp_path):
    path = tmp_path / "h.png"
    path.write_bytes(b"old")
    P.plot_history(HISTORY, path=path)
    assert_real_png(path)


def test_saved_png_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "perm.png"
        P.plot_history(HISTORY, path=path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_show_on_headless_backend_does_not_fail_or_leak(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib warns that Agg cannot show windows
        fig = P.plot_history(HISTORY, path=tmp_path / "shown.png", show=True)
    assert fig.axes and (tmp_path / "shown.png").is_file()
