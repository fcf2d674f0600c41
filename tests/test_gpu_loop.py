"""The deferred training loop, which the GPU always runs, proven on the CPU with NumPy in CuPy's place.

``model.deferred = True`` runs on the CPU exactly the code that ``fit`` runs on a GPU: the data
on the device once, batches gathered there, the loss and the number correct summed there, Adam
over every parameter at once with the sticky flag, the host reading only now and then. Here it
must give what the CPU's own loop gives (``model.deferred = False``, the CPU's default), to the
bit: weights, optimizer state, history, the messages of a divergence and of Ctrl-C. And it must
read seldom: counted here by wrapping the two reads (``_DeviceTotals.first_bad`` and ``sums``).

The tests marked ``requires_gpu`` run the same on a GPU, where CuPy is the array module.
"""

import os
import re
import signal
import sys
import types

import numpy as np
import pytest

from conftest import requires_gpu
from tinycnn import Sequential, trainer
from tinycnn.backend import to_device, to_numpy
from tinycnn.callbacks import Callback
from tinycnn.kernels import adam as adam_kernels
from tinycnn.kernels import cuda
from tinycnn.layers import BatchNormalization, Conv2D, Dense, Flatten, Layer, MaxPool2D
from tinycnn.optimizers import SGD, Adam, RMSprop
from tinycnn.schedules import LearningRateSchedule


def small_cnn(seed=0, batch_norm=False):
    layers = [Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10, activation="softmax")]
    if batch_norm:
        layers.insert(1, BatchNormalization())
    return Sequential(layers, input_shape=(8, 8, 1), seed=seed)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, n)


def run(deferred, make_model=small_cnn, optimizer=Adam, x=None, y=None, device="cpu", **fit_args):
    """Fit a fresh model with ``model.deferred = deferred``; returns what can be compared."""
    model = make_model()
    model.compile(optimizer() if callable(optimizer) else optimizer)
    model.to(device)
    model.deferred = deferred
    fit_args = {"epochs": 2, "batch_size": 16, "verbose": 0, "threads": 1, "seed": 0, **fit_args}
    error = None
    try:
        history = model.fit(x, y, **fit_args)
    except FloatingPointError as err:
        error, history = str(err), err.history
    return {"weights": model.get_weights(), "state": {k: to_numpy(v).copy() for k, v in model.optimizer.state.items()},
            "iterations": model.optimizer.iterations, "history": history.history, "epoch": history.epoch,
            "diverged_at": history.diverged_at, "interrupted_at": history.interrupted_at, "error": error,
            "batches_done": history.batches_done, "model": model}


def assert_same_run(a, b):
    """Bit for bit: weights, optimizer state, step count, history, where it stopped and why."""
    assert a["error"] == b["error"]
    for key in ("history", "epoch", "diverged_at", "interrupted_at", "batches_done", "iterations"):
        assert a[key] == b[key], key
    assert len(a["weights"]) == len(b["weights"])
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(wa, wb)
    for k in a["state"].keys() | b["state"].keys():    # a moment never made is a moment of zeros
        reference = a["state"].get(k, b["state"].get(k) * 0)
        np.testing.assert_array_equal(b["state"].get(k, reference * 0), reference)


@pytest.fixture
def reads(monkeypatch):
    """How many times the host read the device's totals and flag, and at which batches."""
    counts = {"flag": 0, "sums": 0}
    first_bad, sums = trainer._DeviceTotals.first_bad, trainer._DeviceTotals.sums

    def counted(name, method):
        def wrapper(self):
            counts[name] += 1
            return method(self)
        return wrapper

    monkeypatch.setattr(trainer._DeviceTotals, "first_bad", counted("flag", first_bad))
    monkeypatch.setattr(trainer._DeviceTotals, "sums", counted("sums", sums))
    return counts


# -- the same numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_the_deferred_loop_trains_exactly_as_the_cpus_loop(threads):
    x, y = images(150)                                  # 10 batches of 16 and one of 6
    val = images(20, seed=1)
    a = run(False, x=x, y=y, threads=threads, validation_data=val)
    b = run(True, x=x, y=y, threads=threads, validation_data=val)
    assert_same_run(a, b)
    assert len(a["history"]["val_loss"]) == 2


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.05, momentum=0.9), lambda: RMSprop(1e-3)],
                         ids=["sgd", "rmsprop"])
