"""Dropout and BatchNormalization split over threads compute what they compute on the whole batch.

- Dropout: a sample's mask depends only on the layer's key, the batch's number and the sample's
  index in the batch (``layers/dropout.py``), so any split into shares and chunks draws the
  whole batch's masks, bit for bit; the model's layer counts one batch per training step.
- BatchNormalization: each thread's ``BatchNormAcrossShares`` normalises its share with the whole
  batch's statistics (``tinycnn/parallel.py``), so its outputs, dL/dx, gradients (added over the
  shares) and moving averages equal the layer's on the whole batch, to float rounding.
- Training: the bn-dropout network trained split over two threads (fast mode) ends with the
  weights of the reference mode (the layers' own code, one thread), to float32 rounding; the
  same seeded fit gives the same weights, bit for bit, on every run; a failing or non-finite
  share never leaves the others waiting.
"""

import math
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, RandomRotation,
                            RandomTranslation, ReLU)
from tinycnn.layers.fused import ConvBatchNormReLUMaxPool
from tinycnn.layers.normalization import BatchNormAcrossShares
from tinycnn.optimizers import SGD, Adam
from tinycnn.parallel import CHUNK, DataParallel, Gate, SumsAcrossShares, replica


def splits(n, rng, parts):
    """``parts`` random non-empty slices covering range(n) in order."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(13, 7), (10, 5, 5, 3), (9, 1), (6, 2, 3)])
def test_any_split_draws_the_whole_batchs_masks(rng, shape):
    layer = Dropout(0.4, seed=3)
    layer.build(shape[1:], "float32")
    whole = layer.draw_mask(shape, batch=5)
    for parts in range(2, min(5, shape[0]) + 1):
        pieces = [layer.draw_mask((s.stop - s.start, *shape[1:]), 5, s.start) for s in splits(shape[0], rng, parts)]
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert not np.array_equal(layer.draw_mask(shape, batch=6), whole)


def test_the_mask_is_drawn_as_the_docstring_says():
    """Sample i of batch t: the Philox stream keyed by (key, t), numbers i*S ... i*S + U - 1 with
    S = U rounded up to a multiple of 4, each kept when u / 2^64 >= rate."""
    layer = Dropout(0.3, seed=11)
    layer.build((3, 3), "float64")
    units, s = 9, 12
    raw = np.random.Philox(key=np.array([layer._key, 7], dtype=np.uint64)).random_raw(5 * s)
    expected = np.stack([raw[i * s:i * s + units] / 2.0 ** 64 >= 0.3 for i in range(5)]).reshape(5, 3, 3)
    np.testing.assert_array_equal(layer.draw_mask((5, 3, 3), batch=7), expected)


def test_each_training_forward_is_the_next_batch_and_inference_counts_nothing(rng):
    layer = Dropout(0.5, seed=0)
    x = rng.standard_normal((4, 20)) + 10
    first = layer.forward(x, training=True)
    assert layer.batches == 1
    layer.forward(x, training=False)
    second = layer.forward(x, training=True)
    assert layer.batches == 2 and not np.array_equal(first, second)
    np.testing.assert_array_equal(first != 0, layer.draw_mask(x.shape, batch=0))
    np.testing.assert_array_equal(second != 0, layer.draw_mask(x.shape, batch=1))


def test_samples_and_batches_get_independent_masks():
    """10^6 units: the kept fraction, and agreement between neighbouring samples and batches at
    chance level ((1-p)² + p² for keeping probability 1-p), to six standard deviations."""
    layer = Dropout(0.25, seed=1)
    layer.build((1000,), "float32")
    a, b = layer.draw_mask((1000, 1000), 0), layer.draw_mask((1000, 1000), 1)
    sd = math.sqrt(0.25 * 0.75 / 1e6)
    assert abs(a.mean() - 0.75) < 6 * sd
    chance = 0.75 ** 2 + 0.25 ** 2
    assert abs((a[1:] == a[:-1]).mean() - chance) < 0.003
    assert abs((a == b).mean() - chance) < 0.003


def dropout_model(dtype="float64", seed=0):
    model = Sequential([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Dropout(0.25), Flatten(),
                        Dense(16, activation="relu"), Dropout(0.5), Dense(3, activation="softmax")],
                       input_shape=(10, 10, 2), seed=seed, dtype=dtype)
    model.compile(Adam(1e-3))
    return model


@pytest.mark.parametrize("threads, chunk", [(2, CHUNK), (3, 2), (4, 3)])
def test_a_split_batch_gets_the_one_thread_masks_and_gradient(rng, threads, chunk):
    model = dropout_model()
    x, y = rng.random((17, 10, 10, 2)), rng.integers(0, 3, 17)
    logits, loss = model.plan().loss_and_gradients(x, y)               # one thread, batch 0
    whole = [{k: g.copy() for k, g in layer.grads.items()} for layer in model.layers]
    dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
    assert [d.batches for d in dropouts] == [1, 1]
    for d in dropouts:
        d.batches = 0                                                   # the same batch again
    with DataParallel(model, threads, chunk=chunk) as parallel:
        split_logits, split_loss = parallel.train_step(x, y)
    assert [d.batches for d in dropouts] == [1, 1] and all(d.position is None for d in dropouts)
    np.testing.assert_allclose(split_logits, logits, rtol=1e-12)
    assert split_loss == pytest.approx(loss, rel=1e-12)
    for layer, grads in zip(model.layers, whole):
        for k in grads:
            np.testing.assert_allclose(layer.grads[k], grads[k], rtol=1e-10, atol=1e-14)


def test_fit_with_dropout_is_the_same_on_one_thread_and_on_two():
    """Float64, so that the only difference, the order in which the shares' gradients are added,
    stays far below the tolerance; the masks themselves are the same bits (tests above)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 10, 10, 2)), rng.integers(0, 3, 96)
    weights = {}
    for threads in (1, 2):
        model = dropout_model()
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # no "fit trains in one thread" warning
            model.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=0, threads=threads)
        weights[threads] = model.get_weights()
        assert [layer.batches for layer in model.layers if isinstance(layer, Dropout)] == [6, 6]
    for a, b in zip(weights[1], weights[2]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Augmentation: the whole batch's transforms, each share warping its own images
# ---------------------------------------------------------------------------------------------

class WholeBatch(Layer):
    """Passes x through; per_sample is False, so it must see whole batches."""

    def forward(self, x, training=False):
        self._prepare(x)
        return x

    def backward(self, dout):
        return dout


def augmented_model(seed=0, ahead=()):
    model = Sequential([RandomRotation(0.1), *ahead, RandomTranslation(0.1, (-0.1, 0.2), fill_value=0.5),
                        Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dropout(0.3),
                        Dense(3, activation="softmax")], input_shape=(10, 10, 2), seed=seed, dtype="float64")
    model.compile(Adam(1e-3))
    return model


@pytest.mark.parametrize("ahead, shares_warp", [((), True), ((ReLU,), True), ((lambda: Dropout(0.2),), True),
                                                ((WholeBatch,), False)], ids=["none", "relu", "dropout", "whole"])
@pytest.mark.parametrize("threads, chunk", [(2, CHUNK), (3, 2)])
def test_a_split_batch_warps_the_images_the_whole_batch_would(rng, ahead, shares_warp, threads, chunk):
    """Two models of one seed: one runs the batch in one piece, the other split. The split draws
    the same transforms (the generators end alike), so logits, loss and gradients agree. The
    shares run the augmentation themselves unless a layer before the first with parameters is not
    per_sample; then it all runs on the whole batch first."""
    x, y = rng.random((13, 10, 10, 2)), rng.integers(0, 3, 13)
    whole_model, split_model = (augmented_model(ahead=tuple(make() for make in ahead)) for _ in range(2))
    logits, loss = whole_model.plan().loss_and_gradients(x, y)
    warps = [layer for layer in split_model.layers if isinstance(layer, (RandomRotation, RandomTranslation))]
    with DataParallel(split_model, threads, chunk=chunk) as parallel:
        assert (parallel.start == 0) == shares_warp
        split_logits, split_loss = parallel.train_step(x, y)
        assert all(layer.given is None for layers in parallel.warping for layer in layers)
    np.testing.assert_allclose(split_logits, logits, rtol=1e-12)
    assert split_loss == pytest.approx(loss, rel=1e-12)
    for a, b in zip(whole_model.layers, split_model.layers):
        for k in a.grads:
            np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-10, atol=1e-14)
    for a, b in zip([layer for layer in whole_model.layers if hasattr(layer, "draw_transforms")], warps):
        np.testing.assert_array_equal(a.draw_transforms(4), b.draw_transforms(4))   # the same draws so far


