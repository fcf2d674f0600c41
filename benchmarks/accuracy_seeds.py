"""Test accuracy of the example's 5-epoch run over several seeds: how much is the network, how much the draw.

    python benchmarks/accuracy_seeds.py --seeds 0 1 2                  # the example as it runs
    python benchmarks/accuracy_seeds.py --seeds 0 1 2 3 4 5 6 7 --im2col --torch --jobs 8
    python benchmarks/accuracy_seeds.py --seeds 0 1 2 3 --baseline /tmp/before   # against another checkout
    python benchmarks/accuracy_seeds.py --seeds 0 1 2 --arch bn-dropout --torch  # the stronger network

One run of ``examples/mnist.py`` (real Fashion-MNIST from Debian's dataset-fashion-mnist, the
Keras MNIST CNN, 5 epochs, batch 32) gives one test accuracy, and the seed moves it by about half a
point: the weights' start, the shuffling, and the rounding of every step all follow from it. A
change that alters rounding only (a faster kernel that sums in another order) draws a new
trajectory too. So this runs the example once per seed and prints each accuracy and their mean,
minimum and maximum, for:
- the example as it is (in the Keras MNIST CNN both convolution blocks run Winograd's F(2×2, 3×3));
- with --im2col, the same runs with Winograd switched off, so that both blocks take the im2col
  path, the one the layers' own docstrings describe;
- with --torch, the same network and recipe in PyTorch (``accuracy_torch.py --arch keras``; its own
  weight initialisation and random streams), for scale;
- with --baseline DIR, the example of another checkout (``git worktree add /tmp/before <commit>``),
  with that checkout's tinycnn: did a change move the accuracy, or only the draw?
Each run is its own process. --jobs N runs N at a time, each pinned to its own --cores-per-job
cores (Linux taskset), for a machine with many cores; the default runs one at a time on all of them.
"""

import argparse
import os
import queue
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import common
from examples.mnist import ARCHS, arch_name

EXAMPLE = os.path.join(common.ROOT, "examples", "mnist.py")
TORCH = os.path.join(common.ROOT, "benchmarks", "accuracy_torch.py")
# The example with winograd.applies replaced: every Conv2D -> ReLU -> MaxPool2D block takes im2col.
WITHOUT_WINOGRAD = ("import sys, runpy; from tinycnn.kernels import winograd; "
                    "winograd.applies = lambda *args: False; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")


def command(variant, seed, epochs, out, baseline, arch="keras"):
    data = ["--dataset", "fashion-mnist", "--data", common.FASHION_DIR, "--epochs", str(epochs),
            "--seed", str(seed), "--out", out]
    if arch != "keras":         # the default, which a checkout from before --arch keras also runs
        data += ["--arch", arch]
    if variant == "winograd":
        return [sys.executable, EXAMPLE, *data]
    if variant == "baseline":
        return [sys.executable, os.path.join(baseline, "examples", "mnist.py"), *data]
    if variant == "im2col":
        return [sys.executable, "-c", WITHOUT_WINOGRAD, EXAMPLE, *data]
    return [sys.executable, TORCH, "--arch", arch, "--epochs", str(epochs), "--seed", str(seed)]


def run(variant, seed, epochs, out, cores, baseline=None, arch="keras"):
    cmd = command(variant, seed, epochs, os.path.join(out, f"{variant}-seed{seed}"), baseline, arch)
    if cores:
        cmd = ["taskset", "-c", ",".join(map(str, cores))] + cmd
    env = {**os.environ, "PYTHONPATH": baseline if variant == "baseline" else common.ROOT}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.findall(r"[Tt]est[ _]accuracy:? ([0-9.]+)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{variant} seed {seed} failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    accuracy = float(found[-1])                 # the example prints it once; PyTorch after every epoch
    print(f"  {variant:8s} seed {seed}: {accuracy:.4f}", flush=True)
    return accuracy


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--arch", type=arch_name, choices=ARCHS, default="keras",
                   help="the example's network, in tinycnn and (with --torch) in PyTorch")
    p.add_argument("--im2col", action="store_true", help="also run with Winograd switched off")
    p.add_argument("--torch", action="store_true", help="also run the same network in PyTorch")
    p.add_argument("--baseline", metavar="DIR", type=common.checkout,
                   help="also run the example of another checkout")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each on its own cores")
    p.add_argument("--cores-per-job", type=int, default=2)
    p.add_argument("--out", default=os.path.join(common.ROOT, "runs", "accuracy_seeds"),
                   help="where the example's runs write their files")
    args = p.parse_args()
    if not os.path.isdir(common.FASHION_DIR):
        sys.exit(f"This needs the real Fashion-MNIST in {common.FASHION_DIR}: apt-get install dataset-fashion-mnist")
    variants = ["winograd"] + ["im2col"] * args.im2col + ["torch"] * args.torch + ["baseline"] * bool(args.baseline)
    jobs = [(v, s) for s in args.seeds for v in variants]
    free = queue.Queue()            # the core sets not in use; None: all cores, one run at a time
    for k in range(args.jobs):
        free.put(list(range(k * args.cores_per_job, (k + 1) * args.cores_per_job)) if args.jobs > 1 else None)

    def work(job):
        cores = free.get()
        try:
            return run(*job, args.epochs, args.out, cores, args.baseline, args.arch)
        finally:
            free.put(cores)

    print(f"{len(jobs)} runs of {args.epochs} epochs, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(work, jobs))

    rows = []
    for variant in variants:
        acc = [a for (v, _), a in zip(jobs, results) if v == variant]
        rows.append({"variant": variant, "each": " ".join(f"{a:.4f}" for a in acc), "mean": statistics.mean(acc),
                     "min": min(acc), "max": max(acc)})
    print(f"\nTest accuracy after {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}:")
    common.print_table(rows, [("variant", "variant", "{}"), ("each", "each seed", "{}"), ("mean", "mean", "{:.4f}"),
                              ("min", "min", "{:.4f}"), ("max", "max", "{:.4f}")])


if __name__ == "__main__":
    main()
