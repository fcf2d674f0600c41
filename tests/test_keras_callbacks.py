"""Keras's callbacks, tested against what Keras documents: their names, arguments, defaults and
messages, and what each does epoch by epoch (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau,
LearningRateScheduler, CSVLogger).

Most tests script the monitored metric (``Scripted`` overwrites ``val_loss`` after each epoch),
so that which epoch improves is known, and record the learning rate that each epoch's updates
used (``Rates``), so that a change of rate is seen where the optimizer reads it.
"""

import csv
import inspect
import math
import os

import numpy as np
import pytest

from test_callbacks import Scripted, data, tiny
from tinycnn import Sequential, load_model
from tinycnn.callbacks import (CSVLogger, Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                               ReduceLROnPlateau)
from tinycnn.optimizers import SGD, Adam
from tinycnn.schedules import CosineDecay


class Rates(Callback):
    """The learning rate each epoch's updates used (read from the optimizer after every batch),
    and the logs each epoch ended with."""

    def __init__(self):
        self.used, self.logs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.used.append(set())

    def on_batch_end(self, batch, logs=None):
        self.used[-1].add(self.model.optimizer.current_learning_rate())

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))

    def per_epoch(self):
        assert all(len(rates) == 1 for rates in self.used), self.used     # one rate per epoch
        return [next(iter(rates)) for rates in self.used]


def fit(model, callbacks, epochs, **kwargs):
    x, y = data()
    kwargs.setdefault("validation_split", 0.2)
    return model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks, **kwargs)


# -- Keras's names, argument order and defaults ---------------------------------------------------

KERAS_SIGNATURES = {
    EarlyStopping: [("monitor", "val_loss"), ("min_delta", 0), ("patience", 0), ("verbose", 0), ("mode", "auto"),
                    ("baseline", None), ("restore_best_weights", False), ("start_from_epoch", 0)],
    ModelCheckpoint: [("filepath", inspect.Parameter.empty), ("monitor", "val_loss"), ("verbose", 0),
                      ("save_best_only", False), ("save_weights_only", False), ("mode", "auto"),
                      ("save_freq", "epoch"), ("initial_value_threshold", None)],
    ReduceLROnPlateau: [("monitor", "val_loss"), ("factor", 0.1), ("patience", 10), ("verbose", 0), ("mode", "auto"),
                        ("min_delta", 1e-4), ("cooldown", 0), ("min_lr", 0.0)],
    LearningRateScheduler: [("schedule", inspect.Parameter.empty), ("verbose", 0)],
    CSVLogger: [("filename", inspect.Parameter.empty), ("separator", ","), ("append", False)],
}


@pytest.mark.parametrize("cls", KERAS_SIGNATURES, ids=lambda cls: cls.__name__)
def test_arguments_are_keras_names_in_keras_order_with_keras_defaults(cls):
    parameters = list(inspect.signature(cls).parameters.values())
    assert [(p.name, p.default) for p in parameters] == KERAS_SIGNATURES[cls]


def test_positional_arguments_mean_what_they_mean_in_keras(tmp_path):
    stopper = EarlyStopping("loss", 0.01, 3)
    assert (stopper.min_delta, stopper.patience) == (0.01, 3)
    ckpt = ModelCheckpoint(tmp_path / "m.npz", "val_accuracy", 1, True)
    assert (ckpt.monitor, ckpt.verbose, ckpt.save_best_only) == ("val_accuracy", 1, True)
    reduce = ReduceLROnPlateau("loss", 0.5, 2)
    assert (reduce.factor, reduce.patience) == (0.5, 2)


