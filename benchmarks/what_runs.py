"""Which of tinycnn's functions fit runs, and how often, in the fast mode and in the reference mode.

    python benchmarks/what_runs.py
    python benchmarks/what_runs.py --threads 1      # the fast mode without data parallelism
    python benchmarks/what_runs.py --all            # every function, helpers and Numba kernels too

It trains the Keras MNIST CNN (``examples/mnist.py --arch keras``, as ``common.tinycnn_model``
builds and compiles it) for one epoch of 2 batches of random images, ``fit(x, y, batch_size=32,
verbose=0, seed=0)``, twice: compiled as a user compiles it (the fast mode, the default) and with
``compile(..., fast=False)`` (the reference mode: the layers' own code, one thread, Adam's NumPy
lines). Each row is a function defined in the tinycnn package, each column how many times it ran
in that mode. The table shows, for instance, that in the fast mode the convolutions run as
``ConvReLUMaxPool`` blocks (here on Winograd's kernels) on every thread's share of a batch, and
``Conv2D.forward`` never runs; that the reference mode runs ``Conv2D``, ``ReLU`` and ``MaxPool2D``
one after another, with im2col and col2im, and checks the layer contract at every step; and that
only the fast mode calls the fused Adam kernel (``adam.adam_update``).

Counting: ``sys.setprofile`` for this thread and ``threading.setprofile`` for the threads ``fit``
starts (the fast mode runs the shares of a batch in worker threads), counting the 'call' events
whose code lies in the tinycnn package. Names are ``Class.method`` for methods (``co_qualname``)
and ``module.function`` for module-level functions. Left out unless ``--all``: comprehensions and
lambdas, dunder methods, private helpers (a leading "_", except ``Trainer._train_step`` and
``DataParallel._share``), shape and argument bookkeeping (``output_shape``, ``checks.py``,
``backend.py``, callbacks, the progress bar). Numba's compiled kernels (``_im2col_numba`` ...) are
counted as well, since Numba's dispatcher reports each call to the profiler, but being private
they are listed only with ``--all``: each is called by a Python function of the table
(``im2col.im2col``, ``winograd.forward`` ...). Rows follow the order in which the fast run first
called them, with what only the reference run called put where that run called it. In the fast
mode the counts depend on the number of threads that share a batch (the cores, or ``--threads``);
the header says how many.
"""

import argparse
import collections
import os
import sys
import threading

import common
import numpy as np

import tinycnn
from tinycnn.optimizers import Adam
from tinycnn.parallel import can_split, cpu_count

PACKAGE = os.path.dirname(os.path.abspath(tinycnn.__file__)) + os.sep

#: Kept although their names start with "_": the training step, and one thread's share of it.
KEEP = {"Trainer._train_step", "DataParallel._share"}

#: Modules of bookkeeping: argument checks, array modules, callbacks, progress, Ctrl-C, geometry.
BOOKKEEPING = {"checks.py", "backend.py", "callbacks.py", "progress.py", "interrupt.py",
               os.path.join("layers", "_geometry.py"), os.path.join("kernels", "geometry.py")}

#: Functions that only look something up or check an argument.
TRIVIAL = {"output_shape", "built", "current_learning_rate", "check_labels", "cpu_count"}


class CallCounter:
    """Counts the calls of the functions defined in tinycnn while it is active, in every thread."""

    def __init__(self):
        self.counts = collections.Counter()
        self.first = {}                     # (file, qualified name) -> the number of its first call
        self._lock = threading.Lock()

    def _profile(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE):
            return
        key = (os.path.relpath(code.co_filename, PACKAGE), qualified_name(frame))
        with self._lock:                    # threads count at the same time
            self.counts[key] += 1
            self.first.setdefault(key, len(self.first))

    def __enter__(self):
        threading.setprofile(self._profile)     # threads started from now on (fit's workers)
        sys.setprofile(self._profile)           # this one
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)
        return False


def qualified_name(frame):
    """The function's qualified name (``Conv2D.forward``): ``co_qualname``, from Python 3.11 on;
    before, the class of ``self`` (for an inherited method, the subclass) and the function's name."""
    code = frame.f_code
    if hasattr(code, "co_qualname"):
        return code.co_qualname
    if code.co_argcount and code.co_varnames[0] == "self" and "self" in frame.f_locals:
        return f"{type(frame.f_locals['self']).__name__}.{code.co_name}"
    return code.co_name


def label(file, qualname):
    """``Class.method`` for a method, ``module.function`` for a module-level function."""
    if "." in qualname.split(".<locals>")[0]:
        return qualname
    return f"{os.path.splitext(os.path.basename(file))[0]}.{qualname}"


def shown(file, qualname):
    """True for a function the table lists without --all (see the module docstring)."""
    name = label(file, qualname)
    last = qualname.rsplit(".", 1)[-1]
    if name in KEEP:
        return True
    return not ("<" in qualname or last.startswith("_") or file in BOOKKEEPING or last in TRIVIAL)


def in_call_order(fast, reference, everything=False):
    """The functions to list, in the order the fast run first called them, each function that only
    the reference run called placed after the one the reference run called just before it."""
    def order(run):
        return [k for k in sorted(run.first, key=run.first.get) if everything or shown(*k)]

    keys, last = order(fast), -1
    for key in order(reference):
        if key in keys:
            last = keys.index(key)
        else:
            last += 1
            keys.insert(last, key)
    return keys


def count_calls(fast, x, y, batch, threads):
    """The CallCounter of one fit of a fresh Keras MNIST CNN, in the fast or the reference mode."""
    model = common.tinycnn_model()
    if not fast:
        model.compile(Adam(1e-3), "sparse_categorical_crossentropy", fast=False)
    with CallCounter() as counter:
        model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=0, threads=threads)
    return counter


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64, help="random training images")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None,
                   help="threads fit shares a batch over in the fast mode (default: every core, as fit)")
    p.add_argument("--all", action="store_true", help="list every function, helpers and Numba kernels too")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    runs = {"fast": count_calls(True, x, y, args.batch, args.threads),
            "reference": count_calls(False, x, y, args.batch, args.threads)}

    keys = in_call_order(runs["fast"], runs["reference"], args.all)
    rows = [{"function": label(*k), "file": k[0], **{mode: run.counts.get(k, 0) for mode, run in runs.items()}}
            for k in keys]

    threads = cpu_count() if args.threads is None else args.threads
    split = threads if can_split(common.tinycnn_model().layers) else 1
    batches = -(-args.images // args.batch)
    print(f"machine: {common.machine()}")
    print(f"Calls of tinycnn's functions in one fit of the Keras MNIST CNN: {args.images} random images, "
          f"batch {args.batch} ({batches} steps); fast mode: each batch over {split} thread(s)"
          f"{'' if args.threads is not None else ' (every core)'}; reference mode: one thread")
    common.print_table(rows, [("function", "function", "{}"), ("file", "file", "{}"),
                              ("fast", "fast", "{}"), ("reference", "reference", "{}")])
    hidden = len(set(runs["fast"].counts) | set(runs["reference"].counts)) - len(keys)
    if hidden:
        print(f"({hidden} helper and bookkeeping functions and Numba kernels left out: --all lists them)")


if __name__ == "__main__":
    main()
