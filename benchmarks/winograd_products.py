"""Winograd's matrix products, as BLAS runs them: the figures behind the shapes the kernels choose.

    python benchmarks/winograd_products.py                  # bn-dropout's second convolution, 16 images
    python benchmarks/winograd_products.py --images 64 --channels 32 --filters 64

A Winograd convolution's time is mostly its matrix products: one per position of the transformed
tile (16 for F(2×2, 3×3), 36 for F(4×4, 3×3)), each (tiles × C) @ (C × F) forward, and two like
it backward (dU = Vᵀ dM, a sum over the tiles; dV = dM Uᵀ). This times, on one thread:
1. OpenBLAS's time per row against the number of rows of such a product (C and F as given);
2. F(2×2, 3×3)'s three products, written as ``kernels/winograd.py`` first wrote them (one product
   over all tiles, the result written tile-major, Uᵀ a transposed view) and as it writes them now
   (blocks of at most ``winograd.ROWS`` tiles, Uᵀ contiguous, dU summed block by block);
3. F(4×4, 3×3)'s three products (``kernels/winograd_conv.py``), which do 36 / 64 of the work.
Each figure is the median of --repeat runs.
"""

import argparse

import common
import numpy as np
from threadpoolctl import threadpool_limits

from tinycnn.kernels import winograd


def ms(fn, repeat):
    return common.bench(fn, repeat) * 1e3


def products(positions, tiles, c, f, blocked, rng, repeat):
    """(forward, dU, dV) ms for ``positions`` products over ``tiles`` tiles, tile-major storage."""
    v = rng.random((tiles, positions, c), dtype=np.float32).transpose(1, 0, 2)
    u = rng.random((positions, c, f), dtype=np.float32)
    dm = rng.random((tiles, positions, f), dtype=np.float32).transpose(1, 0, 2)
    if blocked:
        return (ms(lambda: winograd._matmul_tile_major(v, u), repeat),
                ms(lambda: winograd._matmul_over_tiles(v, dm), repeat),
                ms(lambda: winograd._matmul_tile_major(dm, u.transpose(0, 2, 1)), repeat))

    def whole(a, b):
        out = np.empty((a.shape[1], positions, b.shape[2]), dtype=a.dtype).transpose(1, 0, 2)
        return np.matmul(a, b, out=out)
    return (ms(lambda: whole(v, u), repeat), ms(lambda: np.matmul(v.transpose(0, 2, 1), dm), repeat),
            ms(lambda: whole(dm, u.transpose(0, 2, 1)), repeat))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--size", type=int, default=11, help="the convolution's output, size × size")
    p.add_argument("--repeat", type=int, default=200)
    args = p.parse_args()
    c, f, rng = args.channels, args.filters, np.random.default_rng(0)
    print(f"machine: {common.machine()}")
    print(f"BLAS: {common.blas_info()}; one thread\n")
    with threadpool_limits(limits=1, user_api="blas"):
        u = rng.random((16, c, f), dtype=np.float32)
        rows = []
        for t in (256, 384, 480, 512, 576, 768, 1152):
            a = rng.random((16, t, c), dtype=np.float32)
            rows.append({"rows": t, "per100": ms(lambda: np.matmul(a, u), args.repeat) / t * 100})
        print(f"1. 16 products (rows × {c}) @ ({c} × {f}), contiguous: ms per 100 rows")
        common.print_table(rows, [("rows", "rows", "{}"), ("per100", "ms / 100 rows", "{:.4f}")])

        t2 = args.images * (-(-args.size // 2)) ** 2
        t4 = args.images * (-(-args.size // 4)) ** 2
        rows = [{"what": f"F(2×2, 3×3), {t2} tiles, as first written",
                 "ms": products(16, t2, c, f, False, rng, args.repeat)},
                {"what": f"F(2×2, 3×3), {t2} tiles, in blocks (winograd.ROWS = {winograd.ROWS})",
                 "ms": products(16, t2, c, f, True, rng, args.repeat)},
                {"what": f"F(4×4, 3×3), {t4} tiles, in blocks", "ms": products(36, t4, c, f, True, rng, args.repeat)}]
        for r in rows:
            r["forward"], r["du"], r["dv"] = r.pop("ms")
            r["sum"] = r["forward"] + r["du"] + r["dv"]
        print(f"\n2.-3. the three products of a {args.size}×{args.size} convolution of {args.images} images, "
              f"{c} -> {f} channels, ms")
        common.print_table(rows, [("what", "products", "{}"), ("forward", "V @ U", "{:.3f}"),
                                  ("du", "Vᵀ dM", "{:.3f}"), ("dv", "dM Uᵀ", "{:.3f}"), ("sum", "sum", "{:.3f}")])


if __name__ == "__main__":
    main()