BAD_ARGUMENTS = [
    (lambda: EarlyStopping(verbose=2), "verbose", "2"),
    (lambda: EarlyStopping(baseline="0.5"), "baseline", "'0.5'"),
    (lambda: EarlyStopping(start_from_epoch=-1), "start_from_epoch", "-1"),
    (lambda: ModelCheckpoint("m.npz", save_weights_only="yes"), "save_weights_only", "'yes'"),
    (lambda: ModelCheckpoint("m.npz", save_freq=100), "save_freq", "100"),
    (lambda: ModelCheckpoint("m.npz", save_freq="batch"), "save_freq", "'batch'"),
    (lambda: ModelCheckpoint("m.npz", initial_value_threshold=math.nan), "initial_value_threshold", "nan"),
    (lambda: ReduceLROnPlateau(factor=1.0), "factor", "1.0"),
    (lambda: ReduceLROnPlateau(factor=0), "factor", "0"),
    (lambda: ReduceLROnPlateau(patience=-1), "patience", "-1"),
    (lambda: ReduceLROnPlateau(cooldown=1.5), "cooldown", "1.5"),
    (lambda: ReduceLROnPlateau(min_lr=-1e-3), "min_lr", "-0.001"),
    (lambda: ReduceLROnPlateau(min_delta=-1e-4), "min_delta", "-0.0001"),
    (lambda: ReduceLROnPlateau(mode="down"), "mode", "'down'"),
    (lambda: ReduceLROnPlateau(monitor=""), "monitor", "''"),
    (lambda: LearningRateScheduler(0.01), "schedule", "0.01"),
    (lambda: LearningRateScheduler(lambda: 0.01), "schedule", "takes ()"),
    (lambda: LearningRateScheduler(lambda epoch, lr, extra: lr), "schedule", "takes (epoch, lr, extra)"),
    (lambda: LearningRateScheduler(lambda epoch: 0.1, verbose="1"), "verbose", "'1'"),
    (lambda: CSVLogger(None), "filename", "None"),
    (lambda: CSVLogger("log.csv", separator=""), "separator", "''"),
    (lambda: CSVLogger("log.csv", separator=", "), "separator", "', '"),
    (lambda: CSVLogger("log.csv", separator="\n"), "separator", "'\\n'"),
    (lambda: CSVLogger("log.csv", append=1), "append", "1"),
]


@pytest.mark.parametrize("call, argument, shown", BAD_ARGUMENTS, ids=[f"{a}={v}" for _, a, v in BAD_ARGUMENTS])
def test_bad_arguments_name_the_argument_and_value(call, argument, shown):
    with pytest.raises((TypeError, ValueError)) as err:
        call()
    message = str(err.value)
    assert argument in message and shown in message, message


def test_save_freq_other_than_epoch_says_only_epoch_is_supported():
    with pytest.raises(ValueError, match="supports only 'epoch', not a save every N batches"):
        ModelCheckpoint("m.npz", save_freq=100)


def test_a_keras_callback_overriding_on_train_batch_end_is_called_after_every_batch():
    """Keras's newer name for on_batch_end; fit calls on_batch_end, which the base class passes on."""
    seen = []

    class KerasStyle(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, sorted(logs)))

    fit(tiny(), [KerasStyle()], epochs=1, validation_split=0.0)
    assert seen == [(0, ["accuracy", "loss"]), (1, ["accuracy", "loss"]), (2, ["accuracy", "loss"]),
                    (3, ["accuracy", "loss"])]


# -- EarlyStopping --------------------------------------------------------------------------------

@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_early_stopping_patience_as_keras_tests_it(patience):
    """Keras's own test: the loss improves for three epochs, then never again (8.9 > 8)."""
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = EarlyStopping(monitor="loss", patience=patience)
    stopper.set_model(tiny())
    stopper.on_train_begin()
    for epoch, loss in enumerate(losses):
        stopper.on_epoch_end(epoch, {"loss": loss})
        if stopper.model.stop_training:
            break
    assert stopper.stopped_epoch == max(patience, 1) + 2


def test_early_stopping_verbose_says_when_it_stops_and_restores(capsys):
    stopper = EarlyStopping(patience=2, verbose=1, restore_best_weights=True)
    history = fit(tiny(), [Scripted([1.0, 0.5, 0.7, 0.6, 0.4]), stopper], epochs=10)
    assert len(history.epoch) == 4
    assert capsys.readouterr().out == ("Epoch 4: early stopping\n"
                                       "Restoring model weights from the end of the best epoch: 2.\n")


def test_early_stopping_is_silent_by_default_and_stopped_epoch_is_0_when_it_did_not_stop(capsys):
    stopper = EarlyStopping(patience=5, restore_best_weights=True)
    fit(tiny(), [Scripted([1.0, 0.9, 0.8]), stopper], epochs=3)
    assert stopper.stopped_epoch == 0 and stopper.best_epoch == 2
    assert capsys.readouterr().out == ""


