"""The kernels alone: Numba against the NumPy references, and serial against parallel Numba.

    python benchmarks/kernels.py                # the Keras MNIST CNN's shapes at batch 32
    python benchmarks/kernels.py --batch 128 --json kernels.json

Part 1 times im2col, col2im, max-pool forward/backward, the fused bias + ReLU + max-pool pair
and Adam's update on the Keras MNIST CNN's shapes: the NumPy reference (for Adam, the NumPy lines of
``optimizers.Adam.update`` that the reference mode runs), the Numba kernel tinycnn uses (serial),
and for the first four a parallel variant of that kernel that this benchmark builds itself (see
:func:`parallel`; tinycnn never runs it). GB/s counts the bytes each kernel must read and write once.
Part 2 times whole one-thread training steps (``model._train_step``: no data parallelism, BLAS on
every core) with the serial kernels and then with the parallel variants of im2col and col2im: the
measurement behind tinycnn's choice never to run Numba's thread pool beside BLAS's (fit splits
the batch instead: parallel.py). The Keras MNIST CNN's blocks would run Winograd's kernels, which call
neither, so this part turns Winograd off (``winograd.applies``) and the blocks take im2col.
"""

import argparse
import inspect
import time

import common
import numba
import numpy as np

from tinycnn import optimizers
from tinycnn.kernels import adam as A
from tinycnn.kernels import bias_relu_pool as B
from tinycnn.kernels import im2col as K
from tinycnn.kernels import pooling as P
from tinycnn.kernels import winograd as W


