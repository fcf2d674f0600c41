"""Kernel launches, reads from the GPU and copies to it, per training step of the Keras MNIST CNN,
in the per-step loop (``model.deferred = False``: every GPU fit before issue 23) and in the
deferred loop (the GPU's default since), with the milliseconds per step of each.

    python benchmarks/gpu_launches.py                  # batch 32; needs CuPy and a CUDA device
    python benchmarks/gpu_launches.py --batch-size 128 --json launches.json

What is counted, by PyTorch's profiler (CUPTI, which sees every CUDA call of this process, CuPy's
included; PyTorch itself runs nothing here):
- kernels: kernels run on the device, one per launch;
- reads: copies from the device to the host. Each is a blocking read (``float(loss)``,
  ``bool(isfinite(w).all())``, ``.get()``): the host waits until the GPU has run everything queued;
- copies in: copies from the host to the device (a batch, an index array, a scalar);
- syncs: explicit synchronize calls (stream, device or event).
Each is counted over a fit of N steps and over one of 2N steps, on the same data after a
warm-up fit: "per step" is the difference divided by N, "once per fit" what is left of the
N-step fit (copying the data, the reads at the epoch's end). Without PyTorch only the timings
and tinycnn's own counts are printed: its RawKernel launches (``kernels/cuda.py``) and how often
the deferred loop read its totals.
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import common

MODES = {"per-step loop (deferred=False)": False, "deferred loop (the default)": None}


def events_of(trace_path):
    """Counter of what a Chrome trace from PyTorch's profiler holds, by the kinds above."""
    counts = collections.Counter()
    for event in json.load(open(trace_path)).get("traceEvents", []):
        category, name = event.get("cat", ""), event.get("name", "")
        if category == "kernel":
            counts["kernels"] += 1
        elif category == "gpu_memcpy":
            counts["reads" if "DtoH" in name else "copies in" if "HtoD" in name else "device copies"] += 1
        elif category == "gpu_memset":
            counts["memsets"] += 1
        elif category in ("cuda_runtime", "cuda_driver"):
            if "Synchronize" in name:
                counts["syncs"] += 1
            if "LaunchKernel" in name:
                counts["launch calls"] += 1
    return counts


class TinycnnCounts:
    """tinycnn's own RawKernel launches and the deferred loop's reads of its totals, counted in
    Python (no profiler needed)."""

    def __init__(self):
        from tinycnn import trainer
        from tinycnn.kernels import cuda
        self.counts = collections.Counter()
        kernel, first_bad = cuda.kernel, trainer._DeviceTotals.first_bad

        def counted_kernel(name, dtype):
            compiled = kernel(name, dtype)

            def launch(*args, **kwargs):
                self.counts["tinycnn RawKernel launches"] += 1
                return compiled(*args, **kwargs)
            return launch

        def counted_first_bad(totals):
            self.counts["totals read"] += 1
            return first_bad(totals)

        cuda.kernel = counted_kernel
        trainer._DeviceTotals.first_bad = counted_first_bad


def profiled(fit, use_torch):
    """Counter of fit()'s CUDA work (see the module docstring), with PyTorch's profiler."""
    if not use_torch:
        fit()
        return collections.Counter()
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fit()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        return events_of(path)


def measure(deferred, x, y, batch_size, steps, use_torch, tinycnn_counts, device="gpu"):
    model = common.tinycnn_model()
    model.to(device)
    model.deferred = deferred if device == "gpu" else bool(deferred is None)
    if device == "gpu":
        import cupy
        synchronize = cupy.cuda.Device().synchronize
    else:
        synchronize = lambda: None      # noqa: E731

    def fit(n):
        model.fit(x[:n * batch_size], y[:n * batch_size], epochs=1, batch_size=batch_size, verbose=0, seed=0)
        synchronize()

    fit(2 * steps)                                      # warm-up: compiles, the memory pool
    counts = []
    for n in (steps, 2 * steps):
        tinycnn_counts.counts.clear()
        counts.append(profiled(lambda: fit(n), use_torch) + tinycnn_counts.counts)
    keys = sorted(set(counts[0]) | set(counts[1]))
    per_step = {k: (counts[1][k] - counts[0][k]) / steps for k in keys}
    once = {k: counts[0][k] - steps * per_step[k] for k in keys}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fit(2 * steps)
        times.append((time.perf_counter() - start) / (2 * steps))
    return {"per_step": per_step, "once_per_fit": once, "ms_per_step": 1000 * common.median(times)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=25, help="N: fits of N and 2N steps are compared")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                   help="cpu: a dry run of this script without a GPU (the deferred loop on NumPy)")
    args = p.parse_args()
    use_torch = False
    if args.device == "gpu":
        try:
            import cupy
            devices = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:            # ImportError, or CUDARuntimeError without a driver
            sys.exit(f"gpu_launches.py needs CuPy and a CUDA device: {err}")
        if not devices:
            sys.exit("gpu_launches.py needs a CUDA device; CuPy sees none.")
        use_torch = common.torch_available()
        if use_torch:
            import torch
            use_torch = torch.cuda.is_available()
        print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}; "
              f"counts by {'PyTorch ' + torch.__version__ + ' profiler' if use_torch else 'tinycnn alone'}")
    x, y, source = common.load_images(2 * args.steps * args.batch_size)
    tinycnn_counts = TinycnnCounts()
    results = {"batch": args.batch_size, "steps": args.steps, "data": source, "modes": {}}
    for label, deferred in MODES.items():
        results["modes"][label] = measure(deferred, x, y, args.batch_size, args.steps, use_torch, tinycnn_counts,
                                          args.device)

    keys = ["kernels", "reads", "copies in", "syncs", "tinycnn RawKernel launches", "totals read"]
    print(f"\nOne training step of the Keras CNN at batch {args.batch_size} on the {args.device.upper()} "
          f"(fits of {args.steps} and {2 * args.steps} steps):")
    rows = []
    for label, r in results["modes"].items():
        rows.append({"loop": label, "ms": r["ms_per_step"],
                     **{k: r["per_step"].get(k, 0.0) for k in keys},
                     "once": ", ".join(f"{k} {v:g}" for k, v in sorted(r["once_per_fit"].items()) if v)})
    common.print_table(rows, [("loop", "loop", "{}"), ("ms", "ms/step", "{:.2f}")]
                       + [(k, k + "/step", "{:.1f}") for k in keys])
    if use_torch and not any(r["per_step"].get("kernels") for r in results["modes"].values()):
        print("\nPyTorch's profiler saw no kernels: its counts are missing, not zero.")
    print("\nOnce per fit, besides:")
    for row in rows:
        print(f"  {row['loop']}: {row['once'] or 'nothing'}")
    common.write_json(args.json, results)


if __name__ == "__main__":
    main()
