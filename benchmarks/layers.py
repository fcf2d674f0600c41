"""Where a training step's time goes, against what the machine allows.

    python benchmarks/layers.py                 # the Keras MNIST CNN, batch 32
    python benchmarks/layers.py --batch 128 --json layers.json
    python benchmarks/layers.py --arch bn-dropout --augment

``fit`` splits each batch over the cores (``tinycnn/parallel.py``): every core runs the steps of
``tinycnn/plan.py`` on its share of the batch, with single-threaded BLAS. So this script
1. profiles those steps on what one thread works on at a time -- its share of the batch (batch /
   threads images), in chunks of at most parallel.CHUNK (whole, in a model with BatchNormalization,
   which needs the whole share's statistics) -- in one thread, BLAS on one thread:
   each step's median forward and backward time, with the GFLOP/s and GB/s it achieves. GFLOP/s
   counts the operations of the im2col matrix products (a block that runs Winograd's F(2×2, 3×3)
   does fewer, so its figure is the rate im2col's matrix products would need to keep up: above
   the SGEMM rate, it beats any im2col design); GB/s counts
   the bytes the step must move at least once: its input, output, parameters and the
   intermediates it writes and reads back (im2col's columns and the matrix product's output, or
   Winograd's V, M and dM);
2. times those matrix products alone, at the same shapes, one thread: the floor of an im2col
   design that calls BLAS for all of them, and the machine's single-core SGEMM rate for scale;
3. times whole training steps as ``fit`` runs them (``model._train_step``), on all the cores and
   on one, and what checking every update without writing costs (a checked step's first pass);
4. times one thread's share (forward, loss and backward, no update) alone, beside a thread that
   runs a Numba loop without the GIL (what sharing the caches and the memory costs it), and in as
   many threads as ``fit`` uses at once, each on its own copy of the model, meeting nowhere: what
   the threads cost each other, apart from waiting for each other inside a step. The difference
   between the last two is their turns at Python's GIL between kernels.
The OpenBLAS build and kernel in use are printed first (threadpoolctl).
"""

import argparse
import threading
import time

import common
import numba
import numpy as np
from examples.mnist import ARCHS, arch_name
from threadpoolctl import threadpool_limits

from tinycnn.layers.fused import Conv2DWithoutDx, ConvReLUMaxPool
from tinycnn.parallel import DataParallel, can_split, cpu_count
from tinycnn.plan import Plan


def median_ms(fn, repeat):
    return common.bench(fn, repeat) * 1e3


def computes_dx(step):
    """Whether ``step.backward`` computes dL/dx: every step does but the first step with
    parameters in training, when the plan made it skip dx (a fused block told ``input_grad``
    False, or a Conv2D run as Conv2DWithoutDx)."""
    if isinstance(step, Conv2DWithoutDx):
        return False
    return not (isinstance(step, ConvReLUMaxPool) and not step.input_grad)


def work(step, x, out):
    """(forward FLOP, backward FLOP, forward bytes, backward bytes, matrix-product shapes)."""
    layer = step.conv if isinstance(step, (ConvReLUMaxPool, Conv2DWithoutDx)) else step
    input_grad = computes_dx(step)
    kind = type(layer).__name__
    params = sum(p.nbytes for p in step.params.values())
    item = x.dtype.itemsize
    io = x.nbytes + out.nbytes
    if kind == "Conv2D":
        n = x.shape[0]
        m = n * layer.out_hw[0] * layer.out_hw[1]
        k = int(np.prod(layer.params["kernel"].shape[:3]))
        f = layer.filters
        cols, z = m * k * item, m * f * item
        shapes = [(m, k, f), (k, m, f)] + ([(m, f, k)] if input_grad else [])
        fwd_bytes = io + params + 2 * cols + 2 * z           # im2col writes cols, GEMM reads them ...
        bwd_bytes = io + params + 2 * z + cols + (2 * cols if input_grad else 0)
        if getattr(step, "winograd", False):                 # its own intermediates instead:
            tiles, c = out.shape[0] * out.shape[1] * out.shape[2], x.shape[3]
            v, mm = 16 * tiles * c * item, 16 * tiles * f * item      # V (T, 16, C), M and dM (T, 16, F)
            if c == 1:                                       # one channel: M and dM stay in registers
                fwd_bytes, bwd_bytes = io + params + 2 * v, io + params + v
            else:
                fwd_bytes = io + params + 2 * v + 2 * mm
                bwd_bytes = io + params + 2 * mm + v + (2 * v if input_grad else 0)
        return 2 * m * k * f, 2 * m * k * f * (2 if input_grad else 1), fwd_bytes, bwd_bytes, shapes
    if kind == "Dense":
        n, d_in = x.shape
        d_out = layer.units
        shapes = [(n, d_in, d_out), (d_in, n, d_out)] + ([(n, d_out, d_in)] if input_grad else [])
        return 2 * n * d_in * d_out, 2 * n * d_in * d_out * (2 if input_grad else 1), io + params, io + params, shapes
    return 0, 0, io + params, io + params, []


