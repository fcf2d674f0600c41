"""Training: compile, fit, the training step, evaluate and predict; Keras's Trainer.

``Sequential`` (``model.py``) holds the model's structure: its layers, their weights, the file.
This class, which ``Sequential`` inherits, trains and runs it, as Keras's ``Trainer`` does. Every
pass goes through the model's :class:`~tinycnn.plan.Plan` (``tinycnn/plan.py``), the one loop that
runs forward, loss and backward; a training step is

    logits, loss = plan.loss_and_gradients(x, y)     forward, loss, backward: every grads filled
    optimizer.step(layers)                           then one update of every parameter

``fit`` around it is bookkeeping: batching, shuffling, checking the input, progress, callbacks.
In the fast mode (the default) a batch is split over the CPU cores (``tinycnn/parallel.py``), each
thread running the same loop on its share. ``compile(fast=False)`` trains with the layers' own
code in one thread instead (the reference mode; see ``plan.py``).

On the GPU ``fit`` runs the same loop in the *deferred* mode (``Trainer.deferred``), which never
waits for the device within an epoch: on a GPU a step is a few hundred small kernel launches,
queued in microseconds, and every read of a number from the device (``float(loss)``, a check
that the weights are finite) stops the host until the whole queue has run. So

- the training set is copied to the device once per fit, and each batch is gathered there;
- the batch's loss and number correct are added up there (``_DeviceTotals``);
- the optimizer checks the loss and the new weights there, and a step that is not finite
  writes nothing and sets a *sticky flag* there, which makes every later step write nothing
  too (``kernels/adam.py``);
- the host reads the totals and the flag only when someone looks: when the progress bar
  redraws, at the end of the epoch, on Ctrl-C, at every batch for a callback with
  ``on_batch_end``, and at least every ``MAX_UNREAD_STEPS`` batches. When the flag is set it
  raises for the batch the flag names, and the weights are those from before it, as on the CPU.

The deferred mode runs on the CPU too, with NumPy in CuPy's place (``model.deferred = True``),
which is how the tests prove it equal to the CPU's own loop (``tests/test_gpu_loop.py``).
"""

import contextlib
import functools
import math
import threading
import time
import warnings

import numpy as np

from . import checks, losses, optimizers
from .backend import array_module, get_array_module, to_device, to_numpy
from .callbacks import Callback, History, check_callbacks
from .interrupt import CtrlC
from .kernels.adam import add_unless_flagged, new_flag, read_flag
from .kernels.jit import announcing_compiles
from .metrics import ACCURACY_NAMES
from .optimizers import NonFiniteUpdate
from .parallel import DataParallel, cpu_count, not_per_sample
from .layers.activations import Softmax
from .layers.normalization import BatchNormalization
from .plan import Plan, final_softmax
from .progress import ProgressBar, format_logs

DEFAULT_EVAL_BATCH = 128

# The deferred mode reads the totals and the sticky flag at least every MAX_UNREAD_STEPS steps, so
# that a step that was not finite is reported at most that many steps after it ran; and, when the
# progress bar redraws, REDRAW_SECONDS after the last read (ProgressBar shows new numbers at most
# five times a second).
MAX_UNREAD_STEPS = 50
REDRAW_SECONDS = 0.2


def one_call_at_a_time(method):
    """Decorate a model's method so that it holds the model while it runs (``Trainer._one_call``)."""
    @functools.wraps(method)
    def held(self, *args, **kwargs):
        with self._one_call(method.__name__):
            return method(self, *args, **kwargs)
    return held


