"""Shared by the benchmark scripts: data, the example's models in tinycnn and in PyTorch, timing, output."""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing: python benchmarks/X.py
    sys.path.insert(0, ROOT)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def checkout(path):
    """argparse type of --baseline and --jit-baseline: another checkout of tinycnn (``git worktree add
    /tmp/before <commit>``), as an absolute path. Its scripts are run with PYTHONPATH set to it, so
    that they import that checkout's tinycnn, not this one's."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "tinycnn", "__init__.py")):
        raise argparse.ArgumentTypeError(f"{path} is not a checkout of tinycnn (it has no tinycnn/__init__.py)")
    return path


def load_images(n=60000, seed=0):
    """(x float32 (n, 28, 28, 1) in [0, 1], y int64 (n,), source): real Fashion-MNIST when the
    Debian package is installed, else synthetic images of the same shape."""
    if os.path.isdir(FASHION_DIR):
        from tinycnn.datasets import fashion_mnist
        (x, y), _ = fashion_mnist.load_data(path=FASHION_DIR)
        if n > len(x):
            reps = -(-n // len(x))
            x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
        x = x[:n].astype(np.float32)
        x /= 255                                   # in place: no second float copy
        return x[..., None], y[:n].astype(np.int64), FASHION_DIR
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n), "synthetic"


def tinycnn_model(arch="keras", augment=False, seed=0):
    """A model ``examples/mnist.py`` trains (``--arch``, ``--augment``), compiled as it compiles
    it: what is timed here is what a user runs."""
    from examples.mnist import build_model
    from tinycnn.optimizers import Adam

    model = build_model(arch, augment=augment, seed=seed)
    model.compile(Adam(1e-3), "sparse_categorical_crossentropy")
    return model


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def torch_network(arch="keras"):
    """The example's networks in PyTorch (channels-first). "bn-dropout": BatchNorm2d's defaults are
    the momentum 0.1 / eps 1e-5 that build_model gives BatchNormalization (0.9 in Keras's convention)."""
    from torch import nn

    if arch == "keras":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def torch_model(arch="keras", seed=0, device="cpu"):
    """One of the example's networks in PyTorch (``torch_network``), with Keras's Adam epsilon."""
    import torch

    torch.manual_seed(seed)
    model = torch_network(arch).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    return model, optimizer


def torch_augment_theta(angles, dy, dx, h, w):
    """``affine_grid``'s theta (N, 2, 3) for tinycnn's RandomRotation by ``angles`` (radians,
    counter-clockwise as displayed, about the centre ((H-1)/2, (W-1)/2)) followed by its
    RandomTranslation by ``dy`` rows down and ``dx`` columns right, composed into one map.

    In pixels, output (r, c) reads the input at centre + R(θ) (c - dx - cx, r - dy - cy), as the
    two layers' transforms do one after the other (``layers/augmentation.py``); divided by
    (cx, cy), that is affine_grid's coordinates with align_corners=True (-1 and 1 are the centres
    of the first and last pixels). Images of at least 2x2 pixels."""
    import torch

    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([
        torch.stack([cos, -sin * (cy / cx), (sin * dy - cos * dx) / cx], dim=1),
        torch.stack([sin * (cx / cy), cos, -(sin * dx + cos * dy) / cy], dim=1)], dim=1)


def torch_augment(x, rotation=0.02, height=0.05, width=0.05):
    """The example's augmentation (``RandomRotation(0.02), RandomTranslation(0.05, 0.05)``) on a
    batch x (N, C, H, W) in PyTorch, as a PyTorch user would write it without torchvision: one
    random transform per image, drawn on x's device, and one ``affine_grid`` + ``grid_sample``.

    What matches tinycnn's layers: the ranges and their uniform draws (an angle in
    [-rotation, rotation) of a full turn, shifts in [-height*H, height*H) rows and
    [-width*W, width*W) columns, not rounded), the rotation's centre and direction, the order
    (rotate, then shift), bilinear interpolation, and the fill: a neighbour outside the image
    reads 0 (padding_mode="zeros", one neighbour at a time, as tinycnn's fill_value=0.0).
    What does not: the random streams (torch's generator, not NumPy's); the arithmetic (float32
    here, float64 transforms there); and tinycnn warps twice, one layer after the other, each
    interpolating, where this composes both maps and interpolates once, so its images are a
    little less blurred and it does one warp's work, not two. On a GPU this runs there, where
    tinycnn's layers warp CuPy batches on the CPU and copy them back (``kernels/affine.py``)."""
    import math

    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    u = torch.rand(3, n, device=x.device, dtype=x.dtype) * 2 - 1         # uniform in [-1, 1)
    theta = torch_augment_theta(u[0] * (rotation * 2 * math.pi), u[1] * (height * h), u[2] * (width * w), h, w)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def torch_epoch(model, optimizer, x, y, batch_size, seed, device="cpu", augment=False):
    """One epoch of plain PyTorch training: shuffled index batches of pre-made tensors; with
    ``augment``, each batch goes through ``torch_augment`` first (on the device)."""
    import torch
    from torch import nn

    loss_fn = nn.CrossEntropyLoss()
    n = len(x)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    model.train()
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        if device != "cpu":
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if augment:
            xb = torch_augment(xb)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()


def median(values):
    return statistics.median(values)


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB.

    Linux's VmHWM (high-water mark) belongs to this program's own memory map. getrusage's
    ru_maxrss is only the fallback: on Linux a child started with fork+exec inherits its parent's
    figure, so a worker launched from a big parent process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024        # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(fn, repeat):
    """Median seconds of ``repeat`` calls of fn(), after one untimed call (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def print_table(rows, columns):
    """rows: list of dicts; columns: list of (key, header, format)."""
    cells = [[h for _, h, _ in columns]] + [[fmt.format(r[k]) if r.get(k) is not None else "-"
                                              for k, _, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path, data):
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
        print(f"wrote {path}")


def blas_info():
    """NumPy's BLAS as threadpoolctl sees it: library, version, the kernel it chose, threads; and
    whether OPENBLAS_CORETYPE forces a kernel (the figures we quote have it unset)."""
    from threadpoolctl import threadpool_info
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    text = ", ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture')} "
                     f"threads {i.get('num_threads')}" for i in blas) or "none found"
    return text + (f"; forced by {forced}" if forced else "; OPENBLAS_CORETYPE unset")


def machine():
    import platform

    import numba
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "processor": platform.processor() or platform.machine()}
    if torch_available():
        import torch
        info["torch"] = torch.__version__
    return info
