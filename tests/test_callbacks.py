"""EarlyStopping, ModelCheckpoint and Ctrl-C during fit, on a tiny model."""

import os
import signal

import numpy as np
import pytest

from tinycnn import Sequential, load_model
from tinycnn.callbacks import Callback, EarlyStopping, ModelCheckpoint
from tinycnn.layers import Dense


def tiny(optimizer="adam", seed=0):
    model = Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")], input_shape=(4,), seed=seed)
    model.compile(optimizer)
    return model


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)


class Scripted(Callback):
    """Overwrites val_loss with a scripted sequence, so the test knows which epoch is best."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]


def test_early_stopping_waits_patience_epochs_and_restores_the_best():
    model = tiny()
    x, y = data()
    seen = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(model.get_weights())

    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=20, batch_size=16, verbose=0, validation_split=0.2,
                        callbacks=[Scripted([1.0, 0.5, 0.7, 0.6, 0.4, 0.1]), Snapshot(), stopper])
    # best 0.5 at epoch 2 (index 1); 0.7 and 0.6 are two epochs without improvement -> stop at index 3
    assert len(history.epoch) == 4 and stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    for restored, best in zip(model.get_weights(), seen[1]):
        np.testing.assert_array_equal(restored, best)


def assert_nothing_trained(model, before):
    assert model.history.epoch == []
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_on_a_metric_fit_never_logs_fails_before_training():
    model = tiny()
    x, y = data()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"EarlyStopping watches 'val_loss', which this fit never logs \(its "
                                         r"logs hold \['loss', 'accuracy'\]\).*validation_split"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[EarlyStopping(patience=0)])
    assert_nothing_trained(model, before)


def test_a_misspelt_monitor_gets_the_name_fit_logs():
    x, y = data()
    with pytest.raises(ValueError, match="watches 'val_acc'.*Did you mean 'val_accuracy'"):
        tiny().fit(x, y, epochs=1, verbose=0, validation_split=0.2, callbacks=[EarlyStopping("val_acc")])


def test_a_monitor_driven_by_hand_is_not_checked_and_still_warns():
    """Without fit there are no params saying what will be logged: on_train_begin checks
    nothing, and a missing metric is a warning at the epoch's end, as before."""
    stopper = EarlyStopping(patience=0)
    stopper.set_model(tiny())
    stopper.on_train_begin()
    with pytest.warns(RuntimeWarning, match="val_loss"):
        stopper.on_epoch_end(0, {"loss": 1.0})
    assert not stopper.model.stop_training


def test_model_checkpoint_save_best_only(tmp_path):
    model = tiny()
    x, y = data()
    path = str(tmp_path / "best-{epoch:02d}.npz")
    ckpt = ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=5, verbose=0, validation_split=0.2,
              callbacks=[Scripted([0.9, 0.8, 0.85, 0.3, 0.5]), ckpt])
    assert [os.path.basename(p) for p in ckpt.saved] == ["best-01.npz", "best-02.npz", "best-04.npz"]
    assert sorted(os.listdir(tmp_path)) == ["best-01.npz", "best-02.npz", "best-04.npz"]  # no temp files
    assert load_model(ckpt.saved[-1]).predict(x).shape == (60, 3)


def test_model_checkpoint_every_epoch(tmp_path):
    model = tiny()
    x, y = data()
    ckpt = ModelCheckpoint(tmp_path / "last.npz")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    np.testing.assert_array_equal(load_model(tmp_path / "last.npz").predict(x), model.predict(x))


def test_keyboard_interrupt_from_a_callback_keeps_history_and_model():
    model = tiny()
    x, y = data()

    class CtrlCAtEpoch3(Callback):
        def on_batch_end(self, batch, logs=None):
            if len(history_holder) == 2 and batch == 1:
                raise KeyboardInterrupt

        def on_epoch_end(self, epoch, logs=None):
            history_holder.append(epoch)

    history_holder = []
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0, callbacks=[CtrlCAtEpoch3()])
    assert history.interrupted
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert model.predict(x).shape == (60, 3)         # still usable
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)        # and trainable
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


class PressCtrlC(Callback):
    """Sends this process SIGINT after batch 1, as if the user pressed Ctrl-C."""

    def __init__(self):
        self.batches = []

    def on_batch_end(self, batch, logs=None):
        self.batches.append(batch)
        if batch == 1:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def sigint_handler():
    """Run the test under a chosen SIGINT handler, whatever pytest was started with (a shell
    starts background jobs with SIGINT ignored), and put the original back afterwards."""
    original = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, original)


def test_ctrl_c_signal_stops_after_the_current_batch(sigint_handler):
    sigint_handler(signal.default_int_handler)
    model, (x, y), press = tiny(), data(), PressCtrlC()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[press])
    assert history.interrupted and press.batches == [0, 1]   # batch 1 finished, batch 2 never started
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


def test_an_ignored_sigint_stays_ignored(sigint_handler):
    sigint_handler(signal.SIG_IGN)
    model, (x, y), press = tiny(), data(), PressCtrlC()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[press])
    assert not history.interrupted and history.epoch == [0, 1]     # trained to the end
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_model_checkpoint_creates_its_folder_before_training(tmp_path):
    model = tiny()
    x, y = data()
    ckpt = ModelCheckpoint(tmp_path / "new" / "deeper" / "m-{epoch:02d}.npz")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ckpt])
    assert os.path.exists(tmp_path / "new" / "deeper" / "m-01.npz")


