"""Figures to look at after training a CNN: curves, confusion matrix, examples, filters.

This module is the only part of tinycnn that needs matplotlib, and importing
``tinycnn`` does not import it; ``import tinycnn.plotting`` does. Every function
here takes plain NumPy data (nothing else from tinycnn), returns the matplotlib
``Figure`` it drew, and, when ``path`` is given, saves it as a PNG atomically:
the image is written to a temporary file in the same directory and then moved
into place with ``os.replace``, so a crash never leaves a half-written PNG.

Headless machines (a server, CI, a container) have no display to open windows
on. When there is none (Linux without ``DISPLAY``/``WAYLAND_DISPLAY``) and the
user has not chosen a backend with ``MPLBACKEND``, this module selects the
non-interactive "Agg" backend before pyplot is imported. With a display,
``show=True`` opens a window as usual.

Figures are created with ``plt.subplots`` and closed with ``plt.close(fig)``
after saving (unless ``show=True``), so calling these functions in a loop does
not pile up open figures.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap

import numpy as np

import matplotlib

_NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


def _should_use_agg(environ, platform: str, pyplot_loaded: bool, chosen_backend) -> bool:
    """Whether to select "Agg": only when headless and nobody has chosen a backend.

    Args:
        environ: the environment (``os.environ``).
        platform: ``sys.platform``.
        pyplot_loaded: whether ``matplotlib.pyplot`` was already imported.
        chosen_backend: the backend explicitly set via ``matplotlib.use()`` or
            matplotlibrc, or None when matplotlib would auto-detect one.
    """
    if environ.get("MPLBACKEND"):
        return False  # an explicit choice by the user: respect it
    if pyplot_loaded:
        return False  # pyplot is already set up; switching under it would surprise the user
    if platform.startswith(("win", "darwin", "cygwin")):
        return False  # these always have a window system
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return False  # let matplotlib pick an interactive backend so show=True works
    if chosen_backend and (chosen_backend.lower() in _NON_INTERACTIVE
                           or chosen_backend.startswith("module://")):
        return False  # the user already chose a backend that works without a display
    return True


def _select_backend() -> None:
    """Select "Agg" on a headless machine, unless the user already chose a backend."""
    get_backend_or_none = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    chosen = get_backend_or_none() if get_backend_or_none is not None else None
    if _should_use_agg(os.environ, sys.platform, "matplotlib.pyplot" in sys.modules, chosen):
        matplotlib.use("Agg")


_select_backend()

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import checks  # noqa: E402
from .files import atomic_write  # noqa: E402
from .metrics import ACCURACY_NAMES  # noqa: E402

__all__ = [
    "plot_history",
    "confusion_matrix",
    "plot_confusion_matrix",
    "choose_examples",
    "plot_predictions",
    "plot_filters",
    "plot_feature_maps",
    "most_confident_mistakes",
    "plot_mistakes",
]

_DPI = 100
# Right and wrong are told apart by a mark (✔ / ✘) and, for a wrong one, a second line naming the
# true class. Colour only repeats it, in blue and red, which readers with red-green colour
# blindness (the common kind) can still tell apart; green and red they cannot.
_RIGHT = "tab:blue"
_WRONG = "tab:red"
_RIGHT_MARK = "✔"
_WRONG_MARK = "✘"
_FEW_EPOCHS = 20        # up to this many, each epoch's value is a marker on the curve
_LABEL_PT = 8           # the numbers above the tiles of filters.png and feature_maps.png


# --------------------------------------------------------------------------- #
# Saving and showing
# --------------------------------------------------------------------------- #

def _save_png(fig, path) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically (see :mod:`tinycnn.files`).

    Missing parent directories are created. If the directory cannot be created
    or written to, raises ``OSError`` whose message names the directory; no
    temporary file is left behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot save figure to {path!r}: directory {directory!r} cannot be "
                      f"created ({exc.strerror or exc})") from exc
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI))


def _finish(fig, path, show):
    """Save (if ``path``), then show (if ``show``) or close the figure; return it."""
    try:
        if path is not None:
            _save_png(fig, path)
    except BaseException:
        plt.close(fig)
        raise
    if show:
        plt.show()  # blocks until the window is closed (interactive backends)
        if matplotlib.get_backend().lower() in _NON_INTERACTIVE:
            plt.close(fig)  # nothing could be shown (matplotlib warns); don't keep it open
    else:
        plt.close(fig)
    return fig


# --------------------------------------------------------------------------- #
# Input validation: the general checks are tinycnn.checks'; these are about figures
# --------------------------------------------------------------------------- #

def _output(path, show):
    """``path`` (None, or where to save) and ``show``, checked before anything is drawn."""
    return (None if path is None else checks.path(path, "path")), checks.boolean(show, "show")


def _labels(values, name: str) -> np.ndarray:
    """A 1-D array of non-negative integer class labels, or a clear ValueError.

    (Unlike ``losses.check_labels``, there is no model here to give the number of classes, and the
    message names the argument: y_true or y_pred.)
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        hint = " (one-hot or probabilities? take .argmax(axis=1) first)" if arr.ndim == 2 else ""
        raise ValueError(f"{name} must be a 1-D array of class labels, shape (N,); got shape {arr.shape}{hint}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer class labels, got dtype {arr.dtype}"
            " (convert with .astype(int) if the values are whole numbers)"
        )
    if arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative class labels, found {arr.min()}")
    return arr.astype(np.int64)