def test_optimizers_without_a_flagged_kernel_train_alike_too(optimizer):
    """They take the generic path, which reads the loss at every step."""
    x, y = images(100)
    assert_same_run(run(False, optimizer=optimizer, x=x, y=y), run(True, optimizer=optimizer, x=x, y=y))


def test_the_reference_mode_trains_alike_deferred():
    x, y = images(64)
    a, b = [], []
    for deferred, out in ((False, a), (True, b)):
        model = small_cnn()
        model.compile(Adam(), fast=False)
        model.deferred = deferred
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
        out.extend(model.get_weights())
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)


def test_streamed_in_chunks_the_data_train_alike(monkeypatch, reads):
    """A training set larger than the device's share is copied a chunk of whole batches at a
    time, in the epoch's order: the same batches, the same training."""
    x, y = images(150)
    whole = run(True, x=x, y=y)
    monkeypatch.setattr(trainer.TrainingData, "limit_bytes", 40 * (x[0].nbytes + y[0].nbytes))
    moved = []
    monkeypatch.setattr(trainer, "to_device", lambda a, device: moved.append(len(a)) or to_device(a, device))
    chunked = run(True, x=x, y=y)
    assert_same_run(whole, chunked)
    assert moved == ([32, 32] * 4 + [22, 22]) * 2          # x and y, chunks of two batches, two epochs


def test_the_batches_are_the_same_whole_chunked_or_gathered_on_the_host(monkeypatch):
    x, y = images(37)
    order = np.random.default_rng(3).permutation(37)
    expected = [(x[order[s:s + 8]], y[order[s:s + 8]]) for s in range(0, 37, 8)]
    for deferred, limit in ((False, None), (True, None), (True, 10 * (x[0].nbytes + y[0].nbytes)), (True, 1)):
        monkeypatch.setattr(trainer.TrainingData, "limit_bytes", limit)
        data = trainer.TrainingData(x, y, "cpu", deferred)
        got = list(data.batches(order, 8))
        assert len(got) == len(expected)
        for (xb, yb), (xe, ye) in zip(got, expected):
            np.testing.assert_array_equal(xb, xe)
            np.testing.assert_array_equal(yb, ye)


# -- reading seldom -------------------------------------------------------------------------------

def test_without_anyone_looking_the_host_reads_every_fifty_steps_and_at_the_epochs_end(reads):
    x, y = images(120)                                  # batch 1: 120 steps
    a = run(False, x=x, y=y, epochs=1, batch_size=1)
    b = run(True, x=x, y=y, epochs=1, batch_size=1)
    assert_same_run(a, b)
    assert reads == {"flag": 3, "sums": 3}              # after steps 50, 100 and 120


class BatchLogs(Callback):
    def __init__(self):
        self.logs = []

    def on_batch_end(self, batch, logs=None):
        self.logs.append((batch, dict(logs)))


def test_a_callback_with_on_batch_end_gets_every_batchs_logs(reads):
    x, y = images(70)
    seen = [BatchLogs(), BatchLogs()]
    a = run(False, x=x, y=y, callbacks=[seen[0]])
    b = run(True, x=x, y=y, callbacks=[seen[1]])
    assert_same_run(a, b)
    assert seen[0].logs == seen[1].logs and len(seen[1].logs) == 2 * 5
    assert reads["sums"] == 2 * 5


def test_a_model_with_state_is_read_at_every_batch(reads):
    """BatchNormalization's running means move in the forward pass, which the flag cannot stop."""
    x, y = images(64)
    make = lambda: small_cnn(batch_norm=True)         # noqa: E731
    assert_same_run(run(False, make, x=x, y=y), run(True, make, x=x, y=y))
    assert reads["sums"] == 2 * 4


class FakeBar:
    """A progress bar that redraws (as on a terminal), recording what it was shown."""

    instances = []

    def __init__(self, steps, verbose):
        self.bar = object()
        self.shown = []
        FakeBar.instances.append(self)

    def update(self, step, logs):
        self.shown.append((step, dict(logs)))

    def close(self, logs, seconds, done=None):
        self.shown.append(("close", dict(logs)))