class Trainer:
    """compile, fit, evaluate and predict, for a model with ``layers`` (see ``Sequential``).

    One call at a time: ``fit``, ``evaluate``, ``predict``, ``save``, ``get_weights`` and
    ``set_weights`` on a model that another thread is using fail at once with a RuntimeError
    (:meth:`_one_call`), instead of mixing two calls' work in the layers' caches and weights. The
    same thread may nest them (a callback may save or read the weights inside ``fit``).
    """

    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.fast = True            # compile(fast=False): the reference mode
        self.metric = "accuracy"    # the name accuracy is logged under, or None (compile's metrics)
        self.stop_training = False
        self.deferred = None        # None: deferred on the GPU only; True / False: everywhere / nowhere
        self.history = None         # the History of the last fit, kept even when fit raises
        self._parallel = None       # set by fit when it splits batches over threads
        self._plan_key = self._plan_obj = None
        self._lock = threading.RLock()
        self._busy_with = None      # the call that holds the lock, for the message

    @contextlib.contextmanager
    def _one_call(self, what):
        """Hold the model for ``what`` ("fit", "predict", ...), or fail at once if another thread
        holds it."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"{what}: this model is busy with {self._busy_with} in another thread. A model "
                               "serves one call at a time; wait for that call to return, or give each "
                               "thread a model of its own (tinycnn.load_model, or the same layers built "
                               "anew and model.set_weights(other.get_weights())).")
        outer = self._busy_with is None
        if outer:
            self._busy_with = what
        try:
            yield
        finally:
            if outer:
                self._busy_with = None
            self._lock.release()

    # -- training setup ---------------------------------------------------------------------
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                fast=True):
        """Choose the optimizer and loss: strings ("adam", "sgd", ...) or objects.

        The loss is always computed from logits. If the model ends in a softmax -- a ``Softmax``
        layer, or ``activation="softmax"`` on the last layer, the Keras way -- training skips
        that softmax and the fused loss applies it, stably. ``predict`` still applies it.

        ``fast=False`` is the reference mode: ``fit``, ``evaluate`` and ``predict`` run exactly
        the layers' own ``forward`` and ``backward``, in one thread, and the optimizer's update
        as ``optimizers.py`` writes it, checking the layer contract at every step. A breakpoint
        in ``Conv2D.forward`` stops there. ``fast=True`` (the default) runs fused blocks, the
        fused Adam kernel and one thread per core instead, to the same numbers up to float
        rounding (``tests/test_fast_paths.py``).
        """
        optimizer = optimizers.get(optimizer)
        loss = losses.get(loss)
        fast = checks.boolean(fast, "fast")
        metric = _accuracy_name(metrics)
        with self._one_call("compile"):
            optimizer.attach(self)
            self.optimizer, self.loss, self.fast, self.metric = optimizer, loss, fast, metric

    # -- the passes ---------------------------------------------------------------------------
    def plan(self):
        """The model's :class:`~tinycnn.plan.Plan`: its steps to the logits in the current mode.
        Made once, and again whenever the layers, their device, the mode or the loss change, so
        that a forward pass and the backward pass after it run the same step objects."""
        if not self.layers:
            raise ValueError("The model has no layers; add some before running it.")
        loss = type(self.loss) if self.loss is not None else losses.SoftmaxCrossEntropy
        # The layers themselves, not their id()s: a popped layer's id may be reused by the next one.
        key = (tuple(self.layers), tuple(layer.device for layer in self.layers), self.fast, loss)
        if self._plan_key != key:
            self._plan_key, self._plan_obj = key, Plan(self.layers, loss(), fast=self.fast, check=not self.fast)
        return self._plan_obj

    def _trainable_layers(self):
        return [layer for layer in self.layers if layer.params]

    def _train_step(self, xb, yb, check=False, flag=None, batch=0):
        """One step of gradient descent on one batch; returns (loss, number correct).

        The whole of learning, in one thread (``Plan.loss_and_gradients``):

            logits = forward through every step
            loss   = cross-entropy of softmax(logits) and the labels
            d      = dL/dlogits = (softmax(logits) - onehot) / N
            for step in reversed(steps): d = step.backward(d)       (down to the first trainable one)
            optimizer step

        ``self._parallel``, when ``fit`` set one, runs the same on shares of the batch in
        several threads (``tinycnn/parallel.py``). ``check`` checks the layer contract on the
        way (the reference mode checks at every step anyway).

        A loss that is not finite stops here, before the weights are touched; the optimizer
        refuses an update that would make any weight not finite (``NonFiniteUpdate``).

        With the epoch's sticky ``flag`` (the deferred mode, on the GPU; the module docstring),
        nothing is read back: the loss and the number correct are returned as arrays where they
        were computed, and the optimizer checks the loss and every new weight there
        (``step_unless_flagged``), writing nothing for this ``batch`` or any later one once one
        was not finite.
        """
        deferred = flag is not None
        if self._parallel is not None:
            logits, loss = self._parallel.train_step(xb, yb, check)
        else:
            plan = self.plan()
            plan.check = check or not self.fast
            logits, loss = plan.loss_and_gradients(xb, yb, read=not deferred)
        if deferred:
            self.optimizer.step_unless_flagged(self._trainable_layers(), loss, flag, batch, fast=self.fast)
        elif not math.isfinite(loss):
            raise NonFiniteUpdate(None, f"the loss is {loss}")
        else:
            self.optimizer.step(self._trainable_layers(), fast=self.fast)
        correct = (logits.argmax(axis=1) == self.loss.classes(yb)).sum()
        return loss, (correct if deferred else int(correct))

    # -- checking what users pass in -----------------------------------------------------------
    def _check_x(self, x, what="x"):
        """Validate ``x`` (``checks.samples``) against the model, building it on first use, and
        return it in the model's dtype (float64 data trains a float32 model, as in Keras)."""
        x = checks.samples(x, what)
        if not self.built:
            self.build(x.shape[1:])
        checks.sample_shape(x, self.input_shape, what)
        return x.astype(self.dtype, copy=False)

    def _num_classes(self):
        return self.output_shape[-1]

    # -- the Keras API ------------------------------------------------------------------------------
    @one_call_at_a_time
    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, verbose=1, seed=None, callbacks=None, threads=None):
        """Train for ``epochs`` passes over (x, y); returns a :class:`History`.

        ``validation_split`` holds out the *last* fraction of the data before shuffling, as
        Keras does (training keeps floor(N * (1 - split)) samples). ``seed`` fixes the shuffling;
        without it the shuffling comes from the model's own generator (``Sequential(seed=...)``),
        so a seeded model trains the same way every run. ``verbose``: 1 a progress bar per epoch,
        2 one line per epoch, 0 nothing.

        ``threads``: how many CPU cores share each batch (``tinycnn/parallel.py``); None uses
        every core this process may use, 1 trains in one thread. A model on the GPU, in the
        reference mode (``compile(fast=False)``), or with a layer of your own that is not
        ``per_sample`` (fit then says which) uses one. BatchNormalization and Dropout are split
        too: BatchNormalization sums its statistics across the threads, and Dropout draws each
        sample's mask from a stream of its own (``parallel.py``, ``layers/dropout.py``).

        Divergence: a step whose loss, gradients or new weights are not finite is never applied.
        ``fit`` raises ``FloatingPointError`` naming the epoch, the batch and what was not finite;
        the weights are those from before that step, and the history (the finished epochs and
        the partial one) is on the error as ``err.history`` and on the model as ``model.history``.

        On the GPU, ``fit`` runs deferred (``model.deferred``, the module docstring): the data
        go to the GPU once, and the host reads the loss only when it shows or passes it on.
        The numbers are the same; a step that is not finite is reported up to
        ``MAX_UNREAD_STEPS`` steps after it ran, for its own epoch and batch, with the weights
        from before it.
        """
        if self.optimizer is None:
            raise RuntimeError("Call model.compile(optimizer=..., loss=...) before model.fit().")
        epochs = checks.integer(epochs, "epochs", minimum=0)       # 0 trains nothing, as in Keras
        batch_size = checks.integer(batch_size, "batch_size", minimum=1)
        validation_split = checks.number(validation_split, "validation_split", 0.0, 1.0, high_open=True)
        shuffle = checks.boolean(shuffle, "shuffle")
        verbose = _verbose(verbose)
        seed = checks.seed(seed)
        callbacks = check_callbacks(callbacks)
        if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                            or len(validation_data) != 2):
            raise ValueError("validation_data must be a pair (x_val, y_val), got "
                             f"{checks.show(validation_data)}.")
        x = self._check_x(x)
        y = self.loss.check_targets(to_numpy(y), self._num_classes(), n=len(x))
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
            val = (x_val, self.loss.check_targets(to_numpy(validation_data[1]), self._num_classes(), n=len(x_val)))

        self._warn_if_it_cannot_learn(batch_size, len(x))
        deferred = self._deferred()
        data = TrainingData(x, y, self.device, deferred)
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        history = History()
        self.history = history     # also on the model, so an error in a callback loses nothing
        callbacks = [history] + callbacks      # first: an epoch is recorded even if a callback fails
        params = {"epochs": epochs, "steps": math.ceil(len(x) / batch_size), "verbose": verbose,
                  "metrics": [k for k in ("loss", self.metric) if k]
                  + ([f"val_{k}" for k in ("loss", self.metric) if k] if val is not None else [])}
        for cb in callbacks:
            cb.set_params(params)
            cb.set_model(self)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        try:
            with CtrlC() as ctrl_c, self._threads(threads), announcing_compiles(enabled=verbose > 0):
                for epoch in range(epochs):
                    self._fit_epoch(data, batch_size, epoch, epochs, rng.permutation(len(x)) if shuffle
                                    else np.arange(len(x)), val, verbose, callbacks, ctrl_c, deferred)
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

    def _fit_epoch(self, data, batch_size, epoch, epochs, order, val, verbose, callbacks, ctrl_c, deferred):
        """One pass over the shuffled training data, then validation and the epoch's callbacks.

        Each batch's loss and number correct go into the epoch's totals. On the CPU they are
        numbers on the host, and everything is read at every batch. In the deferred mode (the
        module docstring) they stay on the device, and the host reads them, with the sticky
        flag, only at the batches where something is shown or passed on (``reading``).
        """
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        steps = math.ceil(len(order) / batch_size)
        bar = ProgressBar(steps, verbose)
        totals = _DeviceTotals(array_module(self.device)) if deferred else _HostTotals()
        # Read at every batch: on the CPU; for a callback that looks at every batch's logs; and
        # for layers with state (BatchNormalization's running means move in the forward pass,
        # which the flag cannot stop), so that the step after a bad one never runs.
        every_batch = (not deferred or any(_looks_at_every_batch(cb) for cb in callbacks)
                       or any(layer.state for layer in self.layers))
        sizes, iterations = [], []      # per batch: its samples, and optimizer.iterations before it
        seen, unread, last_read = 0, 0, -math.inf
        start = time.perf_counter()
        for step, (xb, yb) in enumerate(data.batches(order, batch_size)):
            sizes.append(len(yb))
            iterations.append(self.optimizer.iterations)
            try:
                loss, correct = self._train_step(xb, yb, check=epoch == 0 and step == 0,
                                                 flag=totals.flag if deferred else None, batch=step)
                totals.add(loss, correct, len(yb), step)
                seen += len(yb)
                unread += 1
                now = time.monotonic()
                reading = (every_batch or step == steps - 1 or ctrl_c.pressed or unread >= MAX_UNREAD_STEPS
                           or (bar.bar is not None and now - last_read >= REDRAW_SECONDS))
                if not reading:
                    continue
                bad = totals.first_bad()
                if bad is not None:
                    raise self._flagged(bad, iterations)
                logs = self._logs(*totals.sums(), seen)
                unread, last_read = 0, now
            except NonFiniteUpdate as err:
                if not hasattr(err, "batch"):       # raised by this step, on the host; but the
                    bad = totals.first_bad()        # flag may name an earlier batch, unread
                    err = self._flagged(bad, iterations) if bad is not None else err
                batch = getattr(err, "batch", step)
                self._diverged(err, callbacks[0], epoch, batch, steps, totals, sum(sizes[:batch]),
                               xb if batch == step else data.host_batch(order, batch, batch_size))
            bar.update(step + 1, logs)
            for cb in callbacks:
                cb.on_batch_end(step, logs)
            if ctrl_c.pressed:          # Ctrl-C: stop here, after a whole batch
                bar.close(logs, time.perf_counter() - start, done=step + 1)
                raise KeyboardInterrupt
        if val is not None:
            val_loss, val_acc = self._evaluate(*val, DEFAULT_EVAL_BATCH)
            logs["val_loss"] = val_loss
            if self.metric:
                logs[f"val_{self.metric}"] = val_acc
        bar.close(logs, time.perf_counter() - start)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)

    def _logs(self, loss_sum, correct, seen):
        """The running logs over ``seen`` samples: the mean loss, and the accuracy if compiled so."""
        logs = {"loss": loss_sum / seen}
        if self.metric:
            logs[self.metric] = correct / seen
        return logs

    def _flagged(self, bad, iterations):
        """The :class:`NonFiniteUpdate` for the batch the sticky flag names, ``bad`` being
        (batch, what, loss) (``_DeviceTotals.first_bad``), with the batch as ``err.batch``. That
        step and every later one wrote nothing, so the optimizer's step count goes back to
        ``iterations[batch]``, what it was before that batch."""
        batch, what, loss = bad
        self.optimizer.iterations = iterations[batch]
        err = (NonFiniteUpdate(None, f"the loss is {loss}") if what == 0
               else self.optimizer.flagged_update(what - 1, self._trainable_layers()))
        err.batch = batch
        return err

    def _diverged(self, err, history, epoch, batch, steps, totals, seen, xb):
        """Stop ``fit`` at ``batch``, a step that was not finite and changed nothing: the history
        ends with this unfinished epoch's logs over the ``seen`` samples of the batches before it,
        and ``FloatingPointError`` says where and why (``xb``: that batch's input)."""
        history.diverged_at = {"epoch": epoch + 1, "batch": batch, "batches": steps}
        history.batches_done = batch
        if seen:            # the unfinished epoch's logs, over the batches it applied
            history.on_epoch_end(epoch, self._logs(*totals.sums(), seen))
        raise FloatingPointError(self._divergence_message(err, epoch, batch, xb)) from err

    def _deferred(self):
        """Whether ``fit`` runs deferred: ``self.deferred``, or when None, on the GPU."""
        if self.deferred is None:
            return self.device == "gpu"
        return checks.boolean(self.deferred, "model.deferred")

    def _warn_if_it_cannot_learn(self, batch_size, n):
        """Warn about models that train without error but cannot learn: a softmax over one unit
        (always 1: the loss is 0 whatever the weights), a softmax applied twice, and a
        BatchNormalization that sees one value per channel in a batch of fit's (x - mean is 0:
        nothing reaches the layers before it). ``n`` samples in batches of ``batch_size``."""
        smallest_batch = min(batch_size, n % batch_size or batch_size)
        last = (f" (the last batch of each epoch holds {n} % {batch_size} = 1 sample: drop it, or choose "
                "another batch_size)") if smallest_batch < batch_size else " (use a batch_size of 2 or more)"
        problems = []
        softmax = final_softmax(self.layers)
        if softmax is not None and self.output_shape[-1] == 1:
            problems.append("it ends in a softmax over 1 unit, which is always 1: the loss is 0 and "
                            "nothing is learnt. For n classes, end in n units (Dense(n, "
                            "activation='softmax')); for two, Dense(2, activation='softmax')")
        for before, layer in zip(self.layers, self.layers[1:]):
            if isinstance(layer, Softmax) and (isinstance(before, Softmax)
                                               or isinstance(getattr(before, "activation", None), Softmax)):
                problems.append(f"{layer.name} applies a softmax to {before.name}'s softmax, which squeezes "
                                "every output towards 1/n: drop one of the two")
        shape = self.input_shape
        for layer in self.layers:
            if isinstance(layer, BatchNormalization) and smallest_batch * math.prod(shape[:-1]) == 1:
                problems.append(f"{layer.name} (BatchNormalization) sees one value per channel in a batch "
                                f"of {smallest_batch}{last}, so x - mean is 0 and the layers before it get "
                                "no gradient (PyTorch refuses this)")
            shape = layer.output_shape(shape)
        for problem in problems:
            warnings.warn(f"This model cannot learn: {problem}.", stacklevel=4)

    @contextlib.contextmanager
    def _threads(self, threads):
        """For the duration of fit: ``self._parallel`` is a DataParallel over ``threads`` cores
        when the model can use one (the fast mode, on the CPU, every layer per-sample), else None.
        A layer that keeps the model on one thread is named, once per call site of ``fit``."""
        threads = cpu_count() if threads is None else checks.integer(threads, "threads", minimum=1)
        if threads == 1 or self.device != "cpu" or not self.fast:
            yield
            return
        alone = not_per_sample(self.layers)
        if alone is not None:
            warnings.warn(f"fit trains in one thread, not {threads}: layer {alone.name!r} "
                          f"({type(alone).__name__}) has per_sample = False, so a batch cannot be split "
                          "over the CPU cores (layers/base.py says when a layer may set it to True). "
                          "Pass threads=1 to fit to silence this.", stacklevel=4)
            yield
            return
        with DataParallel(self, threads) as parallel:
            self._parallel = parallel
            try:
                yield
            finally:
                self._parallel = None

    def _divergence_message(self, err, epoch, step, xb):
        """Why a step was refused, where, and the likely cause, from what can be seen: the learning
        rate, weights that were not finite before the step, the gradient, the input's scale."""
        kept = ("That step was not applied: the weights are those from before it, and the history so "
                "far is on err.history and model.history.")
        where = f"Training diverged at epoch {epoch + 1}, batch {step + 1}: {err}. {kept}"
        lr = self.optimizer.current_learning_rate()
        if not (math.isfinite(lr) and lr >= 0):
            return (f"Training stopped at epoch {epoch + 1}, batch {step + 1}: the learning rate is {lr}, and "
                    f"it must be a finite number >= 0. {kept} Look at what set it: a callback "
                    "(LearningRateScheduler, your own) or a schedule.")
        bad = [f"{layer.name}/{k}" for layer in self.layers for k, a in {**layer.params, **layer.state}.items()
               if not bool(get_array_module(a).isfinite(a).all())]
        if bad:
            return (f"{where} The weights were not finite before this step ({', '.join(bad)} hold NaN or inf), "
                    "so no learning rate can help: they were set that way (writing into layer.params, or "
                    "a model trained without these checks). Rebuild or reload the model.")
        what = ""
        if err.key is not None:
            layer = next(layer for layer in self.layers if layer.name == err.key[0])
            grad = layer.grads[err.key[1]]
            if not bool(get_array_module(grad).isfinite(grad).all()):
                what = f" The gradient of {err.key[0]}/{err.key[1]} is not finite."
            else:
                what = (f" Its gradient is finite but reaches {float(abs(grad).max()):.3g}; the "
                        "optimizer's new weights or moments overflow.")
        big = float(abs(xb).max())
        scale = (f", or input on a large scale (this batch's values reach {big:.3g}: scale images to "
                 "[0, 1])") if big > 10 else ""
        return (f"{where}{what} Likely cause: a learning rate too high (it is {lr:.3g}: try a lower "
                f"learning rate, e.g. 10 times lower){scale}.")

    @one_call_at_a_time
    def evaluate(self, x, y, batch_size=DEFAULT_EVAL_BATCH, verbose=0, return_dict=False):
        """The mean loss over (x, y), in inference mode, and the accuracy when ``compile`` asked
        for it (as Keras: ``loss, acc = model.evaluate(x, y)``; the loss alone without metrics).
        ``return_dict=True``: ``{"loss": ..., "accuracy": ...}``, named as ``compile`` named them.
        ``verbose`` 1 or 2 prints them on one line."""
        if self.loss is None:
            raise RuntimeError("Call model.compile(...) before model.evaluate(): it needs the loss.")
        batch_size = checks.integer(batch_size, "batch_size", minimum=1)
        verbose = _verbose(verbose)
        return_dict = checks.boolean(return_dict, "return_dict")
        start = time.perf_counter()
        loss, acc = self._evaluate(x, y, batch_size)
        results = {"loss": loss, **({self.metric: acc} if self.metric else {})}
        if verbose:
            steps = math.ceil(len(x) / batch_size)
            print(f"{steps}/{steps} - {time.perf_counter() - start:.1f}s - " + format_logs(results), flush=True)
        if return_dict:
            return results
        return (loss, acc) if self.metric else loss

    def _evaluate(self, x, y, batch_size):
        """(mean loss, accuracy) over (x, y) in inference mode, batch by batch; inside fit, each
        batch split over the threads."""
        x = self._check_x(x)
        y = self.loss.check_targets(to_numpy(y), self._num_classes(), n=len(x))
        plan = self.plan()
        total_loss = total_correct = 0.0
        for start in range(0, len(x), batch_size):
            xb = self._to_device(x[start:start + batch_size])
            yb = self._to_device(y[start:start + batch_size])
            logits = (self._parallel.logits(xb) if self._parallel is not None      # inside fit
                      else plan.forward(xb, training=False))
            total_loss += float(plan.loss.forward(logits, yb)) * len(yb)
            total_correct += int((logits.argmax(axis=1) == plan.loss.classes(yb)).sum())
        return total_loss / len(x), total_correct / len(x)

    @one_call_at_a_time
    def predict(self, x, batch_size=DEFAULT_EVAL_BATCH, verbose=0):
        """The model's output for ``x``, as a NumPy array: probabilities for a softmax model.
        ``verbose`` 1 or 2 prints one line when it is done, as Keras does."""
        batch_size = checks.integer(batch_size, "batch_size", minimum=1)
        verbose = _verbose(verbose)
        start = time.perf_counter()
        x = self._check_x(x)
        plan = self.plan()
        out = [to_numpy(plan.predict(self._to_device(x[s:s + batch_size])))
               for s in range(0, len(x), batch_size)]
        if verbose:
            steps = len(out)
            print(f"{steps}/{steps} - {time.perf_counter() - start:.1f}s", flush=True)
        return np.concatenate(out)

    def _to_device(self, a):
        """A batch on the model's device (NumPy stays as it is on the CPU)."""
        return to_device(a, self.device)