def test_a_split_batch_warps_each_image_by_its_own_rows(rng):
    """What each share's copy was given: its images' rows of the batch's transforms, in order."""
    model = augmented_model()
    x, y = rng.random((9, 10, 10, 2)), rng.integers(0, 3, 9)
    twin = augmented_model()
    expected = [layer.draw_transforms(9) for layer in twin.layers if hasattr(layer, "draw_transforms")]
    given = []
    with DataParallel(model, 3, chunk=2) as parallel:
        for k, layers in enumerate(parallel.warping):
            for j, layer in enumerate(layers):
                original = layer.forward

                def recording(xs, training=False, _layer=layer, _original=original, _k=k, _j=j):
                    given.append((_j, _k, _layer.given.copy()))
                    return _original(xs, training)
                layer.forward = recording
        parallel.train_step(x, y)
    for j, rows in enumerate(expected):        # thread by thread; a thread's chunks in its order
        pieces = [g for k in range(3) for jj, kk, g in given if (jj, kk) == (j, k)]
        assert len(pieces) == 5                 # shares of 3 images, chunks of 2: 2 + 2 + 1
        np.testing.assert_array_equal(np.concatenate(pieces), rows)


def test_fit_with_augmentation_is_the_same_on_one_thread_and_on_two():
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 10, 10, 2)), rng.integers(0, 3, 96)
    weights = {}
    for threads in (1, 2):
        model = augmented_model()
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=0, threads=threads)
        weights[threads] = model.get_weights()
    for a, b in zip(weights[1], weights[2]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# BatchNormalization across the shares
# ---------------------------------------------------------------------------------------------

def run_in_shares(layer, x, dout, slices):
    """Forward and backward of ``layer`` on x split as ``slices``, each share in its own thread
    on its own copy, as DataParallel runs them. Returns (y, dx, summed gradients)."""
    copies = [layer] + [replica(layer) for _ in slices[1:]]
    sums = SumsAcrossShares()
    sums.begin(len(slices), len(x))
    twins = [BatchNormAcrossShares(c, sums, k) for k, c in enumerate(copies)]

    def share(k):
        s = slices[k]
        return twins[k].forward(x[s], training=True), twins[k].backward(dout[s])

    with ThreadPoolExecutor(len(slices)) as pool:
        results = list(pool.map(share, range(len(slices))))
    grads = {k: sum(c.grads[k] for c in copies[1:]) + copies[0].grads[k] for k in layer.params}
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), grads


