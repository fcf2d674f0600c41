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
a helper from Python raises an error.

Every kernel is serial. ``fit`` uses the cores another way: each thread runs serial kernels and
single-threaded BLAS on its own share of the batch (``tinycnn/parallel.py`` says why Numba's own
thread pool is not used).
"""

import warnings

import numba

_warned = False


def jit(helper=False):
    """Decorator: compile a kernel with Numba in nopython mode, cached on disk when possible.
    ``helper=True``: a function that only other kernels call (see above)."""
    options = dict(nogil=True, error_model="numpy")
    if helper:
        options.update(no_cpython_wrapper=True, no_cfunc_wrapper=True)

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