def _same_length(**arrays) -> int:
    """The common length N of the named arrays, or a ValueError that gives each one's length."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"inputs must have the same length N: {described}")
    return next(iter(lengths.values()))


def _gray_images(images, name: str = "images"):
    """Images as (N, H, W) plus the (vmin, vmax) to display them with.

    uint8 images are shown on 0..255, floats in [0, 1] on 0..1; anything else
    (e.g. standardised floats) is scaled to each image's own range.
    """
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, H, W, 1) (greyscale); got shape {arr.shape}"
        )
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise ValueError(f"{name} must be numeric (uint8 or float in [0, 1]); got dtype {arr.dtype}")
    if arr.dtype == np.uint8:
        return arr, (0, 255)
    arr = arr.astype(np.float64)
    if arr.size and np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr, (0.0, 1.0)
    return arr, (None, None)


def _class_names(class_names, num_classes: int, labels_name: str = "labels"):
    """A list of display names for classes 0..num_classes-1."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) < num_classes:
        raise ValueError(
            f"class_names has {len(names)} entries but the {labels_name} go up to "
            f"class {num_classes - 1}, so at least {num_classes} names are needed"
        )
    return names


def _probabilities(probs, n_expected: int) -> np.ndarray:
    """probs as a float (N, K) array of probabilities, K >= 2, or a clear ValueError."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, K) with K >= 2 classes; got shape {arr.shape}")
    if arr.shape[0] != n_expected:
        raise ValueError(f"probs has {arr.shape[0]} rows but y_true has {n_expected} labels; "
                         f"expected shape ({n_expected}, K)")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("probs contains NaN or infinite values")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(f"probs must be probabilities in [0, 1], got values in "
                         f"[{arr.min():.3g}, {arr.max():.3g}] (apply softmax to logits first)")
    return arr


# --------------------------------------------------------------------------- #
# Grids of titled images (predictions, mistakes) and their titles
# --------------------------------------------------------------------------- #

def _grid_shape(n: int) -> tuple[int, int]:
    """A near-square (rows, cols) grid with room for n panels, cols >= rows."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    return rows, cols


def _image_grid(images, display_range, panels, suptitle):
    """A figure of greyscale images in a near-square grid, each with its own title.

    Args:
        images: (N, H, W) images, as :func:`_gray_images` returns them.
        display_range: their (vmin, vmax), from :func:`_gray_images`.
        panels: one ``(index into images, title, title colour)`` per image to draw.
        suptitle: the figure's title, one or more lines, wrapped here to the figure's width.
    """
    rows, cols = _grid_shape(len(panels))
    chars = int(1.9 * cols * 13)           # about 13 characters of 10-point text to an inch
    suptitle = "\n".join(textwrap.fill(line, chars) for line in suptitle.split("\n"))
    title_lines = suptitle.count("\n") + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + 0.2 * title_lines + 0.2),
                             layout="constrained", squeeze=False)
    fig.suptitle(suptitle, fontsize=10)
    vmin, vmax = display_range
    for ax, (i, title, colour) in zip(axes.flat, panels):
        ax.imshow(images[i], cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9, color=colour)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    return fig