@pytest.mark.parametrize("dtype, tol", [(np.float64, dict(rtol=1e-12, atol=1e-12)),
                                        (np.float32, dict(rtol=2e-5, atol=2e-5))])
@pytest.mark.parametrize("case", range(8))
def test_batchnorm_across_shares_equals_the_layer_on_the_whole_batch(case, dtype, tol):
    rng = np.random.default_rng(case)
    n = int(rng.integers(4, 20))
    shape = (n, *rng.integers(1, 7, size=int(rng.integers(1, 4))))     # (N, C) ... (N, H, W, C)
    x = (rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 4), size=shape)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    parts = int(rng.integers(2, min(5, n) + 1))

    def fresh():
        layer = BatchNormalization(momentum=0.9, epsilon=1e-5)
        layer.build(shape[1:], dtype)
        layer.params["gamma"][...] = rng.uniform(0.5, 2, shape[-1])
        layer.params["beta"][...] = rng.uniform(-1, 1, shape[-1])
        return layer

    reference, split = fresh(), fresh()
    for name in ("gamma", "beta"):
        split.params[name][...] = reference.params[name]
    y = reference.forward(x, training=True)
    dx = reference.backward(dout)
    y_split, dx_split, grads = run_in_shares(split, x, dout, splits(n, rng, parts))
    for got, want in [(y_split, y), (dx_split, dx), *[(grads[k], reference.grads[k]) for k in grads],
                      *[(split.state[k], reference.state[k]) for k in reference.state]]:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_one_share_is_the_layer_itself(rng):
    layer, twin_of = BatchNormalization(), BatchNormalization()
    x, dout = rng.standard_normal((6, 3, 3, 2)), rng.standard_normal((6, 3, 3, 2))
    y_split, dx_split, grads = run_in_shares(twin_of, x, dout, [slice(0, 6)])
    np.testing.assert_array_equal(y_split, layer.forward(x, training=True))
    np.testing.assert_array_equal(dx_split, layer.backward(dout))
    for k in grads:
        np.testing.assert_array_equal(grads[k], layer.grads[k])


