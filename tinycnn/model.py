"""Sequential: a stack of layers, trained the way Keras trains it.

The whole of learning is four lines, in ``_train_step``:

    logits = forward pass through every layer          (each layer keeps what backward needs)
    loss   = cross-entropy of softmax(logits) and the labels
    dlogits = (softmax(logits) - onehot) / N           the loss's backward
    backward pass through the layers in reverse order, then one optimizer step

Everything else here is bookkeeping: batching, shuffling, checking the input, progress, history.
"""

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from . import checks, losses, optimizers, plan
from .backend import check_device, get_array_module, to_device, to_numpy
from .callbacks import Callback, History
from .files import atomic_write
from .layers.base import Layer, spec_of
from .losses import check_labels
from .optimizers import NonFiniteUpdate
from .parallel import DataParallel, can_split, cpu_count

DEFAULT_EVAL_BATCH = 128

#: The version of the file ``save`` writes (its layout: ``tinycnn/serialization.py``).
FORMAT_VERSION = 1


class Sequential:
    """A linear stack of layers.

    ``Sequential(layers, input_shape=(28, 28, 1), seed=0)``: ``input_shape`` is the shape of one
    sample (no batch axis); with it the model is built at once, otherwise on the first data it
    sees. ``seed`` (an int or a ``numpy.random.Generator``) makes the initial weights
    reproducible; layers given their own ``seed`` keep it.
    """

    def __init__(self, layers=None, input_shape=None, seed=None, name="sequential"):
        self.name = checks.text(name, "name") if name is not None else "sequential"
        self.layers = []
        self.seed = checks.seed(seed)
        self.input_shape = checks.shape(input_shape, "input_shape") if input_shape is not None else None
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(f"layers must be a list of layers, got {checks.show(layers)}.")
        self.dtype = None
        self.device = "cpu"
        self.optimizer = None
        self.loss = None
        self.stop_training = False
        self.history = None       # the History of the last fit, kept even when fit raises
        self._parallel = None     # set by fit when it splits batches over threads
        self._steps_key = self._steps_list = None    # _steps(), made again when the layers change
        self._rng = None          # the model's generator: initial weights, then shuffling
        for layer in layers or []:
            self.add(layer)
        if self.input_shape is not None and self.layers:
            self.build(self.input_shape)

    # -- structure ------------------------------------------------------------------------------
    def add(self, layer):
        """Append a layer, renaming it ``conv2d_1``-style if its name is taken.

        Like Keras, ``Sequential(input_shape=(28, 28, 1))`` followed by ``add(...)`` works: once
        the input shape is known, each added layer is built at once.
        """
        if not isinstance(layer, Layer):
            hint = " (a class: call it, e.g. Flatten())" if isinstance(layer, type) else ""
            raise TypeError(f"Sequential takes layers such as Dense(10), got {checks.show(layer)}{hint}.")
        names = {other.name for other in self.layers}
        base, k = layer.name, 1
        while layer.name in names:
            layer.name = f"{base}_{k}"
            k += 1
        output_shape = self.output_shape if self.built else None
        self.layers.append(layer)
        if self.built:
            layer.build(output_shape, self.dtype, self._rng)
            layer.to(self.device)
        elif self.input_shape is not None:
            self.build(self.input_shape)

    @property
    def built(self):
        return self.dtype is not None

    def build(self, input_shape=None, dtype="float32"):
        """Create every layer's parameters for samples of ``input_shape`` (no batch axis)."""
        if not self.layers:
            raise ValueError("The model has no layers; add some before building it.")
        if input_shape is None and self.input_shape is None:
            raise ValueError("build() needs the shape of one sample, e.g. build((28, 28, 1)).")
        shape = checks.shape(input_shape if input_shape is not None else self.input_shape, "input_shape")
        dtype = checks.float_dtype(dtype, "dtype")
        self.input_shape = shape
        self._rng = np.random.default_rng(self.seed)
        for layer in self.layers:
            layer.build(shape, dtype, self._rng)
            shape = layer.output_shape(shape)
        self.dtype = np.dtype(dtype)
        if self.device != "cpu":
            for layer in self.layers:
                layer.to(self.device)

    @property
    def output_shape(self):
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def to(self, device):
        """Move the model to ``"cpu"`` or ``"gpu"``, as in PyTorch; returns the model."""
        check_device(device)
        if device == "gpu":
            from .backend import require_cupy
            require_cupy()
        for layer in self.layers:
            layer.to(device)
        if self.optimizer is not None:
            self.optimizer.state = {k: to_device(v, device) for k, v in self.optimizer.state.items()}
        self.device = device
        return self

    # -- training setup ---------------------------------------------------------------------
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
        """Choose the optimizer and loss: strings ("adam", "sgd", ...) or objects.

        The loss is always computed from logits. If the model ends in a softmax -- a ``Softmax``
        layer, or ``activation="softmax"`` on the last layer, the Keras way -- training skips
        that softmax and the fused loss applies it, stably. ``predict`` still applies it.
        """
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        if isinstance(metrics, str):
            metrics = [metrics]
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list such as ['accuracy'], got {checks.show(metrics)}.")
        unknown = [m for m in (metrics or []) if m not in ("accuracy", "acc")]
        if unknown:         # accuracy is always computed; anything else would be silently ignored
            raise ValueError(f"Unknown metrics {unknown}; tinycnn computes 'accuracy'.")

    # -- the passes -----------------------------------------------------------------------------
    def forward(self, x, training=False):
        """Run every layer: the model's output (probabilities when it ends in softmax)."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _steps(self):
        """The steps a pass to the logits runs (``plan.logit_steps``): the layers without a
        final softmax, with Conv2D → ReLU → MaxPool2D fused on the CPU. Made once, and again
        whenever the layers or their device change, so that a forward pass and the backward pass
        after it run the same step objects."""
        key = (tuple(map(id, self.layers)), tuple(layer.device for layer in self.layers))
        if self._steps_key != key:
            self._steps_key, self._steps_list = key, plan.logit_steps(self.layers)
        return self._steps_list

    def _forward_logits(self, x, training):
        """Run the steps to the logits; each step keeps what its backward pass needs."""
        for step in self._steps():
            x = step.forward(x, training)
        return x

    def _backward_logits(self, dlogits):
        """Send dL/dlogits back through the steps that ``_forward_logits`` ran; returns dL/dx."""
        d = dlogits
        for step in reversed(self._steps()):
            d = step.backward(d)
        return d

    def _trainable_layers(self):
        return [layer for layer in self.layers if layer.params]

    def _train_step(self, xb, yb):
        """One step of gradient descent on one batch; returns (loss, number correct).

        The whole of learning, in one thread:

            logits = forward through every step
            loss   = cross-entropy of softmax(logits) and the labels
            d      = dL/dlogits = (softmax(logits) - onehot) / N
            for step in reversed(steps): d = step.backward(d)       (from the first trainable one)
            optimizer step

        ``self._parallel``, when ``fit`` set one, runs the same on shares of the batch in
        several threads (``tinycnn/parallel.py``). Nobody needs dL/dx here, so the backward pass
        stops at the first layer with parameters (``plan.trainable_tail``).

        A loss that is not finite stops here, before the weights are touched; the optimizer
        refuses an update that would make any weight not finite (``NonFiniteUpdate``).
        """
        if self._parallel is not None:
            logits, loss = self._parallel.train_step(xb, yb)
        else:
            head, tail = plan.trainable_tail(self._steps())
            logits = xb
            for step in head + tail:
                logits = step.forward(logits, training=True)
            loss = float(self.loss.forward(logits, yb))
            if math.isfinite(loss):
                d = self.loss.backward()
                for step in reversed(tail):
                    d = step.backward(d)
        if not math.isfinite(loss):
            raise NonFiniteUpdate(None, f"the loss is {loss}")
        self.optimizer.step(self._trainable_layers())
        correct = (logits.argmax(axis=1) == yb).sum()
        return loss, int(correct)

    # -- checking what users pass in -----------------------------------------------------------
    def _check_x(self, x, what="x"):
        """Validate ``x`` against the model and return it in the model's dtype."""
        if x is None or isinstance(x, (str, bytes)):
            raise TypeError(f"{what} must be an array of samples, shape (N, ...), got {checks.show(x)}.")
        xp = get_array_module(x)
        x = xp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{what} must be an array of samples, shape (N, ...), got a single value "
                             f"{checks.show(x.item() if x.size == 1 else x)}.")
        if x.shape[0] == 0:
            raise ValueError(f"{what} is empty (shape {x.shape}); pass at least one sample.")
        if x.dtype not in (np.float32, np.float64):
            hint = " Scale images to [0, 1] first: x.astype('float32') / 255." if x.dtype == np.uint8 else ""
            raise TypeError(f"{what} has dtype {x.dtype}; the model takes float32 or float64 input.{hint}")
        if not self.built:
            self.build(x.shape[1:], "float64" if x.dtype == np.float64 else "float32")
        if tuple(x.shape[1:]) != self.input_shape:
            expected = "(N, " + ", ".join(map(str, self.input_shape)) + ")"
            hint = ""
            if tuple(x.shape[1:]) + (1,) == self.input_shape:
                hint = " It looks like the channel axis is missing: use x[..., None]."
            raise ValueError(f"{what} has shape {tuple(x.shape)} but the model expects {expected}.{hint}")
        # min and max are finite exactly when every value is (NaN propagates through both);
        # unlike isfinite(x).all(), this allocates nothing the size of x.
        if not (math.isfinite(float(x.min())) and math.isfinite(float(x.max()))):
            bad = int((~xp.isfinite(x)).sum())
            raise ValueError(f"{what} contains {bad} NaN or infinite values; clean or impute them first.")
        return x.astype(self.dtype, copy=False)

    @staticmethod
    def _check_callbacks(callbacks):
        """A list of Callback objects (None: none)."""
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

    def _num_classes(self):
        return self.output_shape[-1]

    @staticmethod
    def _check_batch_size(batch_size):
        return checks.integer(batch_size, "batch_size", minimum=1)

    # -- the Keras API ------------------------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, verbose=1, seed=None, callbacks=None, threads=None):
        """Train for ``epochs`` passes over (x, y); returns a :class:`History`.

        ``validation_split`` holds out the *last* fraction of the data before shuffling, as
        Keras does (training keeps floor(N * (1 - split)) samples). ``seed`` fixes the shuffling;
        without it the shuffling comes from the model's own generator (``Sequential(seed=...)``),
        so a seeded model trains the same way every run. ``verbose``: 1 a progress bar per epoch,
        2 one line per epoch, 0 nothing.

        ``threads``: how many CPU cores share each batch (``tinycnn/parallel.py``); None uses
        every core this process may use, 1 trains in one thread. A model on the GPU, or with
        layers that mix the samples of a batch (BatchNormalization, Dropout), uses one.

        Divergence: a step whose loss, gradients or new weights are not finite is never applied.
        ``fit`` raises ``FloatingPointError`` naming the epoch, the batch and what was not finite;
        the weights are those from before that step, and the history (the finished epochs and
        the partial one) is on the error as ``err.history`` and on the model as ``model.history``.
        """
        if self.optimizer is None:
            raise RuntimeError("Call model.compile(optimizer=..., loss=...) before model.fit().")
        epochs = checks.integer(epochs, "epochs", minimum=0)       # 0 trains nothing, as in Keras
        batch_size = self._check_batch_size(batch_size)
        validation_split = checks.number(validation_split, "validation_split", 0.0, 1.0, high_open=True)
        shuffle = checks.boolean(shuffle, "shuffle")
        verbose = checks.choice(verbose, "verbose", (0, 1, 2))
        seed = checks.seed(seed)
        callbacks = self._check_callbacks(callbacks)
        if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                            or len(validation_data) != 2):
            raise ValueError("validation_data must be a pair (x_val, y_val), got "
                             f"{checks.show(validation_data)}.")
        x = self._check_x(x)
        y = check_labels(to_numpy(y), self._num_classes(), n=len(x))
        if validation_data is None and validation_split > 0:
            n_val = len(x) - int(len(x) * (1.0 - validation_split))
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"validation_split={validation_split} of {len(x)} samples leaves "
                                 "an empty training or validation set.")
            validation_data = (x[-n_val:], y[-n_val:])
            x, y = x[:-n_val], y[:-n_val]
        val = None
        if validation_data is not None:
            x_val = self._check_x(validation_data[0], "validation x")
            val = (x_val, check_labels(to_numpy(validation_data[1]), self._num_classes(), n=len(x_val)))

        rng = np.random.default_rng(seed) if seed is not None else self._rng
        history = History()
        self.history = history     # also on the model, so an error in a callback loses nothing
        callbacks = [history] + callbacks
        for cb in callbacks:
            cb.set_model(self)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        try:
            with _CtrlC() as ctrl_c, self._threads(threads):
                for epoch in range(epochs):
                    self._fit_epoch(x, y, batch_size, epoch, epochs, rng.permutation(len(x)) if shuffle
                                    else np.arange(len(x)), val, verbose, callbacks, ctrl_c)
                    if self.stop_training:
                        break
        except KeyboardInterrupt:
            history.interrupted = True
            print(f"\nInterrupted: training stopped after {len(history.epoch)} complete epoch(s)"
                  f"{_partial_epoch(history, math.ceil(len(x) / batch_size))}.", flush=True)
        except FloatingPointError as err:
            err.history = history
            raise
        finally:
            for cb in callbacks:
                cb.on_train_end()
        return history

    def _fit_epoch(self, x, y, batch_size, epoch, epochs, order, val, verbose, callbacks, ctrl_c):
        """One pass over the shuffled training data, then validation and the epoch's callbacks."""
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        steps = math.ceil(len(x) / batch_size)
        bar = _ProgressBar(steps, verbose)
        total_loss = total_correct = seen = 0
        start = time.perf_counter()
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            xb, yb = self._to_device(x[idx]), self._to_device(y[idx])
            try:
                loss, correct = self._train_step(xb, yb)
            except NonFiniteUpdate as err:
                history = callbacks[0]
                history.diverged_at = {"epoch": epoch + 1, "batch": step, "batches": steps}
                if seen:            # the unfinished epoch's logs, over the batches it applied
                    history.on_epoch_end(epoch, logs)
                raise FloatingPointError(self._divergence_message(err, epoch, step, xb)) from err
            total_loss += loss * len(idx)
            total_correct += correct
            seen += len(idx)
            logs = {"loss": total_loss / seen, "accuracy": total_correct / seen}
            bar.update(step + 1, logs)
            for cb in callbacks:
                cb.on_batch_end(step, logs)
            if ctrl_c.pressed:          # Ctrl-C: stop here, after a whole batch
                bar.close(logs, time.perf_counter() - start, done=step + 1)
                raise KeyboardInterrupt
        if val is not None:
            val_loss, val_acc = self.evaluate(*val, verbose=0)
            logs.update(val_loss=val_loss, val_accuracy=val_acc)
        bar.close(logs, time.perf_counter() - start)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)

    @contextlib.contextmanager
    def _threads(self, threads):
        """For the duration of fit: ``self._parallel`` is a DataParallel over ``threads`` cores
        when the model can use one (on the CPU, every layer per-sample), else None."""
        threads = cpu_count() if threads is None else checks.integer(threads, "threads", minimum=1)
        if threads == 1 or self.device != "cpu" or not can_split(self.layers):
            yield
            return
        with DataParallel(self, threads) as parallel:
            self._parallel = parallel
            try:
                yield
            finally:
                self._parallel = None

    def _divergence_message(self, err, epoch, step, xb):
        """Why a step was refused, where, and what usually causes it."""
        what = str(err)
        if err.key is not None:
            layer = next(layer for layer in self.layers if layer.name == err.key[0])
            grad = layer.grads[err.key[1]]
            if not bool(get_array_module(grad).isfinite(grad).all()):
                what = f"the gradient of {err.key[0]}/{err.key[1]} is not finite"
            else:
                what += (f" (its gradient is finite but reaches {float(abs(grad).max()):.3g}; the "
                         "optimizer's new weights or moments overflow)")
        big = float(abs(xb).max())
        return (f"Training diverged at epoch {epoch + 1}, batch {step + 1}: {what}. That step was not "
                f"applied: the weights are those from before it, and the history so far is on "
                f"err.history and model.history. Likely causes: a learning rate too high (it is "
                f"{self.optimizer.current_learning_rate():.3g}: try a lower learning rate, e.g. 10 "
                f"times lower), or input on a large scale (this batch's values reach {big:.3g}: "
                "scale images to [0, 1]).")

    def evaluate(self, x, y, batch_size=DEFAULT_EVAL_BATCH, verbose=0):
        """(mean loss, accuracy) over (x, y), in inference mode."""
        if self.loss is None:
            raise RuntimeError("Call model.compile(...) before model.evaluate(): it needs the loss.")
        batch_size = self._check_batch_size(batch_size)
        verbose = checks.choice(verbose, "verbose", (0, 1, 2))
        x = self._check_x(x)
        y = check_labels(to_numpy(y), self._num_classes(), n=len(x))
        total_loss = total_correct = 0.0
        for start in range(0, len(x), batch_size):
            xb = self._to_device(x[start:start + batch_size])
            yb = self._to_device(y[start:start + batch_size])
            logits = (self._parallel.logits(xb) if self._parallel is not None      # inside fit
                      else self._forward_logits(xb, training=False))
            total_loss += float(self.loss.forward(logits, yb)) * len(yb)
            total_correct += int((logits.argmax(axis=1) == yb).sum())
        loss, acc = total_loss / len(x), total_correct / len(x)
        if verbose:
            print(f"loss: {loss:.4f} - accuracy: {acc:.4f}")
        return loss, acc

    def predict(self, x, batch_size=DEFAULT_EVAL_BATCH):
        """The model's output for ``x``, as a NumPy array: probabilities for a softmax model."""
        batch_size = self._check_batch_size(batch_size)
        x = self._check_x(x)
        out = [to_numpy(self.forward(self._to_device(x[s:s + batch_size]), training=False))
               for s in range(0, len(x), batch_size)]
        return np.concatenate(out)

    def _to_device(self, a):
        """A batch on the model's device (NumPy stays as it is on the CPU)."""
        return to_device(a, self.device)

    def summary(self, print_fn=print):
        """Print each layer's name, output shape and parameter count, and the totals."""
        if not self.built:
            raise RuntimeError("The model is not built yet: give Sequential(..., input_shape=...) "
                               "or call build(input_shape) or fit() first.")
        rows, shape = [], self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         "(None, " + ", ".join(map(str, shape)) + ")", f"{layer.count_params():,}"))
        # Keras's widths, widened to fit the longest entry: columns never run together.
        widths = [max(34, *(len(r[0]) + 2 for r in rows)), max(24, *(len(r[1]) + 2 for r in rows)),
                  max(12, *(len(r[2]) + 1 for r in rows))]
        rule = "_" * (sum(widths) + 2)
        lines = [f'Model: "{self.name}"', rule,
                 f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}{'Param #':>{widths[2]}}",
                 "=" * len(rule)]
        for i, (name, out, params) in enumerate(rows):
            lines.append(f"{name:<{widths[0]}}{out:<{widths[1]}}{params:>{widths[2]}}")
            lines.append(rule if i == len(rows) - 1 else "")
        total = self.count_params()
        trainable = sum(int(p.size) for layer in self.layers for p in layer.params.values())
        itemsize = self.dtype.itemsize
        lines += [f"Total params: {total:,} ({_size(total * itemsize)})",
                  f"Trainable params: {trainable:,} ({_size(trainable * itemsize)})",
                  f"Non-trainable params: {total - trainable:,} ({_size((total - trainable) * itemsize)})",
                  rule]
        text = "\n".join(lines)
        print_fn(text)
        return text

    def get_weights(self):
        """Every parameter and state array, layer by layer, as NumPy copies."""
        return [to_numpy(a).copy() for layer in self.layers
                for a in list(layer.params.values()) + list(layer.state.values())]

    def set_weights(self, weights):
        """Inverse of :meth:`get_weights`; shapes must match."""
        slots = [(layer, d, k) for layer in self.layers for d in (layer.params, layer.state) for k in d]
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights takes a list of arrays (as get_weights returns), got "
                            f"{checks.show(weights)}.")
        weights = [to_numpy(w) if hasattr(w, "shape") else np.asarray(w) for w in weights]
        if len(weights) != len(slots):
            raise ValueError(f"Expected {len(slots)} arrays, got {len(weights)}.")
        for (layer, d, k), w in zip(slots, weights):
            if tuple(w.shape) != tuple(d[k].shape):
                raise ValueError(f"{layer.name}.{k}: expected shape {tuple(d[k].shape)}, got {tuple(w.shape)}.")
            d[k][...] = to_device(np.asarray(to_numpy(w), dtype=d[k].dtype), self.device)

    def save(self, path):
        """Write the architecture and weights to one ``.npz`` file, atomically.

        ``tinycnn/serialization.py`` describes the file and reads it back (``load_model``); it
        imports this module, never the other way round. Every layer is stored as its class name
        and ``get_config()`` (``layers.base.spec_of``), which refuses, here and now, a layer or
        activation that could not be rebuilt as it is.
        """
        if not self.built:
            raise RuntimeError("Build or fit the model before saving it: it has no weights yet.")
        architecture = {"class": "Sequential", "name": self.name, "input_shape": list(self.input_shape),
                        "dtype": self.dtype.name, "layers": [spec_of(layer) for layer in self.layers]}
        training = None
        if self.optimizer is not None:
            training = {"optimizer": type(self.optimizer).__name__.lower(),
                        "optimizer_config": self.optimizer.get_config(), "loss": self.loss.name}
        arrays = {"tinycnn_format": np.array(FORMAT_VERSION),
                  "architecture": np.array(json.dumps(architecture)),
                  "training": np.array(json.dumps(training))}
        for i, layer in enumerate(self.layers):
            arrays.update({f"p/{i}/{k}": to_numpy(v) for k, v in layer.params.items()})
            arrays.update({f"s/{i}/{k}": to_numpy(v) for k, v in layer.state.items()})
        atomic_write(os.fspath(path), lambda f: np.savez(f, **arrays))


