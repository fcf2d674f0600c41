"""One place that decides how tinycnn's Numba kernels are compiled.

``jit`` is ``numba.njit(cache=True, nogil=True)``: compiled machine code is stored on disk, so
only the very first run of the library pays the compile time, and a running kernel releases
Python's GIL, so that two threads can run kernels at the same time (see ``tinycnn/parallel.py``).

Numba stores the compiled code in ``NUMBA_CACHE_DIR`` when that is set, else beside the source
file (in ``__pycache__``), else in the user's cache directory. If no writable place exists at
all, Numba refuses ``cache=True``; we then compile in memory every run and warn once, instead of
failing to import. Numba's cache is keyed by the function's bytecode and signature, not by the
options below: after changing them, delete the old cache (``find . -name "*.nbi" -delete``) or a
kernel compiled with the old options may be loaded.

``error_model="numpy"``: a division by zero gives inf or NaN, as in NumPy, instead of raising
ZeroDivisionError as in Python. Python's rule makes Numba test every divisor before dividing,
and that test keeps the compiler from vectorising a loop (Adam's update, for one).

Helpers. Small functions that kernels call (a 4-number transform, a 2×2 window's maximum) are
compiled with ``jit(helper=True)``: Numba then skips the two wrappers that let Python, or C, call
a function directly, which are code to generate, optimise and compile like any other. The helpers
are only ever inlined into the kernels that call them, which shortens the compile time. Calling
a helper from Python raises an error. LLVM usually inlines them too; a helper it leaves as a call
inside a loop stops that loop's vectorisation, and ``jit(helper=True, inline=True)`` makes Numba
inline it itself, before LLVM sees the loop (Dropout's Philox rounds need it).

Every kernel is serial. ``fit`` uses the cores another way: each thread runs serial kernels and
single-threaded BLAS on its own share of the batch (``tinycnn/parallel.py`` says why Numba's own
thread pool is not used).
"""

import contextlib
import sys
import threading
import warnings

import numba
from numba.core import event

_warned = False


def jit(helper=False, inline=False):
    """Decorator: compile a kernel with Numba in nopython mode, cached on disk when possible.
    ``helper=True``: a function that only other kernels call; ``inline=True``: one that Numba
    inlines into them (see above)."""
    options = dict(nogil=True, error_model="numpy")
    if helper:
        options.update(no_cpython_wrapper=True, no_cfunc_wrapper=True)
    if inline:
        options.update(inline="always")

    def decorate(fn):
        global _warned
        try:
            return numba.njit(cache=True, **options)(fn)
        except Exception as err:  # Numba: "cannot cache function ...: no locator available"
            if not _warned:
                warnings.warn(
                    f"tinycnn: Numba cannot cache its kernels on disk ({err}); they will be "
                    "compiled again on every run. Set NUMBA_CACHE_DIR to a writable directory "
                    "to fix this.", RuntimeWarning, stacklevel=2)
                _warned = True
            return numba.njit(cache=False, **options)(fn)

    return decorate


class _FirstCompile(event.Listener):
    """Says once, on Numba's first compile of one of tinycnn's kernels, what the wait is."""

    def __init__(self, say):
        self.say, self.said, self.lock = say, False, threading.Lock()

    def on_start(self, ev):
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        if not getattr(function, "__module__", "").startswith("tinycnn."):
            return
        with self.lock:                 # two threads may start compiling at once
            if self.said:
                return
            self.said = True
        self.say()

    def on_end(self, ev):
        pass


def _say_compiling():
    start = "\n" if sys.stdout.isatty() else ""      # below a progress bar already drawn
    print(f"{start}Compiling tinycnn's Numba kernels for this machine: once, usually 5 to 15 s; later "
          "runs load them from the cache.", flush=True)


@contextlib.contextmanager
def announcing_compiles(enabled=True, say=_say_compiling):
    """While the block runs (``fit``), the first time Numba compiles one of tinycnn's kernels --
    an empty cache, the first run on a machine -- say so in one line, so that a first epoch that
    seems stuck at 0/N explains itself. Numba signals a compile only on a cache miss: a warm cache
    says nothing."""
    if not enabled:
        yield
        return
    with event.install_listener("numba:compile", _FirstCompile(say)):
        yield
