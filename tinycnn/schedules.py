"""Learning-rate schedules: the step size as a function of how many updates have been made.

A constant learning rate must be small enough for the last steps, when the weights are close to a
minimum and a large step jumps around it, and so is smaller than the early steps could afford. A
schedule starts large and ends small. Give one to an optimizer in place of a number, as in Keras:

    # n_train: the images fit trains on, after validation_split has held some out
    steps = epochs * math.ceil(n_train / batch_size)
    model.compile(optimizer=Adam(learning_rate=CosineDecay(1e-3, decay_steps=steps)), ...)

The optimizer asks ``schedule(step)`` for the rate before each update; ``step`` counts the updates
made so far, so the first update uses ``schedule(0)``, the initial rate.
"""

import math

from . import checks


class LearningRateSchedule:
    """Base class: ``schedule(step) -> learning rate`` (a float), and a config for saving."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError


class CosineDecay(LearningRateSchedule):
    """Half a cosine wave from ``initial_learning_rate`` down to ``alpha * initial_learning_rate``
    over ``decay_steps`` updates, then flat (Loshchilov & Hutter 2017, without restarts; Keras's
    ``CosineDecay``):

        fraction = min(step, decay_steps) / decay_steps            0 -> 1 over training
        lr(step) = initial * (alpha + (1 - alpha) * (1 + cos(pi * fraction)) / 2)

    The rate falls slowly at first, fastest halfway (to exactly the mean of its two ends), and
    slowly again at the end, so the last steps are small ones that settle into a minimum.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        self.initial_learning_rate = checks.number(initial_learning_rate, "initial_learning_rate",
                                                   minimum=0.0, low_open=True)
        self.decay_steps = checks.integer(decay_steps, "decay_steps (a number of updates)", minimum=1)
        # alpha: the final rate as a fraction of the initial one
        self.alpha = checks.number(alpha, "alpha (the final rate as a fraction of the initial one)",
                                   0.0, 1.0)

    def __call__(self, step):
        fraction = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * (self.alpha + (1.0 - self.alpha) * cosine)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha}


SCHEDULES = {"CosineDecay": CosineDecay}


def serialize(schedule):
    """A schedule as JSON can store it: {"class_name": ..., "config": {...}}."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(spec):
    """The inverse of :func:`serialize`."""
    try:
        cls = SCHEDULES[spec["class_name"]]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown learning-rate schedule {spec!r}; known: {', '.join(SCHEDULES)}.") from None
    if not isinstance(spec.get("config"), dict):
        raise ValueError(f"A saved {spec['class_name']} needs a dict 'config', got {spec.get('config')!r}.")
    return cls(**spec["config"])