def test_early_stopping_restores_the_best_weights_even_if_none_beat_the_baseline():
    """Keras's test: no epoch beats the baseline, so training stops after `patience` epochs and
    the best of them is restored."""
    model = tiny()
    weights = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights.append(model.get_weights())

    stopper = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True)
    history = fit(model, [Scripted([0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74]), Snapshot(), stopper], epochs=7)
    assert len(history.epoch) == 5 and stopper.best_epoch == 2
    for restored, best in zip(model.get_weights(), weights[2]):
        np.testing.assert_array_equal(restored, best)


def test_early_stopping_with_a_baseline_stops_after_patience_epochs_that_do_not_beat_it():
    """As Keras documents it: epochs that improve, but stay above the baseline, count too."""
    history = fit(tiny(), [Scripted([0.9, 0.8, 0.7, 0.6, 0.55, 0.52]), EarlyStopping(patience=3, baseline=0.5)],
                  epochs=6)
    assert len(history.epoch) == 3


def test_early_stopping_with_a_baseline_that_is_beaten_waits_patience_epochs_from_there():
    stopper = EarlyStopping(patience=3, baseline=0.75)
    history = fit(tiny(), [Scripted([0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74]), stopper], epochs=7)
    assert len(history.epoch) == 6 and stopper.best_epoch == 2       # 0.7 beat it at the third epoch
    stopper = EarlyStopping(patience=2, baseline=0.75)
    history = fit(tiny(), [Scripted([0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74]), stopper], epochs=7)
    assert len(history.epoch) == 2                                   # two epochs above it: too late


def test_early_stopping_start_from_epoch_ignores_the_warm_up_epochs():
    values = [1.0, 2.0, 3.0, 0.5, 0.6, 0.7, 0.8]
    assert len(fit(tiny(), [Scripted(values), EarlyStopping(patience=1)], epochs=7).epoch) == 2
    stopper = EarlyStopping(patience=1, start_from_epoch=2)
    assert len(fit(tiny(), [Scripted(values), stopper], epochs=7).epoch) == 5
    assert stopper.best_epoch == 3


def test_early_stopping_min_delta_and_mode():
    # 0.95 is not 0.1 better than 1.0: no improvement, stop at once (patience=0)
    assert len(fit(tiny(), [Scripted([1.0, 0.95, 0.5]), EarlyStopping(min_delta=0.1)], epochs=3).epoch) == 2
    # mode="max": the rising val_loss improves
    assert len(fit(tiny(), [Scripted([1.0, 2.0, 3.0]), EarlyStopping(mode="max")], epochs=3).epoch) == 3


# -- ModelCheckpoint ------------------------------------------------------------------------------

def test_model_checkpoint_takes_keras_filepath(tmp_path):
    model = tiny()
    ckpt = ModelCheckpoint(filepath=tmp_path / "m-{epoch:02d}.npz")
    fit(model, [ckpt], epochs=2, validation_split=0.0)
    assert ckpt.filepath == str(tmp_path / "m-{epoch:02d}.npz")
    assert sorted(os.listdir(tmp_path)) == ["m-01.npz", "m-02.npz"]
    x, _ = data()
    np.testing.assert_array_equal(load_model(tmp_path / "m-02.npz").predict(x), model.predict(x))


def test_model_checkpoint_verbose_says_what_it_saves_as_keras_does(tmp_path, capsys):
    path = str(tmp_path / "best.npz")
    ckpt = ModelCheckpoint(path, verbose=1, save_best_only=True)
    fit(tiny(), [Scripted([0.9, 0.8, 0.85]), ckpt], epochs=3)
    assert capsys.readouterr().out == (f"Epoch 1: val_loss improved from inf to 0.90000, saving model to {path}\n"
                                       f"Epoch 2: val_loss improved from 0.90000 to 0.80000, saving model to {path}\n"
                                       "Epoch 3: val_loss did not improve from 0.80000\n")
    ckpt = ModelCheckpoint(path, monitor="val_accuracy", verbose=1, save_best_only=True)
    fit(tiny(), [ckpt], epochs=1)
    assert capsys.readouterr().out.startswith("Epoch 1: val_accuracy improved from -inf to ")
    fit(tiny(), [ModelCheckpoint(tmp_path / "m-{epoch}.npz", verbose=1)], epochs=2)
    assert capsys.readouterr().out == (f"Epoch 1: saving model to {tmp_path / 'm-1.npz'}\n"
                                       f"Epoch 2: saving model to {tmp_path / 'm-2.npz'}\n")