def test_the_progress_bar_is_fed_at_most_five_times_a_second(monkeypatch, reads):
    clock = iter(np.arange(0, 1000, 0.07))              # every step takes 0.07 s
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: 0.0,
                                                               monotonic=lambda: float(next(clock))))
    monkeypatch.setattr(trainer, "ProgressBar", FakeBar)
    x, y = images(40)
    seen = BatchLogs()
    run(False, x=x, y=y, epochs=1, batch_size=2, verbose=1, callbacks=[seen])    # every batch's logs
    FakeBar.instances.clear()
    run(True, x=x, y=y, epochs=1, batch_size=2, verbose=1)
    shown = FakeBar.instances[0].shown
    steps = [step for step, _ in shown[:-1]]
    assert steps == [1, 4, 7, 10, 13, 16, 19, 20]       # the first, then every 0.21 s, and the last
    for step, logs in shown[:-1]:
        assert logs == seen.logs[step - 1][1]           # the running means at that very batch
    assert reads["sums"] == len(steps)


# -- divergence -----------------------------------------------------------------------------------

class StepCounter(Layer):
    """Passes its input through; counts the training steps that ran."""

    per_sample = True
    steps = 0

    def forward(self, x, training=False):
        self._prepare(x)
        if training:
            StepCounter.steps += 1
        return x

    def backward(self, dout):
        return dout


def dense_model(seed=0):
    return Sequential([StepCounter(), Flatten(), Dense(10, activation="softmax")], input_shape=(6, 6, 1), seed=seed)


def scaled_batch(n, batch_size, bad_batch, scale, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 6, 1)).astype(np.float32)
    x[bad_batch * batch_size:(bad_batch + 1) * batch_size] *= np.float32(scale)
    return x, rng.integers(0, 10, n)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad_batch", [0, 13])
def test_an_update_that_overflows_is_reported_for_its_own_batch(bad_batch, reads):
    """Inputs scaled by 1e20 in one batch: the loss is finite, Adam's v = g*g overflows. The flag
    is read up to 50 steps later; the error, the history and the weights are the CPU loop's."""
    x, y = scaled_batch(200, 2, bad_batch, 1e20)
    a = run(False, dense_model, x=x, y=y, batch_size=2, shuffle=False)
    StepCounter.steps = 0
    b = run(True, dense_model, x=x, y=y, batch_size=2, shuffle=False)
    assert_same_run(a, b)
    assert f"epoch 1, batch {bad_batch + 1}" in b["error"] and "dense/kernel" in b["error"]
    assert "Its gradient is finite but reaches" in b["error"]     # that step's, kept on the device
    assert b["diverged_at"] == {"epoch": 1, "batch": bad_batch, "batches": 100}
    assert StepCounter.steps == 50                      # read after step 50: 50 - bad_batch ran after it
    assert reads["flag"] == 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("optimizer", [Adam, lambda: SGD(1.0)], ids=["adam", "sgd"])
def test_a_loss_that_is_not_finite_is_reported_alike(optimizer):
    x, y = scaled_batch(96, 8, 5, 3e38)
    x[5 * 8:6 * 8] = 3e38                               # float32 max is 3.4e38: the logits overflow
    a = run(False, dense_model, optimizer, x=x, y=y, batch_size=8, shuffle=False)
    b = run(True, dense_model, optimizer, x=x, y=y, batch_size=8, shuffle=False)
    assert_same_run(a, b)
    assert "epoch 1, batch 6: the loss is" in b["error"]


class NaNAt(LearningRateSchedule):
    """1e-3, then NaN from step ``t`` on: a bad rate, found on the host."""

    def __init__(self, t):
        self.t = t

    def __call__(self, step):
        return float("nan") if step >= self.t else 1e-3


def test_a_learning_rate_that_is_not_finite_stops_at_once_in_the_second_epoch(reads):
    x, y = images(80)
    a = run(False, optimizer=lambda: Adam(NaNAt(7)), x=x, y=y)
    b = run(True, optimizer=lambda: Adam(NaNAt(7)), x=x, y=y)
    assert_same_run(a, b)
    assert "epoch 2, batch 3: the learning rate is nan" in b["error"]
    assert b["history"]["loss"] and b["diverged_at"] == {"epoch": 2, "batch": 2, "batches": 5}


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_batch_flagged_unread_comes_before_a_later_error_found_on_the_host():
    """Batch 3 overflows (flagged, unread); at batch 10 the rate is NaN (raised at once). The
    error is batch 3's, and the step count is taken back to before it."""
    x, y = scaled_batch(100, 2, 3, 1e20)
    a = run(False, dense_model, lambda: Adam(NaNAt(10)), x=x, y=y, batch_size=2, shuffle=False)
    b = run(True, dense_model, lambda: Adam(NaNAt(10)), x=x, y=y, batch_size=2, shuffle=False)
    assert_same_run(a, b)
    assert "epoch 1, batch 4" in b["error"] and b["iterations"] == 3