def _verdict(right: bool, pred: str, true: str, confidence=None):
    """A panel's title and colour: "✔ Dress (97%)", or "✘ Bag (62%)" over "true: Coat"."""
    conf = "" if confidence is None else f" ({_percent(confidence)})"
    if right:
        return f"{_RIGHT_MARK} {pred}{conf}", _RIGHT
    return f"{_WRONG_MARK} {pred}{conf}\ntrue: {true}", _WRONG


def _percent(p: float) -> str:
    """97% style; never shows 100% (or 0%) for a probability that is not exactly 1 (or 0)."""
    pct = 100.0 * float(p)
    if round(pct) >= 100 and pct < 100:
        return f"{math.floor(pct * 10) / 10:.1f}%"
    if round(pct) <= 0 < pct:
        return f"{pct:.1g}%"
    return f"{pct:.0f}%"


# --------------------------------------------------------------------------- #
# 1. Training history
# --------------------------------------------------------------------------- #

def plot_history(history, path=None, show=False):
    """Accuracy and loss per epoch, training vs validation, side by side.

    The training values are what ``fit`` reports: running means over each epoch's batches, taken
    while the weights were still changing (and with dropout and augmentation on); validation is
    measured once, with the weights at the end of the epoch. The figure says so under the plots:
    it is why validation can sit above training, most of all in the first epoch.

    Args:
        history: dict of per-epoch lists, like Keras's ``History.history``:
            ``"loss"`` and ``"accuracy"`` (each length E >= 1), optionally
            ``"val_loss"`` and ``"val_accuracy"`` (also length E). The other names
            Keras logs accuracy under (``"acc"``, ``"sparse_categorical_accuracy"``, ...,
            see :mod:`tinycnn.metrics`) are accepted too, with ``"val_"`` before them.
        path: where to save the PNG (str or path-like), or None.
        show: call ``plt.show()`` instead of closing the figure.

    Returns:
        The matplotlib Figure (two axes: accuracy, then loss). Up to 20 epochs, each
        epoch's value is a marker on the curve; a single epoch is a marker alone, with
        its value written beside it (training's on the left, validation's on the right).
    """
    path, show = _output(path, show)
    if not isinstance(history, dict):
        history = getattr(history, "history", history)  # a Keras-like History object
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of per-epoch lists, got {type(history).__name__}")
    series = {}
    for key, names in (("loss", ["loss"]), ("accuracy", ACCURACY_NAMES),
                       ("val_loss", ["val_loss"]), ("val_accuracy", ["val_" + n for n in ACCURACY_NAMES])):
        for candidate in names:
            if candidate in history:
                values = np.asarray(history[candidate], dtype=np.float64)
                if values.ndim != 1 or values.size == 0:
                    raise ValueError(
                        f"history[{candidate!r}] must be a non-empty list of numbers, one per "
                        f"epoch (shape (E,)); got shape {values.shape}"
                    )
                series[key] = values
                break
    missing = [k for k in ("loss", "accuracy") if k not in series]
    if missing:
        raise ValueError(
            f"history is missing {missing}; expected keys 'loss', 'accuracy' and optionally "
            f"'val_loss', 'val_accuracy'; got keys {sorted(history)}"
        )
    epochs = len(series["loss"])
    wrong_length = {k: len(v) for k, v in series.items() if len(v) != epochs}
    if wrong_length:
        raise ValueError(
            f"every history list must have one value per epoch ({epochs}, the length of "
            f"'loss'); got lengths {wrong_length}"
        )
    validation = "val_loss" in series or "val_accuracy" in series

    x = np.arange(1, epochs + 1)
    # One epoch is one point per curve: a marker, no line (and the legend shows a marker, not a
    # line that is nowhere in the plot). A few epochs: line and markers. Many: the line alone.
    single = epochs == 1
    marker_size = 8 if single else 5 if epochs <= _FEW_EPOCHS else 0
    curves = (("", "training (running mean over the epoch)", "tab:blue", "-", "o", "right", -1),
              ("val_", "validation (at the end of the epoch)", "tab:orange", "--", "s", "left", 1))
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for ax, key, title in ((ax_acc, "accuracy", "Accuracy per epoch"), (ax_loss, "loss", "Loss per epoch")):
        for prefix, label, colour, line, marker, align, side in curves:
            if prefix + key not in series:
                continue
            values = series[prefix + key]
            ax.plot(x, values, color=colour, label=label, linestyle="none" if single else line,
                    marker=marker if marker_size else None, markersize=marker_size)
            if single:              # a lone point: write its value beside it
                ax.annotate(f"{values[0]:.3f}", (1, values[0]), xytext=(10 * side, 0),
                            textcoords="offset points", ha=align, va="center", fontsize=9, color=colour)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_xlim(0.5, epochs + 0.5)
        ax.margins(y=0.15)                      # no point on the frame
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9)
    note = ("Training loss and accuracy are running means over each epoch's batches, taken while the "
            "weights were still changing\n(and with dropout and augmentation on, if the model has any)")
    if validation:
        note += ("; validation is measured once, with the weights at the end of the epoch.\n"
                 "That is why validation can sit above training, most of all in the first epoch.")
    else:
        note += "."
    fig.supxlabel(note, fontsize=9, color="0.25")
    return _finish(fig, path, show)


