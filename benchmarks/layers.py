"""Where a training step's time goes: median forward and backward time of each layer.

    python benchmarks/layers.py                 # the seed model, batch 32
    python benchmarks/layers.py --batch 128 --json layers.json
    python benchmarks/layers.py --arch bn-dropout --augment

Each step runs exactly what ``fit`` runs (logits, fused loss, backward with no gradient for the
data, so none through the augmentation layers, Adam); every layer's forward and backward are
timed separately, over --steps steps after a warm-up, and the table gives the medians and each
one's share of the whole step.
"""

import argparse
import time

import common
import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--arch", choices=["seed", "bn-dropout"], default="seed")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    model = common.tinycnn_model(args.arch, args.augment)
    x, y, _ = common.load_images(args.batch * 20)
    layers = model.layers
    first = model._first_trainable_index()        # where fit's backward pass stops
    times = {(layer.name, d): [] for layer in layers for d in ("forward", "backward")}
    times.update({("loss", "forward"): [], ("loss", "backward"): [], ("adam", "update"): []})

    def clock(key, fn, *a, **kw):
        start = time.perf_counter()
        out = fn(*a, **kw)
        times[key].append(time.perf_counter() - start)
        return out

    for step in range(args.steps + 20):
        if step == 20:                                   # warm-up done: forget it
            for v in times.values():
                v.clear()
        i = step % 20
        h, yb = x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch]
        for layer in layers[:-1]:
            h = clock((layer.name, "forward"), layer.forward, h, training=True)
        h = clock((layers[-1].name, "forward"), layers[-1].forward, h, training=True, apply_activation=False)
        clock(("loss", "forward"), model.loss.forward, h, yb)
        d = clock(("loss", "backward"), model.loss.backward)
        d = clock((layers[-1].name, "backward"), layers[-1].backward, d, apply_activation=False)
        for layer in reversed(layers[first + 1:-1]):
            d = clock((layer.name, "backward"), layer.backward, d)
        clock((layers[first].name, "backward"), layers[first].backward, d, input_grad=False)
        clock(("adam", "update"), model.optimizer.step, model._trainable_layers())

    med = {k: common.median(v) * 1e3 for k, v in times.items() if v}     # layers before `first`: no backward
    total = sum(med.values())
    rows = []
    for layer in layers:
        f, b = med[(layer.name, "forward")], med.get((layer.name, "backward"))
        rows.append({"layer": f"{layer.name} ({type(layer).__name__})", "forward_ms": f, "backward_ms": b,
                     "share": 100 * (f + (b or 0.0)) / total})
    rows.append({"layer": "loss (SoftmaxCrossEntropy)", "forward_ms": med[("loss", "forward")],
                 "backward_ms": med[("loss", "backward")],
                 "share": 100 * (med[("loss", "forward")] + med[("loss", "backward")]) / total})
    rows.append({"layer": "Adam update", "forward_ms": None, "backward_ms": med[("adam", "update")],
                 "share": 100 * med[("adam", "update")] / total})
    print(f"{args.arch} model{' with augmentation' if args.augment else ''}, batch {args.batch}, median of {args.steps} steps; machine {common.machine()}")
    common.print_table(rows, [("layer", "layer", "{}"), ("forward_ms", "forward ms", "{:.3f}"),
                              ("backward_ms", "backward ms", "{:.3f}"), ("share", "share of step", "{:.1f}%")])
    print(f"step total {total:.2f} ms -> {total * 60000 / args.batch / 1000:.1f} s per 60,000-image epoch")
    common.write_json(args.json, {"batch": args.batch, "rows": rows, "step_ms": total})


if __name__ == "__main__":
    main()
