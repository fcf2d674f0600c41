"""Callbacks: code that ``fit`` calls at fixed points of training, as in Keras.

``fit`` calls, in order: ``on_train_begin()``, then for each epoch ``on_epoch_begin(epoch)``,
``on_batch_end(batch, logs)`` after every batch, ``on_epoch_end(epoch, logs)``, and finally
``on_train_end()``. ``logs`` is a dict such as {"loss": 0.31, "accuracy": 0.91,
"val_loss": ..., "val_accuracy": ...}. A callback stops training by setting
``self.model.stop_training = True``.

If a callback raises, ``fit`` stops and the error propagates; the History of the epochs that
finished is still on the model, as ``model.history``.
"""

import difflib
import os
import string
import time

from . import checks
from .files import unwritable


class Callback:
    """Base class: every hook does nothing. ``fit`` sets ``self.model``, and ``self.params``
    before ``on_train_begin``: ``{"epochs": ..., "steps": batches per epoch, "verbose": ...,
    "metrics": the names each epoch's logs will hold, e.g. ["loss", "accuracy", "val_loss",
    "val_accuracy"]}``."""

    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def check_callbacks(callbacks):
    """A list of Callback objects (None: none), as ``fit`` takes them."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callbacks, got {checks.show(callbacks)}; "
                        "wrap a single one in a list: callbacks=[cb].")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must hold Callback objects (tinycnn.callbacks), got "
                            f"{checks.show(cb)}.")
    return list(callbacks)


class History(Callback):
    """Records the logs of every epoch: ``history.history["loss"]`` is a list, one per epoch.

    ``fit`` always adds one and returns it. ``epoch`` lists the epoch indices (from 0),
    ``seconds`` the wall-clock time of each epoch (validation included), and ``interrupted``
    says whether Ctrl-C stopped training early. ``interrupted_at`` then says where, counting
    from 1: ``{"epoch": 3, "batch": 40, "batches": 85}`` when Ctrl-C came after batch 40 of 85
    in the third epoch (the weights include those 40 updates, which ``history`` does not list),
    or ``{"epoch": 3, "batch": 0, ...}`` when it came before that epoch's first update.
    ``diverged_at`` has the same form when ``fit`` refused a step that was not finite; the
    history then ends with that unfinished epoch's logs, over the batches it did apply.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.seconds = []
        self.interrupted = False
        self.interrupted_at = None
        self.diverged_at = None
        self.current_epoch, self.batches_done = None, 0     # where training is now

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.current_epoch, self.batches_done = epoch, 0

    def on_batch_end(self, batch, logs=None):
        self.batches_done = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


def _improvement_test(monitor, mode, min_delta):
    """Return a function better(current, best) for a metric: lower is better for losses."""
    mode = checks.choice(mode, "mode", ("auto", "min", "max"))
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    if mode == "min":
        return lambda current, best: current < best - min_delta
    return lambda current, best: current > best + min_delta


def _unlogged(name, metrics):
    """What to do about ``name``, which is not among the ``metrics`` fit will log: the sentences
    that end the error message."""
    fix = ""
    if name.startswith("val_") and not any(m.startswith("val_") for m in metrics):
        fix = ("'val_*' metrics are measured on validation data: pass validation_data=(x_val, y_val) "
               "or validation_split=0.1 to fit. ")
        metrics = list(metrics) + [f"val_{m}" for m in metrics]     # what fit would log then
    close = difflib.get_close_matches(name, metrics, n=1, cutoff=0.5)
    if close and close[0] != name:                  # "val_acc" is "val_accuracy" here
        return fix + f"Did you mean {close[0]!r}?"
    return fix.rstrip() or "Choose one of those."


