"""Callbacks: code that ``fit`` calls at fixed points of training, as in Keras.

``fit`` calls, in order: ``on_train_begin()``, then for each epoch ``on_epoch_begin(epoch)``,
``on_batch_end(batch, logs)`` after every batch, ``on_epoch_end(epoch, logs)``, and finally
``on_train_end()``. ``logs`` is a dict such as {"loss": 0.31, "accuracy": 0.91,
"val_loss": ..., "val_accuracy": ...}. A callback stops training by setting
``self.model.stop_training = True``.

If a callback raises, ``fit`` stops and the error propagates; the History of the epochs that
finished is still on the model, as ``model.history``.

The callbacks here are Keras's, with Keras's names, arguments (in Keras's order), defaults and
messages: ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``,
``LearningRateScheduler`` and ``CSVLogger``. Each class docstring says where it differs. One
difference is common to all: what Keras finds out after an epoch (a watched metric that this fit
never logs, a file that cannot be written) is an error here before the first epoch.
"""

import csv
import difflib
import inspect
import io
import math
import os
import string
import time

from . import checks, schedules
from .files import atomic_write, check_writable, unwritable
from .metrics import ACCURACY_NAMES

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "LearningRateScheduler", "CSVLogger"]


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
        self.on_train_batch_end(batch, logs)      # Keras's newer name for the same hook

    def on_train_batch_end(self, batch, logs=None):
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
    if _lower_is_better(monitor, mode):
        return lambda current, best: current < best - min_delta
    return lambda current, best: current > best + min_delta


def _lower_is_better(monitor, mode):
    """``mode`` "min" or "max", or "auto": "max" for a metric named like accuracy, as in Keras."""
    return mode == "min" or (mode == "auto" and "acc" not in monitor)