def test_model_checkpoint_initial_value_threshold(tmp_path):
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch}.npz", save_best_only=True, initial_value_threshold=0.7)
    fit(tiny(), [Scripted([0.9, 0.8, 0.5, 0.6]), ckpt], epochs=4)
    assert os.listdir(tmp_path) == ["m-3.npz"]


def test_model_checkpoint_save_weights_only_saves_with_model_save_weights(tmp_path):
    """The callback's side of save_weights_only: model.save_weights(filepath), never model.save."""
    model = tiny()
    calls = []
    model.save_weights = calls.append

    def no_save(path):
        raise AssertionError("save_weights_only=True must not call model.save")

    model.save = no_save
    fit(model, [ModelCheckpoint(tmp_path / "w-{epoch}.weights.npz", save_weights_only=True)], epochs=2)
    assert calls == [str(tmp_path / "w-1.weights.npz"), str(tmp_path / "w-2.weights.npz")]


@pytest.mark.skipif(not hasattr(Sequential, "save_weights") or not hasattr(Sequential, "load_weights"),
                    reason="Sequential.save_weights and load_weights are not there yet")
def test_model_checkpoint_save_weights_only_round_trip(tmp_path):
    model = tiny()
    fit(model, [ModelCheckpoint(tmp_path / "last.weights.npz", save_weights_only=True)], epochs=2)
    other = tiny(seed=1)
    other.load_weights(str(tmp_path / "last.weights.npz"))
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_save_weights_only_on_a_model_without_save_weights_fails_at_train_begin(tmp_path):
    class NoSaveWeights:
        pass

    ckpt = ModelCheckpoint(tmp_path / "w.npz", save_weights_only=True)
    ckpt.set_model(NoSaveWeights())
    with pytest.raises(TypeError, match="model.save_weights, which this NoSaveWeights does not have"):
        ckpt.on_train_begin()


# -- ReduceLROnPlateau ----------------------------------------------------------------------------

def test_reduce_lr_after_patience_epochs_without_improvement():
    rates = Rates()
    model = tiny(SGD(learning_rate=0.1))
    fit(model, [Scripted([1.0] * 6), ReduceLROnPlateau(factor=0.5, patience=2), rates], epochs=6)
    # epoch 0 is the best; epochs 1 and 2 do not improve: the rate halves after epoch 2, and again
    # after epochs 3 and 4
    assert rates.per_epoch() == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert [logs["learning_rate"] for logs in rates.logs] == rates.per_epoch()      # as Keras 3 logs it
    assert model.optimizer.learning_rate == 0.025                                  # the last epoch used


def test_reduce_lr_an_improvement_starts_the_count_again_and_min_delta_decides_what_is_one():
    rates = Rates()
    model = tiny(SGD(learning_rate=0.1))
    fit(model, [Scripted([1.0, 1.0, 0.5, 0.49995, 0.5]), ReduceLROnPlateau(factor=0.5, patience=2), rates], epochs=5)
    # 0.5 improves (epoch 2); 0.49995 is less than min_delta=1e-4 better: epochs 3 and 4 count
    assert rates.per_epoch() == [0.1] * 5 and model.optimizer.learning_rate == 0.05


def test_reduce_lr_cooldown_leaves_that_many_epochs_uncounted():
    def run(cooldown):
        rates = Rates()
        fit(tiny(SGD(learning_rate=0.1)),
            [Scripted([1.0] * 9), ReduceLROnPlateau(factor=0.5, patience=1, cooldown=cooldown), rates], epochs=9)
        return rates.per_epoch()

    assert run(0) == [0.1, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625, 0.00078125]
    # reduced after epoch 1; epochs 2 and 3 are the cooldown; epoch 4 counts, and reduces again
    assert run(2) == [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125]


def test_reduce_lr_never_goes_below_min_lr():
    rates = Rates()
    model = tiny(SGD(learning_rate=0.1))
    fit(model, [Scripted([1.0] * 5), ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.003), rates], epochs=5)
    assert rates.per_epoch() == pytest.approx([0.1, 0.1, 0.01, 0.003, 0.003], rel=1e-12)
    assert model.optimizer.learning_rate == 0.003