def test_model_checkpoint_into_an_impossible_folder_fails_before_the_first_epoch(tmp_path):
    (tmp_path / "afile").write_text("")
    model = tiny()
    x, y = data()
    before = model.get_weights()
    with pytest.raises(OSError, match="ModelCheckpoint cannot create the folder.*afile"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "afile" / "m.npz")])
    for a, b in zip(before, model.get_weights()):                 # nothing was trained
        np.testing.assert_array_equal(a, b)


class Fails(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("the callback broke")


def test_an_error_in_a_callback_leaves_the_history_on_the_model():
    model = tiny()
    x, y = data()
    with pytest.raises(RuntimeError, match="the callback broke"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[Fails()])
    assert model.history.epoch == [0, 1] and len(model.history.history["loss"]) == 2


def test_ctrl_c_mid_epoch_says_how_far_the_epoch_got(sigint_handler, capsys):
    sigint_handler(signal.default_int_handler)
    model, (x, y), press = tiny(), data(), PressCtrlC()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=1, callbacks=[press])   # output: not a tty
    out = capsys.readouterr().out
    assert "2/4 [===============...............]" in out and "4/4" not in out
    assert "stopped after batch 2 of 4" in out
    assert history.interrupted_at == {"epoch": 1, "batch": 2, "batches": 4} and history.epoch == []


@pytest.mark.parametrize("pattern, words", [
    ("m-{loss:d}.npz", r"\(Unknown format code 'd' for object of type 'float'\).*\{val_loss:.3f\}"),
    ("m-{epoch:s}.npz", r"\(Unknown format code 's' for object of type 'int'\).*\{epoch:02d\}"),
    ("m-{loss[0]}.npz", "'float' object is not subscriptable"),
    ("m-{val_loss:.3f}.npz", r"uses \{val_loss\}, which this fit never logs.*validation_split"),
])
def test_a_checkpoint_path_that_cannot_be_formatted_fails_before_the_first_epoch(tmp_path, pattern, words):
    model = tiny()
    x, y = data()
    before = model.get_weights()
    with pytest.raises(ValueError, match="ModelCheckpoint filepath '.*m-.*" + words):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "new" / pattern)])
    assert_nothing_trained(model, before)
    assert not (tmp_path / "new").exists()           # nor a folder made for it


def test_format_specs_that_suit_the_values_are_fine(tmp_path):
    model = tiny()
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.2,
              callbacks=[ModelCheckpoint(tmp_path / "m-{epoch:.1f}-{val_accuracy:.2f}-{loss:e}.npz")])
    [name] = os.listdir(tmp_path)
    assert name.startswith("m-1.0-") and name.endswith(".npz")


def test_save_best_only_on_a_metric_fit_never_logs_fails_before_training(tmp_path):
    model = tiny()
    x, y = data()
    before = model.get_weights()
    ckpt = ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)
    with pytest.raises(ValueError, match=r"ModelCheckpoint\(save_best_only=True\) watches 'val_loss'.*"
                                         "never save a checkpoint.*validation_data=.*validation_split"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    assert_nothing_trained(model, before)
    # saving every epoch does not look at monitor, so the default monitor needs no validation
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "last.npz")])
    assert (tmp_path / "last.npz").exists()


def test_a_checkpoint_driven_by_hand_formats_its_path_when_it_saves(tmp_path):
    """Without fit's params, on_train_begin has nothing to try the path with: it only makes
    the folder, and a field missing from the logs fails when the epoch ends, as before."""
    ckpt = ModelCheckpoint(tmp_path / "sub" / "m-{val_loss:.2f}.npz")
    ckpt.set_model(tiny())
    ckpt.on_train_begin()
    assert (tmp_path / "sub").is_dir()
    with pytest.raises(ValueError, match="needs 'val_loss'"):
        ckpt.on_epoch_end(0, {"loss": 1.0})
    ckpt.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.5})
    assert os.listdir(tmp_path / "sub") == ["m-0.50.npz"]


def test_an_unknown_field_in_a_checkpoint_path_names_the_one_meant():
    with pytest.raises(ValueError, match=r"uses \['val_acuracy'\].*did you mean \{val_accuracy\}"):
        ModelCheckpoint("m-{val_acuracy:.2f}.npz")


def test_a_field_in_a_checkpoint_folder_makes_a_folder_per_save(tmp_path):
    model = tiny()
    x, y = data()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch}" / "m.npz")])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1", "ckpt-2"]       # no folder named "ckpt-{epoch}"
    assert os.listdir(tmp_path / "ckpt-2") == ["m.npz"]


def test_literal_braces_in_a_checkpoint_folder(tmp_path):
    model = tiny()
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "a{{b}}" / "m-{epoch}.npz"))])
    assert os.listdir(tmp_path) == ["a{b}"] and os.listdir(tmp_path / "a{b}") == ["m-1.npz"]
