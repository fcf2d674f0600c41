"""Callbacks: code that ``fit`` calls at fixed points of training, as in Keras.

``fit`` calls, in order: ``on_train_begin()``, then for each epoch ``on_epoch_begin(epoch)``,
``on_batch_end(batch, logs)`` after every batch, ``on_epoch_end(epoch, logs)``, and finally
``on_train_end(logs)``. ``logs`` is a dict such as {"loss": 0.31, "accuracy": 0.91,
"val_loss": ..., "val_accuracy": ...}. A callback stops training by setting
``self.model.stop_training = True``.
"""

import time


class Callback:
    """Base class: every hook does nothing. ``self.model`` is set by ``fit``."""

    model = None

    def set_model(self, model):
        self.model = model

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


class History(Callback):
    """Records the logs of every epoch: ``history.history["loss"]`` is a list, one per epoch.

    ``fit`` always adds one and returns it. ``epoch`` lists the epoch indices (from 0),
    ``seconds`` the wall-clock time of each epoch (validation included), and ``interrupted``
    says whether Ctrl-C stopped training early.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.seconds = []
        self.interrupted = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