class CtrlCAtStep(Layer):
    """Sends this process SIGINT during training step ``at``, as if the user pressed Ctrl-C."""

    per_sample = True

    def __init__(self, at, name=None):
        super().__init__(name=name)
        self.at, self.steps = at, 0

    def forward(self, x, training=False):
        self._prepare(x)
        if training:
            self.steps += 1
            if self.steps == self.at:
                os.kill(os.getpid(), signal.SIGINT)
        return x

    def backward(self, dout):
        return dout


@pytest.fixture
def default_sigint():
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, original)


def test_ctrl_c_stops_after_a_whole_batch_and_says_how_far_the_epoch_got(default_sigint, capsys, reads):
    x, y = images(200)
    make = lambda: Sequential([CtrlCAtStep(at=17), Conv2D(4, 3), Flatten(), Dense(10)],     # noqa: E731
                              input_shape=(8, 8, 1), seed=0)
    a = run(False, make, x=x, y=y, epochs=3, batch_size=8)
    said = capsys.readouterr().out
    b = run(True, make, x=x, y=y, epochs=3, batch_size=8)
    assert_same_run(a, b)
    assert capsys.readouterr().out == said and "epoch 1 stopped after batch 17 of 25" in said
    assert b["interrupted_at"] == {"epoch": 1, "batch": 17, "batches": 25}
    assert reads["sums"] == 1                           # read once: at Ctrl-C


# -- switches, and the device count ---------------------------------------------------------------

def test_deferred_is_the_gpus_default_and_off_on_the_cpu():
    model = small_cnn()
    assert model.deferred is None and model._deferred() is False
    model.device = "gpu"                                # as model.to("gpu") leaves it
    assert model._deferred() is True
    model.deferred = False
    assert model._deferred() is False                   # the per-step loop, to compare with
    model.device, model.deferred = "cpu", "yes"
    model.compile("adam")
    with pytest.raises(TypeError, match="model.deferred must be True or False"):
        model.fit(*images(4), verbose=0)


def test_to_device_asks_cuda_for_its_devices_once(monkeypatch):
    from tinycnn import backend
    asked = []
    cupy = types.ModuleType("cupy")
    cupy.ndarray = type("ndarray", (), {})
    cupy.asarray = np.asarray
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: asked.append(1) or 1))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(backend, "_cupy_with_a_device", None)
    for _ in range(5):
        to_device(np.zeros(3), "gpu")
    assert asked == [1]
    none = types.ModuleType("cupy")                     # another CuPy, without a device: asked, and refused
    none.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", none)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        to_device(np.zeros(3), "gpu")


# -- the CUDA kernels in the loop, compiled for the CPU ----------------------------------------------

def test_the_loop_with_the_cuda_kernels_compiled_for_the_cpu_trains_alike(compiled_step_kernels, monkeypatch):
    """FlatAdam.step and the totals launch the CUDA kernels (run on the CPU, one thread after
    another) instead of the NumPy references: the whole fit, bit for bit the CPU loop's."""
    launches = []

    def flat_step(flat, loss, flag, batch, alpha, beta_1, beta_2, epsilon):
        launches.append("adam")
        cuda.flat_adam(flat, loss, flag, batch, alpha, beta_1, beta_2, epsilon)

    monkeypatch.setattr(adam_kernels.FlatAdam, "step", flat_step)
    monkeypatch.setattr(trainer, "add_unless_flagged", cuda.add_unless_flagged)
    x, y = scaled_batch(90, 6, 9, 1e20)
    a = run(False, dense_model, x=x, y=y, batch_size=6, shuffle=False)
    b = run(True, dense_model, x=x, y=y, batch_size=6, shuffle=False)
    assert_same_run(a, b)
    assert "epoch 1, batch 10" in b["error"] and len(launches) == 15
    x, y = images(90)
    assert_same_run(run(False, x=x, y=y), run(True, x=x, y=y))