def test_reduce_lr_mode_max_watches_accuracy(capsys):
    class Accuracy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_accuracy"] = [0.5, 0.6, 0.6, 0.55][epoch]

    model = tiny(SGD(learning_rate=0.1))
    fit(model, [Accuracy(), ReduceLROnPlateau("val_accuracy", factor=0.5, patience=2, verbose=1)], epochs=4)
    assert model.optimizer.learning_rate == 0.05       # "auto" is "max" for accuracy: 0.6 was the best
    assert capsys.readouterr().out == "Epoch 4: ReduceLROnPlateau reducing learning rate to 0.05.\n"


def test_reduce_lr_checks_its_monitor_before_the_first_epoch():
    model = tiny()
    before = model.get_weights()
    with pytest.raises(ValueError, match="ReduceLROnPlateau watches 'val_loss', which this fit never logs.*"
                                         "never reduce the learning rate.*validation_split"):
        fit(model, [ReduceLROnPlateau()], epochs=2, validation_split=0.0)
    assert model.history.epoch == []
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("callback", [ReduceLROnPlateau("loss"), LearningRateScheduler(lambda epoch, lr: lr)],
                         ids=["ReduceLROnPlateau", "LearningRateScheduler"])
def test_an_optimizer_with_a_schedule_is_refused_before_the_first_epoch(callback):
    model = tiny(Adam(learning_rate=CosineDecay(1e-3, decay_steps=100)))
    with pytest.raises(TypeError, match=f"{type(callback).__name__} sets the optimizer's learning rate, but this "
                                        r"Adam was made with a schedule \(CosineDecay\).*not settable"):
        fit(model, [callback], epochs=2)
    assert model.history.epoch == [] and isinstance(model.optimizer.learning_rate, CosineDecay)


# -- LearningRateScheduler ------------------------------------------------------------------------

def test_learning_rate_scheduler_keras_documented_example():
    """Keras's docstring example: SGD's default rate 0.01, kept for ten epochs, then multiplied by
    exp(-0.1) every epoch: 0.00607 after fifteen."""
    def scheduler(epoch, lr):
        return lr if epoch < 10 else lr * math.exp(-0.1)

    model = tiny(SGD())
    assert round(model.optimizer.learning_rate, 5) == 0.01
    fit(model, [LearningRateScheduler(scheduler)], epochs=15, validation_split=0.0)
    assert round(model.optimizer.learning_rate, 5) == 0.00607


def test_learning_rate_scheduler_with_epoch_and_lr_sets_each_epochs_rate():
    rates = Rates()
    fit(tiny(SGD(learning_rate=0.1)), [LearningRateScheduler(lambda epoch, lr: lr / 2), rates], epochs=3)
    assert rates.per_epoch() == [0.05, 0.025, 0.0125]          # set before epoch 0's first update
    assert [logs["learning_rate"] for logs in rates.logs] == [0.05, 0.025, 0.0125]


def test_learning_rate_scheduler_with_the_epoch_alone():
    rates = Rates()

    def schedule(epoch):
        return 0.1 / (epoch + 1)

    fit(tiny(SGD()), [LearningRateScheduler(schedule), rates], epochs=3)
    assert rates.per_epoch() == [0.1, 0.05, 0.1 / 3]


def test_learning_rate_scheduler_a_type_error_inside_the_schedule_is_not_swallowed():
    """Keras calls schedule(epoch, lr), and on a TypeError tries schedule(epoch): an error inside
    a two-argument schedule would be hidden. Here the form comes from the signature."""
    def schedule(epoch, lr):
        return lr + "0.1"

    with pytest.raises(TypeError, match="unsupported operand"):
        fit(tiny(), [LearningRateScheduler(schedule)], epochs=1)


@pytest.mark.parametrize("returned, error, words", [
    (None, TypeError, "returned for epoch 0 must be a finite number >= 0.0, got None"),
    (-0.1, ValueError, "returned for epoch 0 must be a finite number >= 0.0, got -0.1"),
    (math.nan, ValueError, "returned for epoch 0 .* got nan"),
])
def test_learning_rate_scheduler_refuses_a_rate_that_is_not_one_before_a_step_uses_it(returned, error, words):
    model = tiny()
    before = model.get_weights()
    with pytest.raises(error, match=words):
        fit(model, [LearningRateScheduler(lambda epoch: returned)], epochs=1)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_scheduler_verbose(capsys):
    fit(tiny(SGD(learning_rate=0.1)), [LearningRateScheduler(lambda epoch, lr: lr / 2, verbose=1)], epochs=2)
    assert capsys.readouterr().out == ("Epoch 1: LearningRateScheduler setting learning rate to 0.05.\n"
                                       "Epoch 2: LearningRateScheduler setting learning rate to 0.025.\n")