def _partial_epoch(history, steps):
    """Record in ``history`` how far the unfinished epoch got; the words for the message."""
    if history.current_epoch is None or history.current_epoch in history.epoch:
        return ""                                  # between epochs: nothing unfinished
    history.interrupted_at = {"epoch": history.current_epoch + 1, "batch": history.batches_done,
                              "batches": steps}
    if history.batches_done == 0:
        return f"; epoch {history.current_epoch + 1} had not started its first batch"
    return (f"; epoch {history.current_epoch + 1} stopped after batch {history.batches_done} of {steps}, "
            "whose updates the weights include but the history does not")


def _size(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024


class _CtrlC:
    """While training, the first Ctrl-C only asks ``fit`` to stop after the current batch, so the
    weights are never left half-updated; a second Ctrl-C interrupts at once, as usual (and may
    then land in the middle of an update).

    Signal handlers can only be set from the main thread; elsewhere Ctrl-C behaves as usual.
    A process told to ignore SIGINT (a job a non-interactive shell started with ``&``) keeps
    ignoring it, as Python itself does at start-up.
    """

    def __enter__(self):
        self.pressed = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nCtrl-C: stopping after this batch (press again to stop now).", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _ProgressBar:
    """Keras-style progress: a bar with running loss/accuracy and ETA (verbose=1), or one line
    per epoch (verbose=2), or nothing (verbose=0). Uses tqdm, imported only when needed.

    When the output is not a terminal (a log file, a pipe, CI), a redrawn bar would only pile
    up carriage returns, so verbose=1 then prints the finished bar once per epoch, as Keras does.
    """

    def __init__(self, steps, verbose):
        self.verbose, self.steps = verbose, steps
        self.bar = None
        if verbose == 1 and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=steps, file=sys.stdout, ascii=".=", mininterval=0.2,
                            bar_format="{n_fmt}/{total_fmt} [{bar:30}] {elapsed}<{remaining}{postfix}")
            self._last = 0.0

    def update(self, step, logs):
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            now = time.monotonic()
            if now - self._last > 0.2:
                self.bar.set_postfix_str(_format_logs(logs), refresh=False)
                self._last = now

    def close(self, logs, seconds, done=None):
        """Finish the bar; ``done`` (the batches finished) is less than ``steps`` when stopped early."""
        done = self.steps if done is None else done
        if self.bar is not None:
            self.bar.set_postfix_str(_format_logs(logs), refresh=False)
            self.bar.close()
        elif self.verbose == 1:
            filled = "=" * (30 * done // self.steps)
            print(f"{done}/{self.steps} [{filled:.<30}] {seconds:.1f}s - {_format_logs(logs)}", flush=True)
        elif self.verbose == 2:
            print(f"{seconds:.1f}s - {_format_logs(logs)}", flush=True)


def _format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