# --------------------------------------------------------------------------- #
# 2-3. Confusion matrix
# --------------------------------------------------------------------------- #

def confusion_matrix(y_true, y_pred, num_classes=None):
    """Count how often each true class was predicted as each class.

    Args:
        y_true: (N,) integer true labels, >= 0.
        y_pred: (N,) integer predicted labels, >= 0.
        num_classes: K; defaults to ``max(label) + 1`` over both arrays.

    Returns:
        (K, K) int64 array ``cm`` with ``cm[t, p]`` = number of samples of true
        class ``t`` predicted as ``p`` (rows true, columns predicted).
    """
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    _same_length(y_true=t, y_pred=p)
    top = int(max(t.max(initial=-1), p.max(initial=-1)))
    if num_classes is None:
        k = top + 1
    else:
        k = checks.integer(num_classes, "num_classes", minimum=1)
        if top >= k:
            raise ValueError(f"found label {top} but num_classes is {k} (labels must be < {k})")
    counts = np.bincount(t * k + p, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


def plot_confusion_matrix(y_true, y_pred, class_names=None, path=None, show=False, *,
                          num_classes=None):
    """A K x K heatmap of the confusion matrix, each count written in its cell.

    Args:
        y_true: (N,) integer true labels.
        y_pred: (N,) integer predicted labels.
        class_names: K names, e.g. ``["T-shirt/top", ..., "Ankle boot"]``; class
            i is labelled ``class_names[i]``. Default: the digits "0".."K-1".
        path: where to save the PNG, or None.
        show: call ``plt.show()`` instead of closing the figure.
        num_classes: K when class_names is not given. Default: ``len(class_names)``,
            else ``max(10, max label + 1)`` (10 x 10 for MNIST even if a class is absent).

    Returns:
        The matplotlib Figure. Rows are true classes, columns predicted; the
        title gives the overall accuracy.
    """
    path, show = _output(path, show)
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    n = _same_length(y_true=t, y_pred=p)
    if n == 0:
        raise ValueError("y_true and y_pred are empty; need at least one sample")
    top = int(max(t.max(), p.max()))
    if class_names is not None:
        k = len(class_names)
    elif num_classes is not None:
        k = checks.integer(num_classes, "num_classes", minimum=1)
    else:
        k = max(10, top + 1)
    if top >= k:
        raise ValueError(f"found label {top} but there are only {k} classes "
                         f"(class_names/num_classes); labels must be < {k}")
    names = _class_names(class_names, k)
    cm = confusion_matrix(t, p, num_classes=k)
    correct = int(np.trace(cm))

    size = max(5.5, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size), layout="constrained")
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="count")

    fontsize = max(5, min(10, int(110 / k)))
    threshold = cm.max() / 2.0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if cm[i, j] > threshold else "black")

    ticks = np.arange(k)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    long_names = max(len(s) for s in names) > 3
    ax.set_xticklabels(names, rotation=45 if long_names else 0,
                       ha="right" if long_names else "center", rotation_mode="anchor")
    ax.set_yticklabels(names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"Confusion matrix: accuracy {correct / n:.2%} ({correct}/{n})")
    return _finish(fig, path, show)


# --------------------------------------------------------------------------- #
# 4. Example predictions
# --------------------------------------------------------------------------- #