def bn_dropout_model(seed=0, fused=True, dtype="float32"):
    """The bn-dropout network of examples/mnist.py, smaller: 14×14 images, 8 and 16 filters.
    Each Conv2D → BatchNormalization → ReLU → MaxPool2D runs as one block in the fast mode;
    ``fused=False`` puts the ReLU on the convolution instead, and BatchNormalization runs alone
    (BatchNormAcrossShares when split)."""
    def block(filters):
        if fused:
            return [Conv2D(filters, 3), BatchNormalization(momentum=0.9, epsilon=1e-5), ReLU(), MaxPool2D(2)]
        return [Conv2D(filters, 3, activation="relu"), BatchNormalization(momentum=0.9, epsilon=1e-5), MaxPool2D(2)]
    return Sequential([*block(8), *block(16), Dropout(0.25), Flatten(), Dense(32), ReLU(), Dropout(0.5),
                       Dense(10, activation="softmax")], input_shape=(14, 14, 1), seed=seed, dtype=dtype)


@pytest.mark.parametrize("fused, twin", [(True, ConvBatchNormReLUMaxPool), (False, BatchNormAcrossShares)])
def test_a_model_with_batchnorm_runs_each_share_whole(fused, twin):
    model = bn_dropout_model(fused=fused)
    model.compile(Adam())
    parallel = DataParallel(model, 2)
    assert parallel.chunk is None and len(parallel.sums) == 2
    for k, plan in enumerate(parallel.plans):
        shared = [step for step in plan.steps if getattr(step, "sums", None) is not None]
        assert len(shared) == 2 and all(type(step) is twin and step.k == k for step in shared)
        assert [step.sums for step in shared] == parallel.sums
    assert not any(getattr(step, "sums", None) is not None for step in model.plan().steps)
    assert DataParallel(dropout_model(), 2).chunk == CHUNK


