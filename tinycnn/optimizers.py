"""Optimizers: how a gradient becomes a parameter update.

Both update the arrays in ``layer.params`` in place. Their state (velocities, moments) is keyed by
(layer name, parameter name) -- stable and readable, never ``id()`` -- so a model's layers need
unique names, which ``Sequential`` guarantees. An optimizer belongs to one model (``attach``), and
each state array is checked against the shape of the parameter it serves, so no update ever reads
another model's state or past the end of an array.

``learning_rate`` is a number, or a schedule from :mod:`tinycnn.schedules` that gives the rate
for each step (``Adam(learning_rate=CosineDecay(1e-3, decay_steps=...))``).
"""

import math
import weakref

import numpy as np

from . import checks, schedules
from .backend import device_of, get_array_module, to_device, to_numpy
from .kernels.adam import FlatAdam, adam_update, adam_update_and_keep, put_back
from .layers.base import check_gradients


class NonFiniteUpdate(FloatingPointError):
    """An update would have made a weight or an optimizer state NaN or infinite; nothing was
    changed. ``key`` is (layer name, parameter name), or None when it is the loss or the
    learning rate (from a schedule) that is not finite."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


class Optimizer:
    def __init__(self, learning_rate):
        if not isinstance(learning_rate, schedules.LearningRateSchedule):
            learning_rate = checks.number(learning_rate, "learning_rate", minimum=0, low_open=True,
                                          alternative="a schedule such as CosineDecay(...)")
        self.learning_rate = learning_rate
        self.iterations = 0       # updates made so far
        self.state = {}
        self._model = None        # a weak reference to the one model this optimizer trains

    def attach(self, model):
        """Make this optimizer ``model``'s (``compile`` calls it). Its state -- moments, velocities,
        the step count a schedule reads -- belongs to one model's parameters, so an optimizer that
        already trains another model, or trained one, is refused: sharing it would hand the second
        model the first one's moments and steps. Compiling the same model again keeps it."""
        owner = self._model() if self._model is not None else None
        if self._model is not None and owner is not model:
            which = f"the model {owner.name!r}" if owner is not None else "another model, which is gone"
            raise ValueError(f"This {type(self).__name__} optimizer already belongs to {which}: its state "
                             "(moments and step count) is that model's. Give each model an optimizer of its "
                             f"own: compile(optimizer={type(self).__name__}(...)), or a name such as "
                             "optimizer='adam'.")
        self._model = weakref.ref(model)

    def forget(self, layer_name):
        """Drop the state of one layer's parameters (``Sequential.pop``)."""
        self.state = {key: value for key, value in self.state.items() if key[0] != layer_name}

    def reset(self):
        """Forget the state and the step count, for parameters made anew (``Sequential.build``)."""
        self.iterations = 0
        self.state = {}

    def current_learning_rate(self):
        """The rate the next update will use: the number, or the schedule at this step."""
        if isinstance(self.learning_rate, schedules.LearningRateSchedule):
            return self.learning_rate(self.iterations)
        return self.learning_rate

    def step(self, layers, fast=True):
        """Apply one update to every parameter of ``layers`` from its ``grads``, or to none.

        If any new weight or state value would not be finite (NaN or inf), nothing is written
        and :class:`NonFiniteUpdate` names the first such parameter: a diverging step is never
        half applied, and the weights stay those from before it. Every update is first computed
        without being written, and checked, then all are written (``_write_all_or_none``); Adam
        on the CPU instead writes each at once and puts the step back if one is not finite.

        Each layer's gradients are checked against its parameters first (``check_gradients``:
        the same keys, shapes and dtypes), so an update never reads past the end of an array.
        ``fast=False`` runs every update as the NumPy lines below its formula; ``fast=True``
        lets an optimizer use a fused kernel where it has one (Adam, on the CPU).
        """
        for layer in layers:
            check_gradients(layer)
        lr = self.current_learning_rate()
        if not (math.isfinite(lr) and lr >= 0):     # a schedule may decay to 0
            raise NonFiniteUpdate(None, f"the learning rate is {lr}")
        slots = [((layer.name, name), param, layer.grads[name])
                 for layer in layers for name, param in layer.params.items()]
        self.iterations += 1                        # the update's number t, counted from 1
        bad = self._write_all_or_none(slots, lr, fast)
        if bad is not None:
            self.iterations -= 1
            raise NonFiniteUpdate(bad, f"the update of {bad[0]}/{bad[1]} is not finite")

    def _write_all_or_none(self, slots, lr, fast):
        """Write the update of every (key, param, grad) in ``slots``, or, if any is not finite,
        none; returns the key of the first that is not, or None. Every update is checked first,
        then every one written."""
        for key, param, grad in slots:
            if not self.update(key, param, grad, lr, write=False, fast=fast):
                return key
        for key, param, grad in slots:
            self.update(key, param, grad, lr, fast=fast)
        return None

    def update(self, key, param, grad, lr, write=True, fast=True):
        """Update one parameter in place with learning rate ``lr``; return whether every new
        value is finite. ``write=False`` only computes and checks, changing nothing."""
        raise NotImplementedError

    def step_unless_flagged(self, layers, loss, flag, batch, fast=True):
        """One update in the deferred mode (``fit`` on the GPU; ``Trainer.deferred``), where the
        loss is an array that may still be on the device and nothing should wait for it.

        An optimizer with a flagged kernel (Adam: ``kernels/adam.py``) checks the loss and every
        new value on the device, and writes nothing when one is not finite or when ``flag``, the
        sticky flag, was set by an earlier ``batch`` of the epoch; it then sets ``flag`` instead
        of raising, and the host finds out when it next reads the flag. This generic version
        reads the loss back and runs :meth:`step`, which waits for the device at every step and
        raises :class:`NonFiniteUpdate` at once, as ``step`` does; the flag stays CLEAN.
        """
        loss = float(loss)
        if not math.isfinite(loss):
            raise NonFiniteUpdate(None, f"the loss is {loss}")
        self.step(layers, fast=fast)

    def flagged_update(self, k, layers):
        """The :class:`NonFiniteUpdate` for parameter ``k`` (in :meth:`step`'s order over
        ``layers``), which the sticky flag named."""
        layer, name = [(layer, name) for layer in layers for name in layer.params][k]
        return NonFiniteUpdate((layer.name, name), f"the update of {layer.name}/{name} is not finite")

    def _slot(self, key, param, slot):
        """A zero-initialised state array for (key, slot), made on first use."""
        full = key + (slot,)
        if full not in self.state:
            self.state[full] = get_array_module(param).zeros_like(param)
        state = self.state[full]
        if state.shape != param.shape or state.dtype != param.dtype:
            raise ValueError(f"The optimizer's {slot} for {key[0]}/{key[1]} has shape {state.shape} "
                             f"({state.dtype}), but the parameter has shape {param.shape} ({param.dtype}): "
                             "this optimizer has state from another model or another build of this "
                             "one. Give each model an optimizer of its own (compile(optimizer=Adam()) "
                             "again).")
        return state

    def get_state(self):
        """What a saved model keeps of this optimizer besides its config: ``(iterations, slots)``,
        slots being ``{"layer/param/slot": NumPy array}`` (Adam's m and v, SGD's velocity)."""
        return self.iterations, {"/".join(key): to_numpy(value) for key, value in self.state.items()}

    def set_state(self, iterations, slots):
        """The inverse of :meth:`get_state`, for ``load_model``: ``slots`` keyed "layer/param/slot".
        Each slot is checked against the parameter it belongs to when it is first used."""
        self.iterations = checks.integer(iterations, "iterations", minimum=0)
        # rsplit: a layer's name may itself hold a "/", the parameter's and the slot's do not
        self.state = {tuple(name.rsplit("/", 2)): np.array(value) for name, value in slots.items()}

    def get_config(self):
        lr = self.learning_rate
        return {"learning_rate": schedules.serialize(lr) if isinstance(lr, schedules.LearningRateSchedule)
                else lr}

    @classmethod
    def from_config(cls, config):
        """The inverse of :meth:`get_config` (a saved schedule is rebuilt from its dict)."""
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum, as Keras defines it.

        v = momentum * v - learning_rate * g
        p = p + v                                     (plain momentum)
        p = p + momentum * v - learning_rate * g      (nesterov=True)

    With momentum=0 this is p = p - learning_rate * g.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = checks.number(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.nesterov = checks.boolean(nesterov, "nesterov")

    def update(self, key, param, grad, lr, write=True, fast=True):
        xp = get_array_module(param)
        mu = self.momentum
        v = self._slot(key, param, "velocity") if mu else None
        with np.errstate(over="ignore", invalid="ignore"):  # reported by the return value instead
            if mu == 0.0:
                new_p = param - lr * grad
            else:
                v = mu * v - lr * grad
                new_p = param + (mu * v - lr * grad if self.nesterov else v)
        finite = bool(xp.isfinite(new_p).all()) and (v is None or bool(xp.isfinite(v).all()))
        if write:
            param[...] = new_p
            if mu:
                self.state[key + ("velocity",)][...] = v
        return finite

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, written as Keras writes it.

    At step t, for gradient g:
        m = beta_1 * m + (1 - beta_1) * g            running mean of gradients
        v = beta_2 * v + (1 - beta_2) * g**2         running mean of squared gradients
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)     bias correction
        p = p - alpha * m / (sqrt(v) + epsilon)

    Epsilon is added as in Keras: to sqrt(v) *before* bias correction (the paper's "epsilon hat").
    PyTorch adds it after, to the corrected sqrt(v_hat) = sqrt(v / (1 - beta_2**t)):
        p = p - learning_rate * m_hat / (sqrt(v_hat) + eps)       with m_hat = m / (1 - beta_1**t)
          = p - alpha * m / (sqrt(v) + eps * sqrt(1 - beta_2**t))
    (multiply the numerator and denominator by sqrt(1 - beta_2**t)). So Keras's epsilon acts like
    a PyTorch epsilon of epsilon / sqrt(1 - beta_2**t): 30 times larger at the first step with the
    default beta_2 (sqrt(0.001) = 0.03), the same once t is in the thousands. Keras's default
    epsilon is 1e-7 (PyTorch's 1e-8).

    In the reference mode (``fast=False``) ``update`` runs the NumPy lines below, which are the
    formula above with ``m += c * (g - m)`` for ``m = beta * m + c * g``. In the fast mode on the
    CPU, the same lines run as one fused Numba kernel (``kernels/adam.py``), one read and one write
    of each number, and :meth:`step` runs it once per parameter, not twice (``_write_all_or_none``);
    ``tests/test_fast_paths.py`` proves it equal, bit for bit. On the GPU ``fit``
    runs :meth:`step_unless_flagged` instead: the same lines over every parameter at once, in two
    CUDA kernels that check on the device and wait for nothing (``FlatAdam``);
    ``tests/test_flat_adam.py`` proves them equal to ``update``, bit for bit.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        # beta = 1 would never update the running means (and divides by 1 - beta**t = 0)
        self.beta_1 = checks.number(beta_1, "beta_1", 0.0, 1.0, high_open=True)
        self.beta_2 = checks.number(beta_2, "beta_2", 0.0, 1.0, high_open=True)
        self.epsilon = checks.number(epsilon, "epsilon", minimum=0.0, low_open=True)
        self._flat = None           # the FlatAdam of step_unless_flagged, and the views it lent
        self._flat_views = []       # to self.state: [(m, v)] per parameter
        self._kept = {}             # per parameter, what its last update overwrote (_write_all_or_none)

    def update(self, key, param, grad, lr, write=True, fast=True):
        b1, b2, eps = self.beta_1, self.beta_2, self.epsilon
        m = self._slot(key, param, "m")
        v = self._slot(key, param, "v")
        alpha = self._step_size(lr)
        if fast and isinstance(param, np.ndarray):
            return adam_update(param, grad, m, v, alpha, b1, b2, eps, write)
        xp = get_array_module(param)
        with np.errstate(over="ignore", invalid="ignore"):      # reported by the return value instead
            new_m = m + (1 - b1) * (grad - m)
            new_v = v + (1 - b2) * (grad * grad - v)
            new_p = param - alpha * new_m / (xp.sqrt(new_v) + eps)
        finite = all(bool(xp.isfinite(a).all()) for a in (new_m, new_v, new_p))
        if write:
            m[...], v[...], param[...] = new_m, new_v, new_p
        return finite

    def _write_all_or_none(self, slots, lr, fast):
        """On the CPU in the fast mode, one pass over each parameter instead of two (a check,
        then the write): each update is written at once by ``adam_update_and_keep``, which keeps
        the values it overwrites, and when one is not finite the updates written before it are
        put back (``kernels/adam.py``). What is kept takes three numbers per parameter number.
        Otherwise as :meth:`Optimizer._write_all_or_none`."""
        if not fast or not all(isinstance(param, np.ndarray) for _, param, _ in slots):
            return super()._write_all_or_none(slots, lr, fast)
        alpha, written, kept_now = self._step_size(lr), [], {}
        for key, param, grad in slots:
            m, v = self._slot(key, param, "m"), self._slot(key, param, "v")
            kept = self._kept.get(key)
            if kept is None or kept.shape != (3, param.size) or kept.dtype != param.dtype:
                kept = np.empty((3, param.size), dtype=param.dtype)
            kept_now[key] = kept
            written.append((param, m, v, kept))
            if not adam_update_and_keep(param, grad, m, v, alpha, self.beta_1, self.beta_2, self.epsilon, kept):
                for arrays in written:
                    put_back(*arrays)
                return key
        self._kept = kept_now           # the parameters of this step only (layers come and go)
        return None

    def step_unless_flagged(self, layers, loss, flag, batch, fast=True):
        """:meth:`Optimizer.step_unless_flagged` in two kernel launches that wait for nothing: every
        gradient is copied into one flat buffer, then ``FlatAdam`` (``kernels/adam.py``) checks the
        loss and every new value on the device and writes them all, or, setting ``flag``, none.
        The reference mode (``fast=False``) runs :meth:`step`'s NumPy lines instead."""
        for layer in layers:
            check_gradients(layer)
        slots = [((layer.name, name), param, layer.grads[name])
                 for layer in layers for name, param in layer.params.items()]
        if not fast or not slots or len({(device_of(p), p.dtype) for _, p, _ in slots}) > 1:
            return super().step_unless_flagged(layers, loss, flag, batch, fast)
        lr = self.current_learning_rate()
        if not (math.isfinite(lr) and lr >= 0):     # read on the host: raised at once
            raise NonFiniteUpdate(None, f"the learning rate is {lr}")
        flat = self._flat_state(slots)
        self.iterations += 1              # counted for every step; fit takes back those the flag stopped
        flat.gather([grad for _, _, grad in slots])
        flat.step(loss, flag, batch, self._step_size(lr), self.beta_1, self.beta_2, self.epsilon)

    def _step_size(self, lr):
        """alpha for update number t = ``self.iterations``: the learning rate with both bias
        corrections (the class docstring), one formula for every path."""
        b1, b2, t = self.beta_1, self.beta_2, self.iterations
        alpha = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        return alpha

    def _flat_state(self, slots):
        """The FlatAdam for these (key, param, grad) slots. It is made anew whenever a parameter or
        a moment is not the array it was (``Layer.to``, ``model.to``, ``set_state``, ``forget``,
        ``reset``): the moments so far are copied into its buffers, and ``self.state``'s m and v
        become views of them, so that saving, moving and loading the state see the live values."""
        flat = self._flat
        if flat is not None and len(flat.params) == len(slots) and all(
                param is flat.params[k] and self.state.get(key + ("m",)) is m and self.state.get(key + ("v",)) is v
                for k, ((key, param, _), (m, v)) in enumerate(zip(slots, self._flat_views))):
            return flat
        flat = FlatAdam([param for _, param, _ in slots])
        views = []
        for k, (key, param, _) in enumerate(slots):
            pair = (flat.segment(flat.m, k), flat.segment(flat.v, k))
            for slot, view in zip(("m", "v"), pair):
                view[...] = to_device(self._slot(key, param, slot), device_of(param))
                self.state[key + (slot,)] = view
            views.append(pair)
        self._flat, self._flat_views = flat, views
        return flat

    def flagged_update(self, k, layers):
        """As :meth:`Optimizer.flagged_update`; and, so that the error can say what was wrong,
        every layer's ``grads`` are those of the step the flag stopped (``FlatAdam.g_bad``)."""
        if self._flat is not None:
            grads = [(layer, name) for layer in layers for name in layer.params]
            for j, (layer, name) in enumerate(grads[:len(self._flat.params)]):
                layer.grads[name] = self._flat.segment(self._flat.g_bad, j)
        return super().flagged_update(k, layers)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), as Keras writes it.

    For gradient g:
        v = rho * v + (1 - rho) * g**2                  running mean of squared gradients
        p = p - learning_rate * g / sqrt(v + epsilon)
    ``centered=True`` also keeps the running mean of gradients, mg = rho * mg + (1 - rho) * g, and
    divides by sqrt(v - mg**2 + epsilon): the running variance instead of the second moment.
    ``momentum`` > 0 accumulates the steps: u = momentum * u + step, p = p - u. Keras's defaults;
    its epsilon sits inside the square root. The lines below are the whole update (no kernel).
    """

    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        super().__init__(learning_rate)
        self.rho = checks.number(rho, "rho", 0.0, 1.0, high_open=True)
        self.momentum = checks.number(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.epsilon = checks.number(epsilon, "epsilon", minimum=0.0, low_open=True)
        self.centered = checks.boolean(centered, "centered")

    def update(self, key, param, grad, lr, write=True, fast=True):
        xp = get_array_module(param)
        rho, mu = self.rho, self.momentum
        slots = {"velocity": self._slot(key, param, "velocity")}
        with np.errstate(over="ignore", invalid="ignore"):  # reported by the return value instead
            new = {"velocity": rho * slots["velocity"] + (1 - rho) * grad * grad}
            denominator = new["velocity"] + self.epsilon
            if self.centered:
                slots["average_gradient"] = self._slot(key, param, "average_gradient")
                new["average_gradient"] = rho * slots["average_gradient"] + (1 - rho) * grad
                denominator = denominator - new["average_gradient"] ** 2
            step = lr * grad / xp.sqrt(denominator)
            if mu:
                slots["momentum"] = self._slot(key, param, "momentum")
                new["momentum"] = mu * slots["momentum"] + step
                step = new["momentum"]
            new_p = param - step
        finite = bool(xp.isfinite(new_p).all()) and all(bool(xp.isfinite(a).all()) for a in new.values())
        if write:
            param[...] = new_p
            for name, value in new.items():
                slots[name][...] = value
        return finite

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


#: By name, case and underscores aside ("adam", "Adam", "SGD", "rmsprop", "RMSprop").
OPTIMIZERS = {"adam": Adam, "sgd": SGD, "rmsprop": RMSprop}


def get(optimizer):
    """An optimizer object from an object or a name (Keras's names, in any case), with Keras's
    defaults for that optimizer."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise ValueError(f"optimizer={optimizer.__name__} is the class; pass an object: "
                         f"{optimizer.__name__}() or {optimizer.__name__}(learning_rate=...).")
    key = optimizer.lower().replace("_", "") if isinstance(optimizer, str) else None
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adam', 'sgd', 'rmsprop' or an optimizer "
                         "object.")
    return OPTIMIZERS[key]()
