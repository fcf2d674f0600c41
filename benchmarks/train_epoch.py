"""Seconds per epoch of the Keras MNIST CNN (examples/mnist.py's default network), tinycnn against PyTorch.

    python benchmarks/train_epoch.py                       # batch 32 and 128, CPU
    python benchmarks/train_epoch.py --arch bn-dropout     # the example's stronger network, both sides
    python benchmarks/train_epoch.py --arch bn-dropout --augment   # with the example's augmentation, both sides
    python benchmarks/train_epoch.py --epochs 3 --json results.json
    python benchmarks/train_epoch.py --scaling             # also batch 16 ... 256 on 12,000 images
    python benchmarks/train_epoch.py --device gpu          # batch 32, 128, 512 on an NVIDIA GPU
    python benchmarks/train_epoch.py --jit-only --jit-baseline /tmp/before   # compile time, two checkouts

What it measures, on 60,000 28x28 images (real Fashion-MNIST when Debian's dataset-fashion-mnist
is installed, else synthetic):
- steady-state seconds per epoch and images per second, for each batch size. When PyTorch is
  installed (pip install torch==2.13.0), the same network in PyTorch is timed in the same run, on
  the same data, batch and thread count, alternating epochs (tinycnn, PyTorch, tinycnn, ...) so
  that drift on a shared machine hits both; the table gives the median and the ratio. With
  --augment, the example's RandomRotation and RandomTranslation run in front of the network in
  tinycnn, and their PyTorch counterpart (``common.torch_augment``: one affine_grid + grid_sample
  per batch, the same ranges; its docstring says what differs) in PyTorch;
- peak resident memory of a process that loads the data and trains one epoch (each framework
  in its own subprocess, so neither inflates the other);
- Numba's JIT overhead on the first epoch, in a subprocess with an empty cache (cold) and again
  with the cache it left (warm), apart from the steady state; the median of --jit-rounds such
  pairs. With --jit-baseline DIR (another checkout, e.g. ``git worktree add /tmp/before <commit>``)
  the same is measured for that checkout too, round by round in turn, so drift hits both;
- with --scaling, seconds per epoch of both frameworks at batch 16, 32, 64, 128 and 256 on a
  12,000-image slice, so that the cost's growth with the batch shows.
The BLAS library and the kernel it chose are printed first (threadpoolctl): quote figures with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as on a user's machine.
PyTorch is only ever imported here, never by tinycnn.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common
from examples.mnist import ARCHS, arch_name
import numpy as np


def tinycnn_epoch(model, x, y, batch_size, seed):
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0, seed=seed)


def steady_state(x, y, batch_sizes, epochs, device, use_torch, arch="keras", augment=False):
    rows = []
    for bs in batch_sizes:
        model = common.tinycnn_model(arch, augment)
        if device == "gpu":
            model.to("gpu")
        tinycnn_epoch(model, x[:20 * bs], y[:20 * bs], bs, 0)         # warm-up: compile, caches
        t_times, p_times = [], []
        if use_torch:
            import torch
            tdev = "cuda" if device == "gpu" else "cpu"
            tmodel, topt = common.torch_model(arch, device=tdev)
            tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))   # NCHW
            ty = torch.from_numpy(y)
            common.torch_epoch(tmodel, topt, tx[:20 * bs], ty[:20 * bs], bs, 0, tdev, augment)
        for epoch in range(epochs):
            t_times.append(common.timed(tinycnn_epoch, model, x, y, bs, epoch))
            if use_torch:
                p_times.append(common.timed(common.torch_epoch, tmodel, topt, tx, ty, bs, epoch, tdev, augment))
            print(f"  batch {bs}, epoch {epoch + 1}: tinycnn {t_times[-1]:.1f} s"
                  + (f", PyTorch {p_times[-1]:.1f} s" if p_times else ""), flush=True)
        t = common.median(t_times)
        row = {"batch": bs, "tinycnn_s": t, "tinycnn_img_s": len(x) / t, "tinycnn_all": t_times}
        if p_times:
            p = common.median(p_times)
            row.update(torch_s=p, torch_img_s=len(x) / p, ratio=t / p, torch_all=p_times)
        rows.append(row)
    return rows


def run_worker(args_list, env=None, checkout=None):
    """Runs this script with args_list in a subprocess; with ``checkout``, that checkout's own
    script and tinycnn instead of these."""
    script = os.path.join(checkout, "benchmarks", "train_epoch.py") if checkout else __file__
    env = {**os.environ, **(env or {})}
    if checkout:
        env["PYTHONPATH"] = checkout
    out = subprocess.run([sys.executable, script, *args_list], capture_output=True, text=True, env=env,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args_list} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_memory(framework, batch_size, images):
    x, y, _ = common.load_images(images)
    if framework == "tinycnn":
        model = common.tinycnn_model()
        tinycnn_epoch(model, x, y, batch_size, 0)
    else:
        import torch
        model, opt = common.torch_model()
        common.torch_epoch(model, opt, torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
                           torch.from_numpy(y), batch_size, 0)
    return {"peak_rss_mb": common.peak_rss_mb()}


def worker_jit(batch_size):
    """First epoch minus steady epoch on 20 batches: the time spent compiling (or loading) kernels."""
    start = time.perf_counter()
    import tinycnn  # noqa: F401
    import_s = time.perf_counter() - start
    x, y, _ = common.load_images(20 * batch_size)
    model = common.tinycnn_model()
    first = common.timed(model.fit, x, y, epochs=1, batch_size=batch_size, verbose=0, validation_split=0.1)
    second = common.timed(model.fit, x, y, epochs=1, batch_size=batch_size, verbose=0, validation_split=0.1)
    return {"import_s": import_s, "first_s": first, "steady_s": second, "jit_s": first - second}


def jit_overhead(rounds, checkouts):
    """Median cold and warm JIT overhead of each checkout (None: this one), alternating."""
    times = {(c, cache): [] for c in checkouts for cache in ("cold", "warm")}
    for _ in range(rounds):
        for checkout in checkouts:
            with tempfile.TemporaryDirectory() as cache_dir:
                env = {"NUMBA_CACHE_DIR": cache_dir}
                for cache in ("cold", "warm"):
                    times[(checkout, cache)].append(run_worker(["--worker", "jit"], env, checkout))
    rows = []
    for (checkout, cache), runs in times.items():
        rows.append({"checkout": checkout or "this one", "cache": cache,
                     **{k: common.median([r[k] for r in runs]) for k in ("import_s", "jit_s", "steady_s")},
                     "jit_all": [r["jit_s"] for r in runs], "each": " ".join(f"{r['jit_s']:.2f}" for r in runs)})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--arch", type=arch_name, choices=ARCHS, default="keras",
                   help="the network timed (in both frameworks) for the steady state; memory and JIT "
                        "use the Keras CNN")
    p.add_argument("--augment", action="store_true",
                   help="the steady state with the example's augmentation in front of the network, in "
                        "tinycnn and (common.torch_augment) in PyTorch; memory and JIT run without it")
    p.add_argument("--batch-sizes", type=int, nargs="+")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per framework and batch size")
    p.add_argument("--images", type=int, default=60000)
    p.add_argument("--no-torch", action="store_true", help="time tinycnn alone")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-jit", action="store_true")
    p.add_argument("--jit-only", action="store_true", help="measure the JIT overhead alone")
    p.add_argument("--jit-rounds", type=int, default=3, help="cold and warm pairs per checkout (median)")
    p.add_argument("--jit-baseline", metavar="DIR", type=common.checkout,
                   help="another checkout whose JIT overhead to measure in turn")
    p.add_argument("--scaling", action="store_true", help="also time batch 16 to 256 on 12,000 images")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--worker", choices=["memory-tinycnn", "memory-torch", "jit"], help=argparse.SUPPRESS)
    p.add_argument("--worker-batch", type=int, default=32, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker == "jit":
        print(json.dumps(worker_jit(args.worker_batch)))
        return
    if args.worker:
        print(json.dumps(worker_memory(args.worker.split("-")[1], args.worker_batch, args.images)))
        return

    batch_sizes = args.batch_sizes or ([32, 128, 512] if args.device == "gpu" else [32, 128])
    use_torch = common.torch_available() and not args.no_torch
    if use_torch and args.device == "gpu":
        import torch
        use_torch = torch.cuda.is_available()      # a CPU-only PyTorch cannot be compared on the GPU
    if use_torch:
        import torch
        from tinycnn.parallel import cpu_count
        torch.set_num_threads(cpu_count())      # as many threads as tinycnn's fit uses
    x, y, source = common.load_images(args.images)
    info = common.machine()
    print(f"machine: {info}")
    print(f"BLAS: {common.blas_info()}")
    print(f"data: {source}, {len(x)} images; device {args.device}; "
          f"{'PyTorch in the same run' if use_torch else 'PyTorch not installed or --no-torch'}")
    network = f"{args.arch} network{' with --augment' if args.augment else ''}"
    print(f"steady state: the {network}")
    results = {"machine": info, "data": source, "images": len(x), "device": args.device,
               "arch": args.arch, "augment": args.augment}

    if not args.jit_only:
        rows = steady_state(x, y, batch_sizes, args.epochs, args.device, use_torch, args.arch, args.augment)
        results["epochs"] = rows
        print(f"\nSeconds per epoch of the {network}, median of {args.epochs} (device {args.device}):")
        common.print_table(rows, [("batch", "batch", "{}"), ("tinycnn_s", "tinycnn s/epoch", "{:.1f}"),
                                  ("tinycnn_img_s", "images/s", "{:,.0f}"), ("torch_s", "PyTorch s/epoch", "{:.1f}"),
                                  ("torch_img_s", "images/s", "{:,.0f}"), ("ratio", "tinycnn/PyTorch", "{:.2f}")])

    if args.scaling and not args.jit_only:
        n = min(12000, len(x))
        print(f"\nScaling: batch 16 to 256 on {n} images", flush=True)
        scaling = steady_state(x[:n], y[:n], [16, 32, 64, 128, 256], args.epochs, args.device, use_torch,
                               args.arch, args.augment)
        results["scaling"] = scaling
        print(f"\nSeconds per epoch of {n} images, the {network}, median of {args.epochs} (device {args.device}):")
        common.print_table(scaling, [("batch", "batch", "{}"), ("tinycnn_s", "tinycnn s/epoch", "{:.2f}"),
                                     ("torch_s", "PyTorch s/epoch", "{:.2f}"), ("ratio", "tinycnn/PyTorch", "{:.2f}")])

    if not args.skip_memory and not args.jit_only and args.device == "cpu":
        mem = [{"framework": "tinycnn", **run_worker(["--worker", "memory-tinycnn", "--images", str(args.images)])}]
        if use_torch:
            mem.append({"framework": "PyTorch",
                        **run_worker(["--worker", "memory-torch", "--images", str(args.images)])})
        results["memory"] = mem
        print(f"\nPeak resident memory, one process loading {args.images} images and training one epoch (batch 32):")
        common.print_table(mem, [("framework", "framework", "{}"), ("peak_rss_mb", "peak RSS MB", "{:.0f}")])

    if not args.skip_jit and args.device == "cpu":
        jit = jit_overhead(args.jit_rounds, [None] + ([args.jit_baseline] if args.jit_baseline else []))
        results["jit"] = jit
        print(f"\nJIT overhead: the first epoch (20 batches of 32) minus the same epoch again, median of "
              f"{args.jit_rounds}:")
        common.print_table(jit, [("checkout", "checkout", "{}"), ("cache", "Numba cache", "{}"),
                                 ("import_s", "import s", "{:.2f}"), ("jit_s", "JIT overhead s", "{:.2f}"),
                                 ("each", "each run s", "{}"), ("steady_s", "steady epoch s", "{:.2f}")])
    common.write_json(args.json, results)


if __name__ == "__main__":
    main()