def choose_examples(y_true, y_pred, n=25, seed=0):
    """Pick n sample indices to display, including mistakes whenever there are any.

    Up to a third of the picks (at least one) come from the misclassified
    samples, the rest from the correctly classified ones; if one group is too
    small the other fills the gap. Choices use ``np.random.default_rng(seed)``,
    so the same seed gives the same picks.

    Args:
        y_true: (N,) integer true labels.
        y_pred: (N,) integer predicted labels.
        n: how many to pick (at most N are returned).
        seed: seed for the random choice.

    Returns:
        (min(n, N),) int64 array of distinct indices, in increasing order.
    """
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    total = _same_length(y_true=t, y_pred=p)
    n = min(checks.integer(n, "n", minimum=1), total)
    rng = np.random.default_rng(checks.seed(seed))
    wrong = np.flatnonzero(t != p)
    right = np.flatnonzero(t == p)
    n_wrong = min(len(wrong), max(1, n // 3)) if n else 0
    n_right = min(len(right), n - n_wrong)
    n_wrong = min(len(wrong), n - n_right)  # too few right ones: show more wrong ones
    picks = np.concatenate([rng.choice(wrong, size=n_wrong, replace=False),
                            rng.choice(right, size=n_right, replace=False)])
    return np.sort(picks).astype(np.int64)


def plot_predictions(images, y_true, y_pred=None, class_names=None, n=25, path=None, show=False,
                     seed=0, *, probs=None):
    """A grid of test images, each titled with its prediction: "✔ Dress (97%)", or "✘ Bag (62%)"
    over "true: Coat".

    Right and wrong are marked ✔ and ✘ (and coloured blue and red, as a second cue); a wrong one
    also names the true class. With ``probs``, each title gives the probability the model gave
    its prediction (the largest softmax output). The images are chosen by
    :func:`choose_examples`, which puts mistakes in on purpose (up to a third of the grid), and the
    figure's title says so, with how many of each it picked from how many.

    Args:
        images: (N, H, W) or (N, H, W, 1) greyscale images, uint8 (0..255) or
            float in [0, 1] (other floats are scaled per image).
        y_true: (N,) integer true labels.
        y_pred: (N,) integer predicted labels, or None when ``probs`` is given
            (the prediction is then ``probs.argmax(axis=1)``).
        class_names: names indexed by label; default the label numbers.
        n: number of images (a 5 x 5 grid for 25).
        path: where to save the PNG, or None.
        show: call ``plt.show()`` instead of closing the figure.
        seed: seed for choosing the images.
        probs: (N, K) predicted probabilities (softmax outputs), instead of y_pred;
            each title then gives its prediction's probability.

    Returns:
        The matplotlib Figure.
    """
    path, show = _output(path, show)
    imgs, display_range = _gray_images(images)
    t = _labels(y_true, "y_true")
    if (y_pred is None) == (probs is None):
        raise ValueError("give the predictions once: y_pred, (N,) labels, or probs, (N, K) probabilities")
    pr = None if probs is None else _probabilities(probs, len(t))
    p = _labels(y_pred, "y_pred") if pr is None else pr.argmax(axis=1)
    total = _same_length(images=imgs, y_true=t, y_pred=p)
    if total == 0:
        raise ValueError("no images given (N == 0)")
    k = int(max(t.max(), p.max())) + 1 if pr is None else pr.shape[1]
    names = _class_names(class_names, k)
    idx = choose_examples(t, p, n, seed)

    panels = []
    for i in idx:
        title, colour = _verdict(t[i] == p[i], names[p[i]], names[t[i]],
                                 None if pr is None else pr[i, p[i]])
        panels.append((i, title, colour))
    all_wrong = int(np.sum(t != p))
    shown_wrong = int(np.sum(t[idx] != p[idx]))
    drawn = f"at random (seed {seed})" if isinstance(seed, (int, np.integer)) else "at random"
    lines = [f"{len(idx)} of the {total:,} test images, picked {drawn}: {shown_wrong} of the "
             f"{all_wrong:,} misclassified, {len(idx) - shown_wrong} of the {total - all_wrong:,} "
             f"classified right"]
    if shown_wrong:
        lines.append(f"Mistakes are put in on purpose (up to a third of the grid): their share here is "
                     f"not the error rate, {all_wrong / total:.1%}")
    key = f"{_RIGHT_MARK} right, {_WRONG_MARK} wrong (and under it, the true class)"
    if pr is not None:
        key += "; in brackets, the probability the model gave its prediction"
    lines.append(key)
    return _finish(_image_grid(imgs, display_range, panels, "\n".join(lines)), path, show)


# --------------------------------------------------------------------------- #
# 5. Convolution filters, in a montage: small tiles in one image, numbered above each tile
# --------------------------------------------------------------------------- #

def _montage(tiles, per_row, gap, label_rows):
    """Tiles (h, w, n) laid out in rows of ``per_row``, NaN (drawn white) between them.

    One image instead of one matplotlib axes per tile: drawing it is many times faster, and a
    single colour scale (hence one colour bar) covers every tile. Tiles side by side are ``gap``
    pixels apart; above each row of tiles, ``label_rows`` rows of NaN hold the tiles' numbers
    (:func:`_number_tiles`), so that a number never covers a pixel of data.

    Returns the image, (rows*(label_rows+h), cols*(w+gap)-gap), and each tile's top-left corner (row, col).
    """
    h, w, n = tiles.shape
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    pitch = label_rows + h
    out = np.full((rows * pitch, cols * (w + gap) - gap), np.nan)
    corners = []
    for i in range(n):
        r, c = (i // cols) * pitch + label_rows, (i % cols) * (w + gap)
        out[r:r + h, c:c + w] = tiles[:, :, i]
        corners.append((r, c))
    return out, corners


def _label_rows(inches_per_pixel):
    """How many image rows of a montage the numbers above its tiles need, at that scale.

    An 8-point number is 0.11 inch high; with room above and below it (so that it sits clearly
    nearer its own tile than the row above), 0.24 inch.
    """
    return max(1, math.ceil(0.24 / inches_per_pixel))


def _number_tiles(ax, corners, tile_width):
    """Write each tile's index just above its top edge, centred, in the space _montage left."""
    for i, (r, c) in enumerate(corners):
        ax.annotate(str(i), xy=(c + (tile_width - 1) / 2, r - 0.5), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=_LABEL_PT)


def _blank_nan(cmap_name):
    """The colormap with NaN (the gaps between tiles) drawn white."""
    return matplotlib.colormaps[cmap_name].with_extremes(bad="white")


def plot_filters(kernel, path=None, show=False, layer_name=None):
    """Each filter of a convolution kernel as a small image, on one colour scale.

    Args:
        kernel: (KH, KW, C_in, F) weights (Keras layout). With C_in == 1 the
            single channel is drawn; with C_in > 1, the mean over input channels.
        path: where to save the PNG, or None.
        show: call ``plt.show()`` instead of closing the figure.
        layer_name: the layer the kernel belongs to, named in the title.

    Returns:
        The matplotlib Figure: the F filters side by side in one image (8 to a
        row), each numbered above it, with a diverging colormap ("bwr") centred at 0 and
        scaled to the largest absolute weight of all filters: white is 0, red
        a positive weight (the filter responds to a bright pixel there), blue
        a negative one. The colour bar gives the scale.
    """
    path, show = _output(path, show)
    if layer_name is not None:
        layer_name = checks.text(layer_name, "layer_name")
    w = np.asarray(kernel)
    if w.ndim != 4:
        raise ValueError(
            f"kernel must have 4 dimensions, shape (KH, KW, C_in, F) (Keras layout); "
            f"got {w.ndim} dimension(s), shape {w.shape}"
        )
    if w.dtype.kind not in "uif":
        raise ValueError(f"kernel must be numeric, got dtype {w.dtype}")
    kh, kw, c_in, f = w.shape
    if min(w.shape) == 0:
        raise ValueError(f"kernel has an empty dimension: shape {w.shape} (KH, KW, C_in, F)")
    shown = w.astype(np.float64).mean(axis=2)  # (KH, KW, F)
    per_row, gap = 8, 1
    cols = min(f, per_row)
    # The scale first (a tile at most 0.75 inch, the montage at most 7 inches wide), then the
    # room for the numbers at that scale, then a figure of the montage's size at that scale.
    inches = min(0.75 / max(kh, kw), 7.0 / (cols * (kw + gap) - gap))
    image, corners = _montage(shown, per_row, gap, _label_rows(inches))
    limit = float(np.max(np.abs(shown))) or 1.0

    height, width = image.shape
    fig, ax = plt.subplots(figsize=(width * inches + 2.2, height * inches + 0.8), layout="constrained")
    how = "" if c_in == 1 else f", mean over {c_in} input channels"
    fig.suptitle(f"{layer_name + ': ' if layer_name else ''}{f} filters, {kh}x{kw}{how}")
    im = ax.imshow(image, cmap=_blank_nan("bwr"), vmin=-limit, vmax=limit, interpolation="nearest")
    _number_tiles(ax, corners, kw)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)
    fig.colorbar(im, ax=ax, shrink=0.9, label="weight (red > 0 > blue)")
    return _finish(fig, path, show)


# --------------------------------------------------------------------------- #
# 6. Feature maps
# --------------------------------------------------------------------------- #

_FMAP_WIDTH = 10.0        # inches: the figure
_FMAP_PANEL = 8.0         # inches: about what a layer's montage gets of it (less its label and bar)


def _how_to_read_feature_maps(activation, sizes):
    """The text beside the input image: what a tile is, and what its colours mean."""
    relu = activation is not None and activation.lower() == "relu"
    lines = ["Each tile is one channel of a convolution's output",
             "for the image on the left: one filter slid over it."]
    if relu:
        lines += ["The values are after ReLU, so none is below 0:",
                  "dark (0) where the filter's pattern is absent,",
                  "bright where it is strongest."]
    elif activation is not None:
        lines += [f"The values are after {activation}."]
    lines += ["Each layer has its own colour scale (its bar, right);",
              "the number above a tile is the channel's index."]
    if len(sizes) > 1 and all(b < a for a, b in zip(sizes, sizes[1:])):
        lines += ["Later maps are smaller (pooling shrank them), so each",
                  "of their pixels covers a larger patch of the input."]
    return "\n".join(lines)


def plot_feature_maps(image, feature_maps, path=None, show=False, max_channels=16, per_row=8,
                      activation=None):
    """The input image, then the channels of each convolution's output for it.

    Args:
        image: (H, W) or (H, W, 1) greyscale input image.
        feature_maps: list of ``(name, array)`` pairs (or a dict name -> array),
            one per layer, each array (H', W', C) for this one image (a leading
            batch axis of size 1, (1, H', W', C), is dropped).
        path: where to save the PNG, or None.
        show: call ``plt.show()`` instead of closing the figure.
        max_channels: at most this many channels (the first ones) per layer.
        per_row: channels side by side in one row.
        activation: the activation the maps have been through, such as "ReLU",
            said in the figure ("after ReLU"); None says nothing about it.

    Returns:
        The matplotlib Figure: the input image (titled, with its colour bar) and,
        beside it, how to read the figure; under them one panel per layer, labelled
        with its name, its size and how many channels are shown. Its channels are
        tiles on one colour scale, each numbered above it, and its colour bar gives
        the values.
    """
    path, show = _output(path, show)
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"image must have shape (H, W) or (H, W, 1); got shape {img.shape}")
    max_channels = checks.integer(max_channels, "max_channels", minimum=1)
    per_row = checks.integer(per_row, "per_row", minimum=1)
    if activation is not None:
        activation = checks.text(activation, "activation")
    if isinstance(feature_maps, dict):
        feature_maps = list(feature_maps.items())
    entries = []
    for k, entry in enumerate(feature_maps):
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(f"feature_maps[{k}] must be a (name, array) pair, got {type(entry).__name__}")
        name, fmap = entry
        fmap = np.asarray(fmap)
        if fmap.ndim == 4 and fmap.shape[0] == 1:
            fmap = fmap[0]
        if fmap.ndim != 3 or fmap.shape[-1] == 0:
            raise ValueError(
                f"feature map {name!r} must have shape (H', W', C) for one image; got shape {fmap.shape}"
            )
        entries.append((str(name), fmap))
    if not entries:
        raise ValueError("feature_maps is empty; expected a list of (name, array (H', W', C)) pairs")

    montages = []
    for name, fmap in entries:
        shown = fmap[:, :, :max_channels].astype(np.float64)
        h, w, c = shown.shape
        gap = max(1, h // 10)
        cols = min(c, per_row)
        inches = _FMAP_PANEL / (cols * (w + gap) - gap)        # each layer spans the same width
        montage, corners = _montage(shown, per_row, gap, _label_rows(inches))
        montages.append((name, fmap, montage, corners, montage.shape[0] * inches))
    top = 1.5                                                   # inches: the input image's row
    heights = [top] + [height for *_, height in montages]
    fig = plt.figure(figsize=(_FMAP_WIDTH, sum(heights) + 0.5 + 0.15 * len(montages)), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, 2.4])
    after = f" (after {activation})" if activation else ""
    fig.suptitle(f"Feature maps: what each convolution's channels respond to in this image{after}")

    ax_in = fig.add_subplot(grid[0, 0])
    gray = (0, 255) if img.dtype == np.uint8 else (None, None)
    im = ax_in.imshow(img, cmap="gray", vmin=gray[0], vmax=gray[1])
    ax_in.set_title(f"input image, {img.shape[0]}x{img.shape[1]}", fontsize=10, loc="left")
    ax_in.set_anchor("W")                     # on the left, its colour bar just beside it
    fig.colorbar(im, cax=ax_in.inset_axes([1.04, 0.0, 0.06, 1.0]), label="pixel")
    ax_text = fig.add_subplot(grid[0, 1])     # beside it, what was empty space: how to read this
    ax_text.axis("off")
    ax_text.text(0.0, 1.0, _how_to_read_feature_maps(activation, [f.shape[0] for _, f in entries]),
                 transform=ax_text.transAxes, ha="left", va="top", fontsize=9, linespacing=1.35)

    axes = [ax_in]
    for row, (name, fmap, montage, corners, _) in enumerate(montages, start=1):
        ax = fig.add_subplot(grid[row, :])
        im = ax.imshow(montage, cmap=_blank_nan("viridis"), interpolation="nearest")
        _number_tiles(ax, corners, fmap.shape[1])
        c = fmap.shape[-1]
        shown = f"channels 0-{max_channels - 1} of {c}" if c > max_channels else f"{c} channels"
        ax.set_ylabel(f"{name}\n{fmap.shape[0]}x{fmap.shape[1]}, {shown}", fontsize=9)
        ax.set_frame_on(False)
        fig.colorbar(im, ax=ax, label="activation" + after, shrink=0.9)
        axes.append(ax)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, path, show)