@pytest.mark.parametrize("fused", [True, False])
def test_bn_dropout_trained_split_ends_with_the_reference_modes_weights(fused):
    """Ten steps: the fast mode split over two threads (BatchNormalization across the shares,
    fused or not; Dropout told where each share starts) against the reference mode
    (compile(fast=False): the layers' own code, one thread). The same masks and statistics, so
    the same weights, but for rounding.

    In float64. In float32 the two runs part by about 1e-3 in ten steps, which float64 shows to be
    rounding amplified, not a difference in the arithmetic: a value that rounds to the other side
    of a ReLU's kink or of a max-pool's comparison sends its gradient elsewhere.

    SGD, not Adam: BatchNormalization subtracts the mean right after each convolution of the
    fused blocks, so those convolutions' biases have a true gradient of 0, and what backward
    computes for them is rounding noise. Adam divides a gradient by its own size and would turn
    that noise into steps of about the learning rate, in directions that differ between the two
    modes (changing nothing downstream but the moving means)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((320, 14, 14, 1)), rng.integers(0, 10, 320)
    models = {}
    for fast in (True, False):
        model = bn_dropout_model(fused=fused, dtype="float64")
        model.compile(SGD(0.05, momentum=0.9), fast=fast)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0, threads=2)
        models[fast] = model
    fast, reference = models[True], models[False]
    assert not any(getattr(step, "sums", None) is not None for step in reference.plan().steps)
    assert any(isinstance(step, ConvBatchNormReLUMaxPool) for step in fast.plan().steps) == fused
    changed, start = 0, bn_dropout_model(fused=fused, dtype="float64").get_weights()
    for a, b, start in zip(fast.get_weights(), reference.get_weights(), start):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)         # moving averages included
        changed += not np.allclose(a, start)
    assert changed >= 12                                                # it trained
    assert fast.evaluate(x, y) == pytest.approx(reference.evaluate(x, y), rel=1e-10)


def test_bn_dropout_in_float32_ends_the_same_on_one_thread_and_on_two():
    """The example's float32 network, fast mode, one batch of 32: one thread against two (the
    shares' statistics and gradients added, Winograd's convolutions in both). The same masks and
    the same arithmetic in another order of addition: the step each weight took agrees to float32
    rounding. (Over many steps the two runs part further: a value that rounds to the other side of
    a ReLU's kink or a max-pool's comparison sends its gradient elsewhere; the float64 test above
    shows that to be rounding, not arithmetic.)"""
    rng = np.random.default_rng(2)
    x, y = rng.random((32, 14, 14, 1), dtype=np.float32), rng.integers(0, 10, 32)

    def arrays(model):
        return {(layer.name, k): a.copy() for layer in model.layers for k, a in {**layer.params, **layer.state}.items()}
    start = arrays(bn_dropout_model(seed=4))
    steps = {}
    for threads in (1, 2):
        model = bn_dropout_model(seed=4)
        model.compile(SGD(0.1))
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0, threads=threads)
        plan = model.plan()
        plan.forward(x[:2])
        assert [step.winograd for step in plan.steps if isinstance(step, ConvBatchNormReLUMaxPool)] == [True, True]
        steps[threads] = {key: a - start[key] for key, a in arrays(model).items()}
    for key, one in steps[1].items():
        two = steps[2][key]
        if key[0].startswith("conv2d") and key[1] == "bias":
            # BatchNormalization subtracts the mean right after: the true gradient is 0, and
            # both steps are rounding noise, far below the kernels' steps
            assert max(np.abs(one).max(), np.abs(two).max()) < 1e-5 * np.abs(steps[1][(key[0], "kernel")]).max()
            continue
        assert np.abs(one).max() > 0, key                                  # it stepped
        np.testing.assert_allclose(two, one, rtol=1e-3, atol=1e-4 * np.abs(one).max(), err_msg=str(key))


def test_the_same_seeded_fit_gives_the_same_weights_bit_for_bit():
    rng = np.random.default_rng(1)
    x, y = rng.random((96, 14, 14, 1), dtype=np.float32), rng.integers(0, 10, 96)

    def weights():
        model = bn_dropout_model(seed=3)
        model.compile(Adam(1e-3))
        model.fit(x, y, epochs=2, batch_size=20, verbose=0, seed=0, threads=2)   # a last batch of 16
        return model.get_weights()

    for a, b in zip(weights(), weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# A share that fails or stops never leaves the others waiting
# ---------------------------------------------------------------------------------------------

def within(seconds, fn):
    """fn() in a thread; fails the test instead of hanging when fn waits forever."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as err:        # noqa: B036 -- handed to the test
            outcome["error"] = err
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: a share was left waiting for another"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_the_gate_lets_no_thread_through_before_all_have_come(parties):
    """Many meetings in a row, the threads arriving in random order: at each, every thread sees
    every other's part of that round (none has gone ahead), and none is left behind."""
    gate, rounds = Gate(parties), 300
    posted = np.full((rounds, parties), -1)
    seen_incomplete = []

    def thread(k):
        rng = np.random.default_rng(k)
        for r in range(rounds):
            if rng.random() < 0.1:
                time.sleep(0.0005)                          # arrive late, now and then
            posted[r, k] = k
            gate.wait(k)
            if (posted[r] < 0).any():
                seen_incomplete.append((r, k))
    with ThreadPoolExecutor(parties) as pool:
        for f in [pool.submit(thread, k) for k in range(parties)]:
            within(60, f.result)
    assert not seen_incomplete and (posted >= 0).all()