class TrainingData:
    """The training set of one ``fit``, and each epoch's batches on the model's device.

    By default (the CPU) a batch is gathered on the host, ``x[idx]``, and copied to the model's
    device: on the CPU, no copy at all. In the deferred mode the whole set is copied to the
    device once per fit, and each batch is gathered there (``xp.take``). A set larger than
    ``limit_bytes`` (None: half of the GPU's free memory; no limit on the CPU) is copied in
    chunks of whole batches instead, each gathered on the host in the epoch's order: the same
    batches, in the same order.
    """

    limit_bytes = None

    def __init__(self, x, y, device, deferred):
        self.x, self.y, self.device, self.deferred = x, y, device, deferred
        self.on_device = None
        if deferred and x.nbytes + y.nbytes <= self._limit():
            self.on_device = (to_device(x, device), to_device(y, device))

    def _limit(self):
        if self.limit_bytes is not None:
            return self.limit_bytes
        if self.device == "gpu":
            return array_module("gpu").cuda.Device().mem_info[0] // 2
        return math.inf

    def batches(self, order, batch_size):
        """(xb, yb) on the model's device, for each batch of ``order`` (indices into x)."""
        if not self.deferred:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                yield to_device(self.x[idx], self.device), to_device(self.y[idx], self.device)
        elif self.on_device is not None:
            x, y = self.on_device
            xp = get_array_module(x)
            order = to_device(order, self.device)           # one small copy per epoch
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                yield xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)
        else:
            per_sample = (self.x.nbytes + self.y.nbytes) / len(self.x)
            chunk = max(1, int(self._limit() // per_sample) // batch_size) * batch_size
            for first in range(0, len(order), chunk):
                rows = order[first:first + chunk]
                x, y = to_device(self.x[rows], self.device), to_device(self.y[rows], self.device)
                for start in range(0, len(rows), batch_size):
                    yield x[start:start + batch_size], y[start:start + batch_size]

    def host_batch(self, order, batch, batch_size):
        """Batch number ``batch`` of ``order``'s epoch, as NumPy (for a message)."""
        return self.x[order[batch * batch_size:(batch + 1) * batch_size]]


class _HostTotals:
    """An epoch's running totals on the host: the sum of loss * batch size, and the number
    correct. Each step's numbers are read as they come, and a step that is not finite raises
    before it is added: there is no flag to read."""

    def __init__(self):
        self.loss = self.correct = 0

    def add(self, loss, correct, n, batch):
        self.loss += loss * n
        self.correct += correct

    def first_bad(self):
        return None

    def sums(self):
        return self.loss, self.correct


class _DeviceTotals:
    """The same totals on the device (``xp``), beside the epoch's sticky flag, which they obey:
    ``add_unless_flagged`` adds nothing once the flag is set (``kernels/adam.py``). Reading
    them (``first_bad``, ``sums``) waits for the device."""

    def __init__(self, xp):
        self.flag = new_flag(xp)
        self.totals = xp.zeros(3, dtype=xp.float64)    # loss sum, number correct, a bad batch's loss

    def add(self, loss, correct, n, batch):
        add_unless_flagged(self.totals, self.flag, loss, correct, n, batch)

    def first_bad(self):
        """(batch, what, loss) of the first step that was not finite, or None (``read_flag``)."""
        bad = read_flag(self.flag)
        return None if bad is None else (*bad, float(self.totals[2]))

    def sums(self):
        loss, correct, _ = to_numpy(self.totals).tolist()
        return loss, correct


def _looks_at_every_batch(callback):
    """Whether ``callback`` has an ``on_batch_end`` of its own (History's only counts batches)."""
    return type(callback).on_batch_end not in (Callback.on_batch_end, History.on_batch_end)


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


def _accuracy_name(metrics):
    """The one metric tinycnn computes, accuracy, under the name ``compile`` was given (Keras
    logs each metric under its name), or None for ``metrics=None`` / ``[]``: the loss alone."""
    if metrics is None:
        return None
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a list such as ['accuracy'], got {checks.show(metrics)}.")
    unknown = [m for m in metrics if m not in ACCURACY_NAMES]
    if unknown:         # anything else would be silently ignored
        raise ValueError(f"Unknown metrics {unknown}; tinycnn computes accuracy, under one of the names "
                         f"{list(ACCURACY_NAMES)}.")
    if len(set(metrics)) > 1:
        raise ValueError(f"metrics={list(metrics)} names accuracy twice; tinycnn logs it once: give one name.")
    return metrics[0] if metrics else None


def _verbose(verbose):
    """Keras's verbose: 0, 1, 2 or "auto" (1)."""
    return 1 if verbose == "auto" else checks.choice(verbose, "verbose", (0, 1, 2))
