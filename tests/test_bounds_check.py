"""Numba's bounds checking: how CI makes an index out of range an IndexError instead of a crash.

Compiled kernels do not check their indices: Numba does not unless asked, so a kernel that
reads past the end of an array reads whatever lies there, and one that writes there corrupts
memory and may bring the interpreter down (SIGABRT, SIGSEGV) instead of failing a test.
``NUMBA_BOUNDSCHECK=1`` compiles every kernel with checks, and an index out of range raises
``IndexError``. But Numba caches compiled kernels on disk, keyed by the function's bytecode
and the argument types, not by the compile options: with the usual cache, kernels compiled
without checks would be loaded and run unchecked. So ``.ci/run`` runs the kernel tests a second
time with ``NUMBA_BOUNDSCHECK=1`` *and* ``NUMBA_CACHE_DIR`` set to a new, empty directory
(``docs/testing.md``).

- ``test_the_ci_setting_turns_an_index_out_of_range_into_an_index_error`` proves that setting,
  in fresh processes: a tinycnn-style kernel reading one element past the end of a view is
  unchecked without it and an IndexError with it.
- ``test_this_runs_kernels_are_bounds_checked`` runs only under ``NUMBA_BOUNDSCHECK=1`` (the CI
  run) and proves that tinycnn's own kernels were compiled with the checks there, not loaded
  unchecked from a cache: the Adam kernel, handed a gradient shorter than the parameter (which
  its wrapper refuses), raises IndexError.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KERNEL = textwrap.dedent("""
    import numpy as np
    from tinycnn.kernels.jit import jit

    @jit()
    def read(a, i):
        return a[i]

    base = np.arange(10.0)
    view = base[:5]
    try:
        print("read", read(view, 5))           # one past the end of the view, inside base
    except IndexError as err:
        print("IndexError", err)
""")


def run_kernel(tmp_path, cache, boundscheck):
    """Run KERNEL in a fresh Python with its own Numba cache directory; returns its output line."""
    (tmp_path / "kernel_module.py").write_text(KERNEL)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_BOUNDSCHECK"}
    env.update(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    if boundscheck:
        env["NUMBA_BOUNDSCHECK"] = "1"
    result = subprocess.run([sys.executable, "-c", "import kernel_module"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_ci_setting_turns_an_index_out_of_range_into_an_index_error(tmp_path):
    assert run_kernel(tmp_path, tmp_path / "cache-plain", boundscheck=False) == "read 5.0"    # unchecked
    checked = run_kernel(tmp_path, tmp_path / "cache-checked", boundscheck=True)
    assert checked.startswith("IndexError"), checked


@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") != "1",
                    reason="runs in the bounds-checked kernel run: NUMBA_BOUNDSCHECK=1 (.ci/run)")
def test_this_runs_kernels_are_bounds_checked():
    from tinycnn.kernels.adam import _adam_update_numba
    p, m, v = np.zeros(5), np.zeros(5), np.zeros(5)
    g = np.arange(10.0)[:3]                  # 2 short: reading g[3] stays inside its base array
    with pytest.raises(IndexError):
        _adam_update_numba(p, g, m, v, 1e-3, 0.1, 0.001, 1e-7, True)