# -- CSVLogger ------------------------------------------------------------------------------------

def read_csv(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    history = fit(tiny(), [CSVLogger(path)], epochs=3)
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]                 # epochs from 0, as in Keras
    for i, name in enumerate(rows[0][1:], start=1):
        assert [float(row[i]) for row in rows[1:]] == history.history[name]   # every digit
    assert os.listdir(tmp_path) == ["log.csv"]                            # no temporary file left


def test_csv_logger_appends_with_append_true_and_starts_afresh_without(tmp_path):
    path = tmp_path / "log.csv"
    model = tiny()
    fit(model, [CSVLogger(path)], epochs=2)
    fit(model, [CSVLogger(path, append=True)], epochs=3)
    rows = read_csv(path)
    assert rows[0][0] == "epoch" and [row[0] for row in rows[1:]] == ["0", "1", "0", "1", "2"]   # one header
    fit(model, [CSVLogger(path)], epochs=1)
    assert [row[0] for row in read_csv(path)] == ["epoch", "0"]


def test_csv_logger_append_true_to_a_new_file_writes_the_header(tmp_path):
    fit(tiny(), [CSVLogger(tmp_path / "new.csv", append=True)], epochs=1, validation_split=0.0)
    assert read_csv(tmp_path / "new.csv")[0] == ["epoch", "accuracy", "loss"]


def test_csv_logger_separator_and_the_learning_rate_of_a_callback_before_it(tmp_path):
    path = tmp_path / "log.tsv"
    fit(tiny(SGD(learning_rate=0.1)), [LearningRateScheduler(lambda epoch, lr: lr / 2), CSVLogger(path, "\t")],
        epochs=2)
    rows = read_csv(path, "\t")
    assert rows[0] == ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    assert [row[2] for row in rows[1:]] == ["0.05", "0.025"]


def test_csv_logger_a_value_missing_from_a_later_epoch_is_na(tmp_path):
    class DropAfterFirst(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch > 0:
                del logs["accuracy"]

    fit(tiny(), [DropAfterFirst(), CSVLogger(tmp_path / "log.csv")], epochs=2, validation_split=0.0)
    assert read_csv(tmp_path / "log.csv")[2][1] == "NA"


def test_csv_logger_appending_onto_other_columns_is_refused(tmp_path):
    path = tmp_path / "log.csv"
    fit(tiny(), [CSVLogger(path)], epochs=1, validation_split=0.0)
    before = path.read_text()
    with pytest.raises(ValueError, match=r"has the columns \['epoch', 'accuracy', 'loss'\], but this fit logs "
                                         r"\['epoch', 'accuracy', 'loss', 'val_accuracy', 'val_loss'\]"):
        fit(tiny(), [CSVLogger(path, append=True)], epochs=1)
    assert path.read_text() == before


def test_csv_logger_into_a_missing_folder_fails_before_the_first_epoch(tmp_path):
    model = tiny()
    with pytest.raises(OSError, match="does not exist"):
        fit(model, [CSVLogger(tmp_path / "missing" / "log.csv")], epochs=2)
    assert model.history.epoch == []


def test_csv_logger_never_leaves_half_a_row(tmp_path, monkeypatch):
    """Each epoch's file is written whole and renamed into place: a write that fails (here the
    rename, at epoch 3) leaves the file as the last epoch left it, and no temporary file."""
    path = tmp_path / "log.csv"

    class BreakTheRename(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                def fail(src, dst):
                    raise OSError(28, "No space left on device")
                monkeypatch.setattr(os, "replace", fail)

    with pytest.raises(OSError, match="the disk is full"):
        fit(tiny(), [BreakTheRename(), CSVLogger(path)], epochs=4)
    monkeypatch.undo()
    rows = read_csv(path)
    assert [row[0] for row in rows] == ["epoch", "0", "1"] and all(len(row) == 5 for row in rows)
    assert os.listdir(tmp_path) == ["log.csv"]