class _Monitor(Callback):
    """Shared by EarlyStopping and ModelCheckpoint: watch one metric, warn once if it is missing."""

    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = checks.text(monitor, "monitor")
        self.better = _improvement_test(self.monitor, mode, checks.number(min_delta, "min_delta", minimum=0.0))
        self._warned = False

    def _check_monitor_is_logged(self, who, consequence):
        """At train begin, when fit has said which metrics it will log (``self.params``): a
        metric that never appears is an error now, not a whole training run that watched
        nothing. A callback driven by hand has no params, and is not checked."""
        metrics = (self.params or {}).get("metrics")
        if metrics is None or self.monitor in metrics:
            return
        raise ValueError(f"{who} watches {self.monitor!r}, which this fit never logs (its logs hold "
                         f"{list(metrics)}), so it would {consequence}. {_unlogged(self.monitor, metrics)}")

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None and not self._warned:
            import warnings
            warnings.warn(f"{type(self).__name__} is watching {self.monitor!r}, which is not among the "
                          f"metrics {sorted(logs or {})}. Pass validation data for 'val_*' metrics, "
                          "or choose one of those.", RuntimeWarning, stacklevel=3)
            self._warned = True
        return value


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs in a row.

    As in Keras, the epoch that makes the count reach ``patience`` is the last one (with
    patience=0, the first epoch that does not improve).

    With ``restore_best_weights=True`` the model ends with the weights of its best epoch
    (when it stopped early or not, a choice Keras 3 made too).

    A ``monitor`` that this fit never logs (``"val_loss"`` without validation data) is a
    ValueError when training begins; Keras only warns, after each epoch, and trains to the end.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience = checks.integer(patience, "patience", minimum=0)
        self.restore_best_weights = checks.boolean(restore_best_weights, "restore_best_weights")

    def on_train_begin(self, logs=None):
        self._check_monitor_is_logged("EarlyStopping", "never stop training")
        self.best, self.best_epoch, self.best_weights, self.wait = None, None, None, 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None:
            return
        if self.best is None or self.better(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model after every epoch, or only when ``monitor`` improves (``save_best_only``).

    ``path`` may contain ``{epoch}`` and any metric, formatted as in Keras:
    ``"checkpoints/model-{epoch:02d}-{val_loss:.3f}.npz"`` (epochs counted from 1). Each save is
    atomic (``model.save``), so an interrupted save never corrupts an earlier checkpoint.

    When training begins, ``path`` is formatted once with stand-in values and its folder is
    created (as Keras does; up to the first field, so ``"ckpt-{epoch}/model.npz"`` makes each
    epoch's folder when it saves), so a field this fit never logs (``{val_loss}`` without validation
    data), a format that does not suit the value (``{loss:d}``: a metric is a float) or a folder
    that cannot be written fails before the first epoch, not after it. So does
    ``save_best_only=True`` with a ``monitor`` this fit never logs.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        super().__init__(monitor, mode)
        self.path = os.fspath(checks.path(path, "path"))
        self.save_best_only = checks.boolean(save_best_only, "save_best_only")
        self.best = None
        self.saved = []
        try:
            fields = {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(self.path)
                      if field is not None}
        except ValueError as err:
            raise ValueError(f"ModelCheckpoint path {self.path!r} is not a valid pattern ({err}); "
                             "write {{ and }} for literal braces.") from None
        known = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
        unknown = sorted(fields - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.5)
            hint = f" (did you mean {{{close[0]}}} for {{{unknown[0]}}}?)" if close else ""
            raise ValueError(f"ModelCheckpoint path {self.path!r} uses {unknown}; it may use "
                             f"{{epoch}}, {{loss}}, {{accuracy}}, {{val_loss}} and {{val_accuracy}}{hint}.")

    def on_train_begin(self, logs=None):
        # Everything that on_epoch_end could trip over is tried now, before an epoch is spent.
        self._check_path_formats()
        if self.save_best_only:
            self._check_monitor_is_logged("ModelCheckpoint(save_best_only=True)", "never save a checkpoint")
        directory = self._make_folder(self._fixed_folder())
        why = unwritable(directory)
        if why is not None:           # before the first epoch, not after it: even as root
            raise OSError(f"ModelCheckpoint cannot write into {directory!r} (for {self.path!r}): it {why}; "
                          "choose another path.")

    def _fixed_folder(self):
        """The folder every checkpoint goes under: the path's folders up to the first field, so
        that "runs/ckpt-{epoch}/model.npz" gives runs/, never a folder named "ckpt-{epoch}"."""
        fixed = ""
        for literal, field, _, _ in string.Formatter().parse(self.path):
            fixed += literal                   # with {{ and }} already read as { and }
            if field is not None:
                break
        return os.path.dirname(fixed)

    def _make_folder(self, directory):
        directory = os.path.abspath(directory or ".")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise OSError(f"ModelCheckpoint cannot create the folder {directory!r} for {self.path!r} "
                          f"({err.strerror}); choose another path.") from err
        return directory

    def _check_path_formats(self):
        """Format ``path`` once with values of the types fit will give it (the epoch an int,
        every metric in ``self.params["metrics"]`` a float), so that a field this fit never logs
        or a format spec that does not suit its value fails before training, not after the first
        epoch. Without params (a callback driven by hand) there is nothing to try it with."""
        metrics = (self.params or {}).get("metrics")
        if metrics is None:
            return
        try:
            self.path.format(epoch=1, **{name: 0.5 for name in metrics})
        except KeyError as err:
            raise ValueError(f"ModelCheckpoint path {self.path!r} uses {{{err.args[0]}}}, which this fit "
                             f"never logs (its logs hold {list(metrics)}). "
                             f"{_unlogged(err.args[0], metrics)}") from None
        except (ValueError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"ModelCheckpoint path {self.path!r} cannot be formatted with the values fit "
                             f"gives it ({err}): the epoch is an int counted from 1, such as {{epoch:02d}}, "
                             f"and every metric a float, such as {{val_loss:.3f}}.") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = self._current(logs)
            if current is None or (self.best is not None and not self.better(current, self.best)):
                return
            self.best = current
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except KeyError as err:
            raise ValueError(f"ModelCheckpoint path {self.path!r} needs {err.args[0]!r}, which this "
                             f"training does not compute (it has {sorted(logs)}); pass validation "
                             "data for 'val_*' values.") from None
        self._make_folder(os.path.dirname(path))       # a folder named by a field, as Keras does
        self.model.save(path)
        self.saved.append(path)
