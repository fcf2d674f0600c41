"""Learning-rate schedules against values worked out by hand, inside the optimizers, and saved."""

import math

import numpy as np
import pytest

from test_optimizers import run
from tinycnn import Sequential, load_model
from tinycnn.layers import Dense
from tinycnn.optimizers import SGD, Adam
from tinycnn.schedules import CosineDecay, deserialize, serialize


def test_cosine_decay_by_hand():
    # 4 steps from 1 to 0: (1 + cos(pi * k / 4)) / 2 for k = 0..4, then flat at the end value
    schedule = CosineDecay(1.0, decay_steps=4)
    expected = [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0, 0.0, 0.0]
    assert [schedule(k) for k in range(7)] == pytest.approx(expected, abs=1e-15)


def test_cosine_decay_alpha_is_the_floor():
    schedule = CosineDecay(0.2, decay_steps=10, alpha=0.1)
    assert schedule(0) == pytest.approx(0.2)
    assert schedule(5) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5))     # halfway: the mean of the ends
    assert schedule(10) == schedule(1000) == pytest.approx(0.02)


def test_sgd_follows_the_schedule_from_step_zero():
    # lr = 0.1, 0.05, 0.0 at steps 0, 1, 2 (CosineDecay(0.1, 2)); gradients 0.5, -0.25, 1.0:
    # p = 1 - 0.1*0.5 = 0.95; 0.95 + 0.05*0.25 = 0.9625; 0.9625 - 0.0*1.0 = 0.9625
    values, _ = run(SGD(CosineDecay(0.1, decay_steps=2)))
    assert values == pytest.approx([0.95, 0.9625, 0.9625], abs=1e-12)


def test_adam_with_a_flat_schedule_is_adam_with_a_number():
    # alpha = 1 keeps the rate at 0.1: the three steps worked out in test_optimizers.py
    values, _ = run(Adam(learning_rate=CosineDecay(0.1, decay_steps=5, alpha=1.0)))
    assert values == pytest.approx([0.9000006325, 0.8733670792, 0.8075561009], abs=1e-9)


def test_current_learning_rate_is_the_next_steps():
    opt = Adam(CosineDecay(1e-3, decay_steps=2))
    assert opt.current_learning_rate() == pytest.approx(1e-3)
    run(opt)                                             # three updates: steps 0, 1, 2
    assert opt.iterations == 3 and opt.current_learning_rate() == 0.0
    assert Adam(0.01).current_learning_rate() == 0.01


@pytest.mark.parametrize("kwargs, match", [
    ({"initial_learning_rate": 0.0, "decay_steps": 5}, "initial_learning_rate"),
    ({"initial_learning_rate": 1e-3, "decay_steps": 0}, "decay_steps"),
    ({"initial_learning_rate": 1e-3, "decay_steps": 2.5}, "decay_steps"),
    ({"initial_learning_rate": 1e-3, "decay_steps": 5, "alpha": 1.5}, "alpha"),
])
def test_bad_schedules_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CosineDecay(**kwargs)


def test_numpy_integer_steps_are_accepted_and_saved_as_int():
    schedule = CosineDecay(1e-3, decay_steps=np.int64(10) * 3)
    assert type(schedule.get_config()["decay_steps"]) is int and schedule(30) == 0.0


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="Unknown learning-rate schedule.*CosineDecay"):
        deserialize({"class_name": "StepDecay", "config": {}})


def test_schedule_round_trips_through_a_saved_model(tmp_path):
    schedule = CosineDecay(2e-3, decay_steps=1234, alpha=0.05)
    assert deserialize(serialize(schedule)).get_config() == schedule.get_config()
    model = Sequential([Dense(3)], input_shape=(4,), seed=0)
    model.compile(optimizer=Adam(learning_rate=schedule))
    model.fit(np.ones((8, 4), np.float32), np.zeros(8, int), epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz").optimizer.learning_rate
    assert isinstance(loaded, CosineDecay) and loaded.get_config() == schedule.get_config()