def profile(model, x, y, steps_n):
    """Per-step medians on one share, one thread (the caller limits BLAS)."""
    plan = model.plan()                             # the steps fit runs, in the model's mode
    head, tail = plan.steps[:plan.first], plan.steps[plan.first:]
    rows, shapes = [], []
    for step in head:                               # augmentation: forward only
        rows.append({"step": step.name, "forward_ms": median_ms(lambda: step.forward(x, training=True), steps_n)})
        x = step.forward(x, training=True)
    inputs = []
    for step in tail:
        inputs.append(x)
        x = step.forward(x, training=True)
    logits = x
    loss = plan.loss
    loss.forward(logits, y)
    douts = [loss.backward()]
    for step in reversed(tail[1:]):
        douts.append(step.backward(douts[-1]))
    douts = douts[::-1]                             # douts[i] = dL/d(output of tail[i])
    for i, step in enumerate(tail):
        xi, di = inputs[i], douts[i]
        fwd = median_ms(lambda: step.forward(xi, training=True), steps_n)
        out = step.forward(xi, training=True)
        bwd = median_ms(lambda: step.backward(di), steps_n)
        f_flop, b_flop, f_bytes, b_bytes, mm = work(step, xi, out)
        shapes += mm
        path = ", Winograd" if getattr(step, "winograd", False) else ""
        rows.append({"step": f"{step.name} ({type(step).__name__}{path})",
                     "forward_ms": fwd, "backward_ms": bwd,
                     "gflops": (f_flop + b_flop) / ((fwd + bwd) * 1e-3) / 1e9,
                     "gbs": (f_bytes + b_bytes) / ((fwd + bwd) * 1e-3) / 1e9})
    rows.append({"step": f"loss ({type(loss).__name__})",
                 "forward_ms": median_ms(lambda: loss.forward(logits, y), steps_n),
                 "backward_ms": median_ms(loss.backward, steps_n)})
    return rows, shapes


def floor_ms(shapes, dtype, repeat):
    """The step's matrix products alone, at the same shapes (one thread: the caller limits BLAS)."""
    rng = np.random.default_rng(0)
    total, flop = 0.0, 0
    for m, k, n in shapes:
        a, b = rng.random((m, k), dtype=dtype), rng.random((k, n), dtype=dtype)
        total += median_ms(lambda: a @ b, repeat)
        flop += 2 * m * k * n
    return total, flop


@numba.njit(nogil=True)
def _busy(n):
    """Arithmetic that never touches the GIL: a core kept busy beside a share."""
    s = 0.0
    for i in range(n):
        s += np.sqrt(i)
    return s