def parallel(fn):
    """This benchmark's own parallel variant of the serial kernel ``fn``: not code tinycnn runs.

    tinycnn's kernels are serial (``kernels/jit.py``), so compiling one with parallel=True would
    change nothing. Here the kernel's source has its outer loop over the batch,
    ``for b in range(n):``, turned into ``for b in numba.prange(n):``, so that Numba's thread pool
    shares out the images; it is run in a copy of the kernel module's globals and compiled with
    ``numba.njit(parallel=True)``.
    """
    lines = inspect.getsource(fn.py_func).splitlines(keepends=True)
    source = "".join(line for line in lines if not line.lstrip().startswith("@"))   # the @jit() line
    loop = "for b in range(n):"
    assert source.count(loop) == 1, f"{fn.py_func.__name__}: no single outer loop {loop!r} to parallelise"
    source = source.replace(loop, "for b in numba.prange(n):")
    scope = dict(fn.py_func.__globals__, numba=numba)
    exec(compile(source, f"<parallel {fn.py_func.__name__}>", "exec"), scope)
    return numba.njit(parallel=True)(scope[fn.py_func.__name__])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    n, rng, f32 = args.batch, np.random.default_rng(0), np.float32
    none = (0, 0, 0, 0)
    par = {name: parallel(getattr(mod, name)) for mod, name in
           [(K, "_im2col_numba"), (K, "_col2im_numba"), (P, "_maxpool_forward_numba"), (P, "_maxpool_backward_numba")]}

    rows = []
    for label, shape in [("conv1", (n, 28, 28, 1)), ("conv2", (n, 13, 13, 32))]:
        x = rng.random(shape, dtype=f32)
        _, h, w, c = shape
        oh, ow = h - 2, w - 2
        cols = K.im2col(x, 3, 3, (1, 1), none)
        moved = (x.nbytes + cols.nbytes)
        rows.append({"kernel": f"im2col {label} {shape}", "bytes": moved,
                     "numpy": common.bench(lambda: K.im2col_reference(x, 3, 3, (1, 1), none), args.repeat),
                     "numba": common.bench(lambda: K.im2col(x, 3, 3, (1, 1), none), args.repeat),
                     "parallel": common.bench(lambda: par["_im2col_numba"](x, 3, 3, 1, 1, 0, 0, oh, ow), args.repeat)})
        rows.append({"kernel": f"col2im {label} {shape}", "bytes": moved,
                     "numpy": common.bench(lambda: K.col2im_reference(cols, shape, 3, 3, (1, 1), none), args.repeat),
                     "numba": common.bench(lambda: K.col2im(cols, shape, 3, 3, (1, 1), none), args.repeat),
                     "parallel": common.bench(lambda: par["_col2im_numba"](cols, n, h, w, c, 3, 3, 1, 1, 0, 0, oh, ow),
                                       args.repeat)})
    for label, shape in [("pool1", (n, 26, 26, 32)), ("pool2", (n, 11, 11, 64))]:
        x = rng.random(shape, dtype=f32)
        _, h, w, c = shape
        y, am = P.maxpool_forward(x, 2, 2, (2, 2), none)
        dout = rng.random(y.shape, dtype=f32)
        rows.append({"kernel": f"maxpool fwd {label} {shape}", "bytes": x.nbytes + y.nbytes + am.nbytes,
                     "numpy": common.bench(lambda: P.maxpool_forward_reference(x, 2, 2, (2, 2), none), args.repeat),
                     "numba": common.bench(lambda: P.maxpool_forward(x, 2, 2, (2, 2), none), args.repeat),
                     "parallel": common.bench(lambda: par["_maxpool_forward_numba"](x, 2, 2, 2, 2, 0, 0, h // 2, w // 2),
                                       args.repeat)})
        rows.append({"kernel": f"maxpool bwd {label} {shape}", "bytes": x.nbytes + y.nbytes + am.nbytes,
                     "numpy": common.bench(lambda: P.maxpool_backward_reference(dout, am, shape), args.repeat),
                     "numba": common.bench(lambda: P.maxpool_backward(dout, am, shape, 2, 2, (2, 2), none), args.repeat),
                     "parallel": common.bench(lambda: par["_maxpool_backward_numba"](dout, am, h, w), args.repeat)})
    z = rng.standard_normal((n, 26, 26, 32), dtype=f32)
    bias = rng.standard_normal(32, dtype=f32)
    y, am = B.bias_relu_maxpool_forward(z, bias, 2, 2, (2, 2), none)
    dy = rng.random(y.shape, dtype=f32)
    rows.append({"kernel": f"bias+relu+maxpool fwd {z.shape}", "bytes": z.nbytes + y.nbytes + am.nbytes,
                 "numpy": common.bench(lambda: B.bias_relu_maxpool_forward_reference(z, bias, 2, 2, (2, 2), none), args.repeat),
                 "numba": common.bench(lambda: B.bias_relu_maxpool_forward(z, bias, 2, 2, (2, 2), none), args.repeat)})
    rows.append({"kernel": f"maxpool+relu bwd {z.shape}", "bytes": z.nbytes + y.nbytes + am.nbytes + dy.nbytes,
                 "numpy": common.bench(lambda: B.maxpool_relu_backward_reference(dy, am, y, z.shape), args.repeat),
                 "numba": common.bench(lambda: B.maxpool_relu_backward(dy, am, y, z.shape), args.repeat)})
    p_, g_, m_, v_ = (rng.random((1600, 64), dtype=f32) for _ in range(4))
    adam = optimizers.Adam()            # the reference mode's update: Adam.update(..., fast=False)
    adam.iterations = 1                 # the update's number t, which step() would have counted
    key = ("dense", "kernel")
    rows.append({"kernel": "Adam update (1600, 64)", "bytes": 7 * p_.nbytes,
                 "numpy": common.bench(lambda: adam.update(key, p_, g_, 1e-6, fast=False), args.repeat),
                 "numba": common.bench(lambda: A.adam_update(p_, g_, m_, v_, 1e-6, 0.9, 0.999, 1e-7), args.repeat)})
    for r in rows:
        for k in ("numpy", "numba", "parallel"):
            r[k + "_us"] = r[k] * 1e6 if k in r else None
        r["numba_gbs"] = r["bytes"] / r["numba"] / 1e9
        r["speedup"] = r["numpy"] / r["numba"]
    print(f"Kernels at batch {n}, median of {args.repeat}; machine {common.machine()}")
    common.print_table(rows, [("kernel", "kernel", "{}"), ("numpy_us", "NumPy µs", "{:,.0f}"),
                              ("numba_us", "Numba µs", "{:,.0f}"), ("numba_gbs", "Numba GB/s", "{:.1f}"),
                              ("speedup", "vs NumPy", "{:.1f}x"), ("parallel_us", "parallel Numba µs", "{:,.0f}")])

    # Part 2: whole training steps, serial kernels then parallel im2col and col2im.
    x, y, _ = common.load_images(n * 40)

    def steps():
        model = common.tinycnn_model()
        for i in range(5):
            model._train_step(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n])
        times = []
        for i in range(40):
            start = time.perf_counter()
            model._train_step(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n])
            times.append(time.perf_counter() - start)
        return common.median(times) * 1e3

    # The Keras MNIST CNN's blocks run Winograd's kernels, which call neither im2col nor col2im: both
    # runs take the blocks' im2col path instead (as accuracy_seeds.py's "im2col" variant does).
    applies, W.applies = W.applies, lambda *args: False
    saved = {name: getattr(K if "col" in name else P, name) for name in par}
    try:
        serial_ms = steps()
        for name, fn in par.items():
            setattr(K if "col" in name else P, name, fn)
        parallel_ms = steps()
    finally:
        W.applies = applies
        for name, fn in saved.items():
            setattr(K if "col" in name else P, name, fn)
    print(f"\nTraining step on the im2col path (no Winograd), batch {n}: serial kernels {serial_ms:.2f} ms, "
          f"parallel im2col and col2im {parallel_ms:.2f} ms ({numba.config.NUMBA_NUM_THREADS} Numba threads, "
          f"threading layer {numba.threading_layer()})")
    common.write_json(args.json, {"batch": n, "rows": [{k: v for k, v in r.items()} for r in rows],
                                  "step_serial_ms": serial_ms, "step_parallel_ms": parallel_ms})


if __name__ == "__main__":
    main()
