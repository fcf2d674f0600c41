"""Optimizers: how a gradient becomes a parameter update.

Both update the arrays in ``layer.params`` in place. Their state (velocities, moments) is keyed by
(layer name, parameter name) -- stable and readable, never ``id()`` -- so a model's layers need
unique names, which ``Sequential`` guarantees.

``learning_rate`` is a number, or a schedule from :mod:`tinycnn.schedules` that gives the rate
for each step (``Adam(learning_rate=CosineDecay(1e-3, decay_steps=...))``).
"""

from . import checks, schedules
from .backend import get_array_module


class Optimizer:
    def __init__(self, learning_rate):
        if not isinstance(learning_rate, schedules.LearningRateSchedule):
            learning_rate = checks.number(learning_rate, "learning_rate", minimum=0, low_open=True,
                                          alternative="a schedule such as CosineDecay(...)")
        self.learning_rate = learning_rate
        self.iterations = 0       # updates made so far
        self.state = {}

    def current_learning_rate(self):
        """The rate the next update will use: the number, or the schedule at this step."""
        if isinstance(self.learning_rate, schedules.LearningRateSchedule):
            return self.learning_rate(self.iterations)
        return self.learning_rate

    def step(self, layers):
        """Apply one update to every parameter of ``layers`` from its ``grads``."""
        lr = self.current_learning_rate()
        self.iterations += 1
        for layer in layers:
            for name, param in layer.params.items():
                self.update((layer.name, name), param, layer.grads[name], lr)

    def update(self, key, param, grad, lr):
        """Update one parameter in place, with learning rate ``lr`` for this step."""
        raise NotImplementedError

    def _slot(self, key, param, slot):
        """A zero-initialised state array for (key, slot), made on first use."""
        full = key + (slot,)
        if full not in self.state:
            self.state[full] = get_array_module(param).zeros_like(param)
        return self.state[full]

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

    def update(self, key, param, grad, lr):
        mu = self.momentum
        if mu == 0.0:
            param -= lr * grad
            return
        v = self._slot(key, param, "velocity")
        v *= mu
        v -= lr * grad
        param += mu * v - lr * grad if self.nesterov else v

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
    PyTorch adds it after, p -= lr * m_hat / (sqrt(v_hat) + eps); the two differ only while
    sqrt(v) is near epsilon. Keras's default epsilon is 1e-7 (PyTorch's 1e-8).
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        # beta = 1 would never update the running means (and divides by 1 - beta**t = 0)
        self.beta_1 = checks.number(beta_1, "beta_1", 0.0, 1.0, high_open=True)
        self.beta_2 = checks.number(beta_2, "beta_2", 0.0, 1.0, high_open=True)
        self.epsilon = checks.number(epsilon, "epsilon", minimum=0.0, low_open=True)

    def update(self, key, param, grad, lr):
        b1, b2, t = self.beta_1, self.beta_2, self.iterations
        xp = get_array_module(param)
        m = self._slot(key, param, "m")
        v = self._slot(key, param, "v")
        m += (1 - b1) * (grad - m)
        v += (1 - b2) * (grad * grad - v)
        alpha = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        param -= alpha * m / (xp.sqrt(v) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise ValueError(f"optimizer={optimizer.__name__} is the class; pass an object: "
                         f"{optimizer.__name__}() or {optimizer.__name__}(learning_rate=...).")
    try:
        return OPTIMIZERS[optimizer]()
    except (KeyError, TypeError):
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adam', 'sgd' or an optimizer object.") from None