def _verbose(verbose):
    """A callback's ``verbose``: 0 silent, 1 a line when it acts (Keras's two values)."""
    return checks.choice(verbose, "verbose", (0, 1))


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
    """Shared by EarlyStopping, ModelCheckpoint and ReduceLROnPlateau: watch one metric, warn once
    if it is missing."""

    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = checks.text(monitor, "monitor")
        self.mode = checks.choice(mode, "mode", ("auto", "min", "max"))
        self.min_delta = checks.number(min_delta, "min_delta", minimum=0.0)
        self.better = _improvement_test(self.monitor, self.mode, self.min_delta)
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
    """Stop training when ``monitor`` has stopped improving; Keras's EarlyStopping.

    ``EarlyStopping(monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
    baseline=None, restore_best_weights=False, start_from_epoch=0)``, Keras's arguments in
    Keras's order:

    - ``monitor``: the metric to watch, a name in the logs: "val_loss", "loss", "val_accuracy"...
    - ``min_delta``: the least change that counts as an improvement.
    - ``patience``: how many epochs in a row without improvement end training. The epoch that
      makes the count reach ``patience`` is the last one (with patience=0, the first epoch that
      does not improve).
    - ``verbose``: 1 prints "Epoch 7: early stopping" when it stopped training, and "Restoring
      model weights from the end of the best epoch: 5." when it restores them; 0 prints nothing.
    - ``mode``: "min" (lower is better), "max", or "auto": "max" for a metric whose name holds
      "acc", else "min".
    - ``baseline``: a value the metric must beat. Until an epoch beats it, every epoch counts
      towards ``patience``, even one that improves on the epochs before, so training stops after
      ``patience`` epochs unless one beats the baseline. None: no baseline.
    - ``restore_best_weights``: True: the model ends with the weights of its best epoch, whether
      it stopped early or not (a choice Keras 3 made too), and with a baseline even when no epoch
      beat it. False: the weights of the last epoch.
    - ``start_from_epoch``: epochs to train before watching at all, a warm-up: they count
      neither towards ``patience`` nor as the best epoch.

    After ``fit``: ``stopped_epoch`` (the epoch it stopped training, counted from 0; 0 if it
    did not stop it, as in Keras), ``best`` and ``best_epoch``.

    Where it differs from Keras: a ``monitor`` that this fit never logs (``"val_loss"`` without
    validation data) is a ValueError when training begins (Keras warns after each epoch and
    trains to the end); a negative ``min_delta`` or an unknown ``mode`` is an error (Keras takes
    the absolute value, or falls back to "auto"). With a ``baseline``, Keras's code keeps
    training for as long as each epoch improves on the last, even if none beats the baseline;
    here it stops after ``patience`` epochs, as Keras's documentation says.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = checks.integer(patience, "patience", minimum=0)
        self.verbose = _verbose(verbose)
        self.baseline = None if baseline is None else checks.number(baseline, "baseline", alternative="None")
        self.restore_best_weights = checks.boolean(restore_best_weights, "restore_best_weights")
        self.start_from_epoch = checks.integer(start_from_epoch, "start_from_epoch", minimum=0)

    def on_train_begin(self, logs=None):
        self._check_monitor_is_logged("EarlyStopping", "never stop training")
        self.best, self.best_epoch, self.best_weights = None, None, None
        self.wait = 0               # epochs since the last that improved (and beat the baseline)
        self.stopped_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self.best is None or self.better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self.better(current, self.baseline):
                self.wait = 0
        # An epoch that improved never stops training (patience=0 stops at the first that does
        # not); nor, as in Keras, does the first epoch, so stopped_epoch=0 means "did not stop".
        if self.wait > 0 and self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", flush=True)
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.", flush=True)
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model after every epoch, or only when ``monitor`` improves; Keras's ModelCheckpoint.

    ``ModelCheckpoint(filepath, monitor="val_loss", verbose=0, save_best_only=False,
    save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None)``,
    Keras's arguments in Keras's order:

    - ``filepath``: where to save (a str or pathlib.Path). It may contain ``{epoch}`` and any
      metric, formatted as in Keras: ``"checkpoints/model-{epoch:02d}-{val_loss:.3f}.npz"``
      (epochs counted from 1). Each save is atomic (``model.save``), so an interrupted save
      never corrupts an earlier checkpoint.
    - ``monitor``: the metric that decides what is best, for ``save_best_only``.
    - ``verbose``: 1 prints a line for every epoch: "Epoch 3: val_loss improved from 0.41230 to
      0.39871, saving model to m.npz", "Epoch 4: val_loss did not improve from 0.39871", or
      "Epoch 3: saving model to m.npz"; 0 prints nothing.
    - ``save_best_only``: True saves only an epoch that improves on the best so far (a
      ``filepath`` without fields is then overwritten by each better model); False saves every
      epoch.
    - ``save_weights_only``: True saves with ``model.save_weights(filepath)``, for
      ``model.load_weights``; False with ``model.save(filepath)``, for ``tinycnn.load_model``.
    - ``mode``: "min", "max", or "auto" ("max" for a metric whose name holds "acc"), as in
      EarlyStopping.
    - ``save_freq``: "epoch", the only value: a save at the end of every epoch. Keras also takes
      a number of batches; here that is a ValueError.
    - ``initial_value_threshold``: a value an epoch must beat to be saved at all with
      ``save_best_only`` (None: the first epoch is saved).

    ``saved`` lists the paths saved so far. Keras wants a ``.keras`` or ``.weights.h5`` name;
    here any name works and the file is NumPy's ``.npz``, whatever its ending.

    When training begins, ``filepath`` is formatted once with stand-in values and its folder is
    created (as Keras does; up to the first field, so ``"ckpt-{epoch}/model.npz"`` makes each
    epoch's folder when it saves), so a field this fit never logs (``{val_loss}`` without validation
    data), a format that does not suit the value (``{loss:d}``: a metric is a float) or a folder
    that cannot be written fails before the first epoch, not after it. So does
    ``save_best_only=True`` with a ``monitor`` this fit never logs (Keras then warns, and saves
    every epoch).
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(checks.path(filepath, "filepath"))
        self.verbose = _verbose(verbose)
        self.save_best_only = checks.boolean(save_best_only, "save_best_only")
        self.save_weights_only = checks.boolean(save_weights_only, "save_weights_only")
        if not (isinstance(save_freq, str) and save_freq == "epoch"):
            raise ValueError(f"save_freq must be 'epoch' (a save at the end of every epoch), got "
                             f"{checks.show(save_freq)}: tinycnn's ModelCheckpoint supports only 'epoch', "
                             "not a save every N batches.")
        self.save_freq = save_freq
        self.best = None if initial_value_threshold is None else checks.number(
            initial_value_threshold, "initial_value_threshold", alternative="None")
        self.saved = []
        try:
            fields = {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(self.filepath)
                      if field is not None}
        except ValueError as err:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} is not a valid pattern ({err}); "
                             "write {{ and }} for literal braces.") from None
        metrics = ["loss", *ACCURACY_NAMES]
        known = ["epoch", *metrics, *(f"val_{m}" for m in metrics)]
        unknown = sorted(fields - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.5)
            hint = f" (did you mean {{{close[0]}}} for {{{unknown[0]}}}?)" if close else ""
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} uses {unknown}; it may use "
                             "{epoch}, {loss} and {val_loss}, and the accuracy under the name compile gave "
                             f"it, e.g. {{accuracy}} and {{val_accuracy}}{hint}.")

    def on_train_begin(self, logs=None):
        # Everything that on_epoch_end could trip over is tried now, before an epoch is spent.
        self._check_path_formats()
        if self.save_best_only:
            self._check_monitor_is_logged("ModelCheckpoint(save_best_only=True)", "never save a checkpoint")
        if self.save_weights_only and not hasattr(self.model, "save_weights"):
            raise TypeError(f"ModelCheckpoint(save_weights_only=True) saves with model.save_weights, which "
                            f"this {type(self.model).__name__} does not have; use save_weights_only=False "
                            "(model.save).")
        directory = self._make_folder(self._fixed_folder())
        why = unwritable(directory)
        if why is not None:           # before the first epoch, not after it: even as root
            raise OSError(f"ModelCheckpoint cannot write into {directory!r} (for {self.filepath!r}): it {why}; "
                          "choose another filepath.")

    def _fixed_folder(self):
        """The folder every checkpoint goes under: the path's folders up to the first field, so
        that "runs/ckpt-{epoch}/model.npz" gives runs/, never a folder named "ckpt-{epoch}"."""
        fixed = ""
        for literal, field, _, _ in string.Formatter().parse(self.filepath):
            fixed += literal                   # with {{ and }} already read as { and }
            if field is not None:
                break
        return os.path.dirname(fixed)

    def _make_folder(self, directory):
        directory = os.path.abspath(directory or ".")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise OSError(f"ModelCheckpoint cannot create the folder {directory!r} for {self.filepath!r} "
                          f"({err.strerror}); choose another filepath.") from err
        return directory

    def _check_path_formats(self):
        """Format ``filepath`` once with values of the types fit will give it (the epoch an int,
        every metric in ``self.params["metrics"]`` a float), so that a field this fit never logs
        or a format spec that does not suit its value fails before training, not after the first
        epoch. Without params (a callback driven by hand) there is nothing to try it with."""
        metrics = (self.params or {}).get("metrics")
        if metrics is None:
            return
        try:
            self.filepath.format(epoch=1, **{name: 0.5 for name in metrics})
        except KeyError as err:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} uses {{{err.args[0]}}}, which this fit "
                             f"never logs (its logs hold {list(metrics)}). "
                             f"{_unlogged(err.args[0], metrics)}") from None
        except (ValueError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} cannot be formatted with the values fit "
                             f"gives it ({err}): the epoch is an int counted from 1, such as {{epoch:02d}}, "
                             f"and every metric a float, such as {{val_loss:.3f}}.") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        try:
            filepath = self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as err:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} needs {err.args[0]!r}, which this "
                             f"training does not compute (it has {sorted(logs)}); pass validation "
                             "data for 'val_*' values.") from None
        if self.save_best_only:
            current = self._current(logs)
            if current is None:
                return
            best = self.best
            if best is None:         # as in Keras 3, which says "improved from inf to ..." first
                best = math.inf if _lower_is_better(self.monitor, self.mode) else -math.inf
            if not self.better(current, best):
                self._say(f"Epoch {epoch + 1}: {self.monitor} did not improve from {best:.5f}")
                return
            self._say(f"Epoch {epoch + 1}: {self.monitor} improved from {best:.5f} to {current:.5f}, "
                      f"saving model to {filepath}")
            self.best = current
        else:
            self._say(f"Epoch {epoch + 1}: saving model to {filepath}")
        self._make_folder(os.path.dirname(filepath))       # a folder named by a field, as Keras does
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        self.saved.append(filepath)

    def _say(self, line):
        if self.verbose:
            print(line, flush=True)


def _settable_learning_rate(model, who):
    """Refuse, before training, to set the learning rate of an optimizer that follows a schedule:
    the schedule sets the rate at every step, so the callback's rate would be silently replaced
    (or the schedule silently dropped). Keras refuses it too, when the callback first sets it."""
    optimizer = model.optimizer
    if isinstance(optimizer.learning_rate, schedules.LearningRateSchedule):
        raise TypeError(f"{who} sets the optimizer's learning rate, but this {type(optimizer).__name__} was made "
                        f"with a schedule ({type(optimizer.learning_rate).__name__}), which sets it at every "
                        "step; its learning rate is not settable (Keras says the same). Use one of the two: "
                        f"a number, such as {type(optimizer).__name__}(learning_rate=1e-3), with {who}, or "
                        f"the schedule without {who}.")


class ReduceLROnPlateau(_Monitor):
    """Reduce the learning rate when ``monitor`` has stopped improving; Keras's ReduceLROnPlateau.

    ``ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
    min_delta=1e-4, cooldown=0, min_lr=0.0)``, Keras's arguments in Keras's order:

    - ``monitor``, ``mode``, ``min_delta``: the metric, which way is better, and the least
      change that counts as an improvement, as in EarlyStopping.
    - ``factor``: after ``patience`` epochs in a row without improvement, the learning rate
      becomes ``max(learning_rate * factor, min_lr)``; 0 < factor < 1.
    - ``patience``: how many epochs in a row without improvement bring a reduction; the count
      then starts again from 0.
    - ``verbose``: 1 prints "Epoch 12: ReduceLROnPlateau reducing learning rate to 0.0001."
    - ``cooldown``: how many epochs after a reduction are not counted, so that the model has
      time to gain from the new rate before the next.
    - ``min_lr``: the learning rate is never reduced below this; once there, it stays.

    It sets ``model.optimizer.learning_rate`` to a number, so the optimizer must have been given
    a number: one given a schedule (``Adam(learning_rate=CosineDecay(...))``) is a TypeError
    when training begins, as Keras refuses to set it. At the end of every epoch it adds the rate
    that epoch used to the logs, as ``logs["learning_rate"]``, as Keras 3 does; the callbacks
    after it in the list see it (fit's History comes first, and does not).

    Where it differs from Keras: a ``monitor`` that this fit never logs is a ValueError when
    training begins (Keras warns after each epoch). ``cooldown`` is the number of epochs not
    counted, as Keras documents it; Keras's code counts the last of them (its cooldown=1 acts
    as 0).
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        self.factor = checks.number(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = checks.integer(patience, "patience", minimum=0)
        self.verbose = _verbose(verbose)
        self.cooldown = checks.integer(cooldown, "cooldown", minimum=0)
        self.min_lr = checks.number(min_lr, "min_lr", minimum=0.0)

    def on_train_begin(self, logs=None):
        self._check_monitor_is_logged("ReduceLROnPlateau", "never reduce the learning rate")
        _settable_learning_rate(self.model, "ReduceLROnPlateau")
        self.best = None
        self.wait = 0                   # epochs in a row without improvement, cooldown not counted
        self.cooldown_counter = 0       # epochs of cooldown still to come

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(optimizer.learning_rate)
        current = self._current(logs)
        if current is None:
            return
        in_cooldown = self.cooldown_counter > 0
        if in_cooldown:
            self.cooldown_counter -= 1
        if self.best is None or self.better(current, self.best):
            self.best, self.wait = current, 0
        elif not in_cooldown:
            self.wait += 1
            if self.wait >= self.patience and optimizer.learning_rate > self.min_lr:
                optimizer.learning_rate = max(optimizer.learning_rate * self.factor, self.min_lr)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{optimizer.learning_rate}.", flush=True)
                self.wait, self.cooldown_counter = 0, self.cooldown


def _takes_learning_rate(schedule):
    """Whether ``schedule`` is called as Keras calls it, ``schedule(epoch, lr)``, or in the older
    form Keras still accepts, ``schedule(epoch)``. Decided once, from its signature, not by
    catching the TypeError of a call, which would also catch a TypeError raised inside it."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):          # no signature to read (some built-ins): Keras's form
        return True
    for arguments in ((0, 0.1), (0,)):
        try:
            signature.bind(*arguments)
            return len(arguments) == 2
        except TypeError:
            pass
    raise TypeError(f"schedule must take the epoch (counted from 0) and the current learning rate, "
                    f"schedule(epoch, lr), or the epoch alone, schedule(epoch); got {schedule!r}, which "
                    f"takes {signature}.")


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from a function of the epoch; Keras's
    LearningRateScheduler.

    ``LearningRateScheduler(schedule, verbose=0)``:

    - ``schedule``: a function ``schedule(epoch, lr) -> new learning rate``, ``epoch`` counted
      from 0 and ``lr`` the current rate (a float), or ``schedule(epoch)``, the older form that
      Keras still accepts. Which form is read from its signature when the callback is made.
    - ``verbose``: 1 prints "Epoch 3: LearningRateScheduler setting learning rate to 0.0005."

    ::

        def schedule(epoch, lr):          # keep the rate for 10 epochs, then divide it by e every 10
            return lr if epoch < 10 else lr * math.exp(-0.1)

        model.fit(x, y, epochs=30, callbacks=[LearningRateScheduler(schedule)])

    The rate it returns must be a finite number >= 0 (Keras wants a float; here an int will
    do): anything else is an error naming the epoch, before a step uses it. Like
    ReduceLROnPlateau, it refuses, when training begins, an optimizer made with a schedule
    (``tinycnn.schedules``), which sets the rate at every step; and it adds the rate each epoch
    used to the logs, as ``logs["learning_rate"]``.
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"schedule must be a function schedule(epoch, lr) -> learning rate, got "
                            f"{checks.show(schedule)}.")
        self.schedule = schedule
        self.verbose = _verbose(verbose)
        self._takes_lr = _takes_learning_rate(schedule)

    def on_train_begin(self, logs=None):
        _settable_learning_rate(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, optimizer.learning_rate) if self._takes_lr else self.schedule(epoch)
        optimizer.learning_rate = checks.number(lr, f"The learning rate that schedule returned for epoch {epoch}",
                                                minimum=0.0)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{optimizer.learning_rate}.", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CSVLogger(Callback):
    """Write every epoch's logs to a CSV file, one row per epoch; Keras's CSVLogger.

    ``CSVLogger(filename, separator=",", append=False)``:

    - ``filename``: the CSV file, such as ``"run/log.csv"`` (its folder must exist).
    - ``separator``: the one character between values.
    - ``append``: True adds this fit's rows to the end of the file, if it has any (to continue
      training), without a second header; False starts the file afresh.

    As in Keras, the header is ``epoch`` followed by the names in the first epoch's logs in
    alphabetical order, ``epoch`` counts from 0, and a value that a later epoch does not log is
    written ``NA``::

        epoch,accuracy,loss,val_accuracy,val_loss
        0,0.8123,0.6012,0.9001,0.3311
        1,0.9102,0.3050,0.9254,0.2570

    ``logs["learning_rate"]`` is there too when ReduceLROnPlateau or LearningRateScheduler comes
    before the CSVLogger in the callbacks list.

    A crash never leaves half a row: the file is written whole after every epoch and renamed
    into place (``tinycnn.files.atomic_write``), so it always holds the header and every
    finished epoch. Until the first epoch ends, a file from before is left as it was.

    Where it differs from Keras: a file that cannot be written is an OSError when training
    begins, not when it is opened; and ``append=True`` onto a file whose header names other
    columns is a ValueError, which Keras lets through with the values under the wrong names.
    """

    def __init__(self, filename, separator=",", append=False):
        self.filename = os.fspath(checks.path(filename, "filename"))
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise ValueError(f"separator must be one character, such as ',' or ';' (not a quote or a line "
                             f"break), got {checks.show(separator)}.")
        self.sep = separator
        self.append = checks.boolean(append, "append")
        self.keys, self._text = None, ""

    def on_train_begin(self, logs=None):
        check_writable(self.filename)          # before the first epoch, not after it
        self.keys = None                       # the columns, from the first epoch's logs
        self._text = ""                        # everything the file will hold
        if self.append and os.path.isfile(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as f:
                self._text = f.read()
            if self._text and not self._text.endswith(("\n", "\r")):
                self._text += "\n"             # a last line without its line break

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._start_file(["epoch"] + self.keys)
        self._text += self._line([epoch] + [logs.get(key, "NA") for key in self.keys])
        atomic_write(self.filename, lambda f: f.write(self._text.encode("utf-8")))

    def _start_file(self, header):
        """Begin with ``header``, or check that the file being appended to has it."""
        if not self._text.strip():
            self._text = self._line(header)
            return
        existing = next(csv.reader(io.StringIO(self._text), delimiter=self.sep))
        if existing != header:
            raise ValueError(f"CSVLogger(append=True): {self.filename!r} has the columns {existing}, but this "
                             f"fit logs {header}, so its rows would fall under the wrong names. Append to a "
                             "file with the same columns, write a new file, or pass append=False to start "
                             "this one afresh.")

    def _line(self, values):
        """One CSV line: values quoted where they must be, as Python's csv module writes them."""
        out = io.StringIO()
        csv.writer(out, delimiter=self.sep, lineterminator="\n").writerow(values)
        return out.getvalue()