# --------------------------------------------------------------------------- #
# 7. Most confident mistakes
# --------------------------------------------------------------------------- #

def most_confident_mistakes(y_true, probs, n=16):
    """Indices of the n misclassified samples predicted most confidently.

    A sample is misclassified when ``argmax(probs[i]) != y_true[i]``; its
    confidence is the probability given to that wrong predicted class.

    Args:
        y_true: (N,) integer true labels.
        probs: (N, K) predicted class probabilities.
        n: at most this many indices are returned.

    Returns:
        int64 array of up to n indices, by confidence descending (ties by index);
        empty if nothing is misclassified.
    """
    t = _labels(y_true, "y_true")
    pr = _probabilities(probs, len(t))
    n = checks.integer(n, "n", minimum=1)
    if t.size and t.max() >= pr.shape[1]:
        raise ValueError(f"y_true has label {t.max()} but probs has only {pr.shape[1]} classes")
    pred = pr.argmax(axis=1)
    wrong = np.flatnonzero(pred != t)
    confidence = pr[wrong, pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order][:n].astype(np.int64)


def plot_mistakes(images, y_true, probs, class_names=None, n=16, path=None, show=False):
    """The most confidently wrong predictions, each titled "✘ Bag (97%)" over "true: Coat", in red.

    Args:
        images: (N, H, W) or (N, H, W, 1) greyscale images, uint8 or float in [0, 1].
        y_true: (N,) integer true labels.
        probs: (N, K) predicted probabilities (e.g. softmax outputs).
        class_names: K names indexed by label; default the label numbers.
        n: at most this many images, chosen by :func:`most_confident_mistakes`.
        path: where to save the PNG, or None.
        show: call ``plt.show()`` instead of closing the figure.

    Returns:
        The matplotlib Figure. With no mistakes it holds a message saying so.
    """
    path, show = _output(path, show)
    imgs, display_range = _gray_images(images)
    t = _labels(y_true, "y_true")
    _same_length(images=imgs, y_true=t)
    pr = _probabilities(probs, len(t))
    names = _class_names(class_names, pr.shape[1], "probs columns")
    idx = most_confident_mistakes(t, pr, n)

    if len(idx) == 0:
        fig, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, f"No mistakes: all {len(t)} predictions are correct.",
                ha="center", va="center", fontsize=14, color=_RIGHT, transform=ax.transAxes)
        return _finish(fig, path, show)

    pred = pr.argmax(axis=1)
    panels = [(i, *_verdict(False, names[pred[i]], names[t[i]], pr[i, pred[i]])) for i in idx]
    total_wrong = int(np.sum(pred != t))
    suptitle = (f"The {len(idx)} most confident mistakes, of {total_wrong:,} misclassified\n"
                f"{_WRONG_MARK} the prediction, in brackets the probability the model gave it; "
                f"under it, the true class")
    return _finish(_image_grid(imgs, display_range, panels, suptitle), path, show)