def test_an_aborted_gate_releases_whoever_waits_and_refuses_later_comers():
    gate = Gate(3)
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(gate.wait, k) for k in (0, 1)]
        time.sleep(0.05)
        assert not any(f.done() for f in waiting)           # two of three: they wait
        gate.abort()
        for f in waiting:
            with pytest.raises(threading.BrokenBarrierError):
                within(30, f.result)
    with pytest.raises(threading.BrokenBarrierError):
        gate.wait(2)
    sums = SumsAcrossShares()
    sums.begin(3, 30)
    sums.gate.abort()
    sums.begin(3, 30)                                       # the next batch meets at a new gate
    assert not sums.gate.broken


@pytest.fixture
def model_and_batch():
    model = bn_dropout_model()
    model.compile(SGD(0.1))
    rng = np.random.default_rng(0)
    return model, rng.random((16, 14, 14, 1), dtype=np.float32), rng.integers(0, 10, 16)


def test_an_error_in_one_share_is_raised_not_waited_for(model_and_batch, monkeypatch):
    model, x, y = model_and_batch
    with DataParallel(model, 2) as parallel:
        step = parallel.plans[1].steps[-1]                      # the last Dense of share 1

        def broken(dout):
            raise ValueError("share 1 fails in its backward pass")
        monkeypatch.setattr(step, "backward", broken)
        with pytest.raises(ValueError, match="share 1 fails"):
            within(30, lambda: parallel.train_step(x, y))
        monkeypatch.undo()
        logits, loss = within(30, lambda: parallel.train_step(x, y))    # the next batch runs
        assert logits.shape == (16, 10) and np.isfinite(loss)


def test_a_share_whose_loss_is_not_finite_stops_every_share(model_and_batch, monkeypatch):
    model, x, y = model_and_batch
    with DataParallel(model, 2) as parallel:
        monkeypatch.setattr(parallel.plans[1].loss, "forward", lambda logits, labels: np.float32(np.inf))
        logits, loss = within(30, lambda: parallel.train_step(x, y))
        assert logits is None and not np.isfinite(loss)
    before = [p.copy() for layer in model.layers for p in layer.params.values()]
    model.compile(SGD(0.1))
    with pytest.raises(FloatingPointError, match="loss is"):
        original = type(model.plan().loss).forward
        monkeypatch.setattr(type(model.plan().loss), "forward",
                            lambda self, logits, labels: np.inf if len(logits) < 16 else original(self, logits, labels))
        within(60, lambda: model.fit(x, y, epochs=1, batch_size=16, verbose=0, threads=2))
    for a, b in zip(before, [p for layer in model.layers for p in layer.params.values()]):
        np.testing.assert_array_equal(a, b)             # the step was refused