def shares_at_once_ms(args, x, y, share, threads):
    """Median ms of one share's forward, loss and backward, alone, beside a Numba loop, and in
    ``threads`` threads at once (each its own model and plan, BLAS on one thread):
    (alone, beside, [one per thread])."""
    plans = []
    for _ in range(threads):
        model = common.tinycnn_model(args.arch, args.augment)
        plans.append(Plan(model.layers, type(model.loss)(), fast=True))

    def run(plan, out):
        times = []
        for k in range(args.steps + 20):
            start = time.perf_counter()
            plan.loss_and_gradients(x[:share], y[:share], start=plan.first)
            if k >= 20:
                times.append(time.perf_counter() - start)
        out.append(common.median(times) * 1e3)

    with threadpool_limits(limits=1, user_api="blas"):
        alone = []
        run(plans[0], alone)
        beside, stop = [], threading.Event()
        _busy(10)
        spinner = threading.Thread(target=lambda: [_busy(200000) for _ in iter(stop.is_set, True)])
        spinner.start()
        run(plans[0], beside)
        stop.set()
        spinner.join()
        together = []
        workers = [threading.Thread(target=run, args=(plan, together)) for plan in plans]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return alone[0], beside[0], together


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=cpu_count(), help="cores fit splits a batch over")
    p.add_argument("--arch", type=arch_name, choices=ARCHS, default="keras",
                   help="as examples/mnist.py's (--arch seed, the old name of keras, is deprecated)")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    print(f"machine: {common.machine()}")
    print(f"BLAS: {common.blas_info()}")
    model = common.tinycnn_model(args.arch, args.augment)
    x, y, _ = common.load_images(args.batch * 20)
    threads = args.threads if can_split(model.layers) else 1
    chunk = DataParallel(model, threads).chunk          # None: each share whole (BatchNormalization)
    share = -(-args.batch // threads)                   # what one thread runs at a time
    share = share if chunk is None else min(share, chunk)
    with threadpool_limits(limits=1, user_api="blas"):
        rows, shapes = profile(model, x[:share], y[:share], args.steps)
        opt_layers = model._trainable_layers()
        opt = model.optimizer
        update = median_ms(lambda: opt.step(opt_layers), args.steps)   # gradients from the profile
        check = median_ms(lambda: [opt.update((layer.name, k), p_, layer.grads[k], 1e-3, write=False)
                                   for layer in opt_layers for k, p_ in layer.params.items()], args.steps)
        floor, flop = floor_ms(shapes, np.float32, args.steps)
        one = 2048
        a = np.random.default_rng(0).random((one, one), dtype=np.float32)
        sgemm = 2 * one ** 3 / (median_ms(lambda: a @ a, 5) * 1e-3) / 1e9
    rows.append({"step": f"{type(opt).__name__} update (Optimizer.step)", "backward_ms": update})
    total = sum((r.get("forward_ms") or 0) + (r.get("backward_ms") or 0) for r in rows)
    for r in rows:
        r["share"] = 100 * ((r.get("forward_ms") or 0) + (r.get("backward_ms") or 0)) / total

    print(f"\n{args.arch} model{' with augmentation' if args.augment else ''}: {share} images, what one "
          f"thread works on at a time (batch {args.batch} over {threads} thread(s), "
          + ("each share whole" if chunk is None else f"chunks of at most {chunk}")
          + f"), BLAS on one thread; median of {args.steps} runs")
    common.print_table(rows, [("step", "step", "{}"), ("forward_ms", "forward ms", "{:.3f}"),
                              ("backward_ms", "backward ms", "{:.3f}"), ("gflops", "GFLOP/s", "{:.1f}"),
                              ("gbs", "GB/s", "{:.1f}"), ("share", "share", "{:.1f}%")])
    print(f"sum {total:.2f} ms for {share} images; checking every update without writing "
          f"(update(write=False), a checked step's first pass): {check:.3f} ms")
    print(f"im2col floor: the {len(shapes)} matrix products of an im2col design, alone, one thread: {floor:.2f} ms "
          f"({flop / (floor * 1e-3) / 1e9:.0f} GFLOP/s; one-thread SGEMM 2048^3: {sgemm:.0f} GFLOP/s)")

    def steps_ms(n_threads):
        model2 = common.tinycnn_model(args.arch, args.augment)
        batches = [(x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch]) for i in range(20)]
        times = []
        with model2._threads(n_threads):
            for k in range(args.steps + 20):
                xb, yb = batches[k % 20]
                start = time.perf_counter()
                model2._train_step(xb, yb)
                if k >= 20:
                    times.append(time.perf_counter() - start)
        return common.median(times) * 1e3

    whole = {n: steps_ms(n) for n in sorted({1, threads})}
    print(f"\nwhole training step, batch {args.batch}, as fit runs it (median of {args.steps}):")
    for n, ms in whole.items():
        how = "BLAS on all cores" if n == 1 else "BLAS on one thread each"
        print(f"  {n} thread(s) ({how}): {ms:.2f} ms -> {ms * 60000 / args.batch / 1000:.1f} s per 60,000-image epoch")
    if threads > 1:
        alone, beside, together = shares_at_once_ms(args, x, y, share, threads)
        print(f"\none share ({share} images: forward, loss, backward; no update), median of {args.steps}:")
        print(f"  alone: {alone:.2f} ms; beside a Numba loop (no GIL): {beside:.2f} ms; {threads} at once, "
              "each on its own model: " + ", ".join(f"{ms:.2f}" for ms in together) + " ms")
    else:
        alone, beside, together = None, None, []
    common.write_json(args.json, {"batch": args.batch, "threads": threads, "rows": rows, "share_ms": total,
                                  "share_alone_ms": alone, "share_beside_numba_ms": beside,
                                  "shares_at_once_ms": together,
                                  "floor_ms": floor, "check_ms": check, "sgemm_gflops": sgemm,
                                  "step_ms": {str(k): v for k, v in whole.items()}})


if __name__ == "__main__":
    main()