@pytest.fixture
def compiled_step_kernels(tmp_path_factory, monkeypatch):
    import test_flat_adam
    if test_flat_adam.COMPILER is None:
        pytest.skip("a C++ compiler (c++ or g++) is needed")
    fake = test_flat_adam.GuardedCupy(test_flat_adam.compile_step_kernels(tmp_path_factory))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        asarray=fake.asarray, RawKernel=fake.RawKernel, ndarray=type("ndarray", (), {})))
    cuda.kernel.cache_clear()
    yield fake
    cuda.kernel.cache_clear()


# -- on a GPU ---------------------------------------------------------------------------------------

@requires_gpu
def test_on_the_gpu_the_deferred_loop_trains_as_the_per_step_loop(reads):
    x, y = images(300)
    per_step = run(False, x=x, y=y, device="gpu")
    deferred = run(True, x=x, y=y, device="gpu")
    cpu = run(False, x=x, y=y)
    for other in (per_step, cpu):       # float32 rounding: cuBLAS's sums, CuPy's fused multiply-adds
        assert deferred["history"]["loss"] == pytest.approx(other["history"]["loss"], rel=1e-3)
        assert deferred["history"]["accuracy"] == pytest.approx(other["history"]["accuracy"], abs=2 / 300)
        assert deferred["model"].evaluate(x, y)[0] == pytest.approx(other["model"].evaluate(x, y)[0], rel=1e-3)
    assert reads["sums"] == 2                           # once per epoch: 19 steps each


@requires_gpu
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_on_the_gpu_a_divergence_is_reported_as_on_the_cpu():
    x, y = scaled_batch(200, 2, 13, 1e20)
    cpu = run(False, dense_model, x=x, y=y, batch_size=2, shuffle=False)
    gpu = run(None, dense_model, x=x, y=y, batch_size=2, shuffle=False, device="gpu")
    numbers = re.compile(r"\d\.\d+e[+-]\d+")           # the gradient's size: cuBLAS's rounding
    assert numbers.sub("#", gpu["error"]) == numbers.sub("#", cpu["error"])
    assert gpu["diverged_at"] == cpu["diverged_at"]
    assert gpu["iterations"] == cpu["iterations"] == 13
    for wa, wb in zip(gpu["weights"], cpu["weights"]):  # 13 steps of Adam, each of about 1e-3
        assert np.isfinite(wa).all()
        np.testing.assert_allclose(wa, wb, atol=2e-3)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_on_the_gpu_the_flat_kernels_equal_the_reference_bit_for_bit(dtype):
    import cupy
    rng = np.random.default_rng(8)
    shapes = [(3, 3, 1, 32), (32,), (1600, 64), (64,), (64, 10), (10,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    cpu = adam_kernels.FlatAdam([p.copy() for p in params])
    gpu = adam_kernels.FlatAdam([cupy.asarray(p) for p in params])
    flags = adam_kernels.new_flag(np), adam_kernels.new_flag(cupy)
    totals = np.zeros(3), cupy.zeros(3)
    for batch in range(6):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        if batch == 4:
            grads[2][100, 7] = np.nan
        for flat, flag, total, xp in ((cpu, flags[0], totals[0], np), (gpu, flags[1], totals[1], cupy)):
            flat.gather([xp.asarray(g) for g in grads])
            loss = xp.asarray(dtype(0.5 + batch))
            flat.step(loss, flag, batch, 1e-3 * (batch + 1), 0.9, 0.999, 1e-7)
            adam_kernels.add_unless_flagged(total, flag, loss, xp.asarray(np.int64(batch)), 16, batch)
        assert int(flags[1][0]) == int(flags[0][0])
        for a, b in zip(gpu.params + [gpu.m, gpu.v, gpu.g_bad], cpu.params + [cpu.m, cpu.v, cpu.g_bad]):
            np.testing.assert_array_equal(cupy.asnumpy(a), b)
        np.testing.assert_array_equal(cupy.asnumpy(totals[1]), totals[0])
    assert adam_kernels.read_flag(flags[1]) == (4, 3)


@requires_gpu
def test_on_the_gpu_streamed_data_train_as_whole_data(monkeypatch):
    x, y = images(150)
    whole = run(True, x=x, y=y, device="gpu")
    monkeypatch.setattr(trainer.TrainingData, "limit_bytes", 40 * (x[0].nbytes + y[0].nbytes))
    assert_same_run(whole, run(True, x=x, y=y, device="gpu"))
