"""Test accuracy of the example's networks and recipes trained in PyTorch instead of tinycnn.

    pip install torch==2.13.0         # only for this comparison; tinycnn never imports it
    python benchmarks/accuracy_torch.py --arch bn-dropout --schedule cosine
    python benchmarks/accuracy_torch.py --arch bn-dropout --augment --schedule cosine

When a network trained by examples/mnist.py reaches some accuracy, is that the network and its
training recipe, or tinycnn? This trains the same network in PyTorch, on the same data and split as
the example (real Fashion-MNIST from Debian's dataset-fashion-mnist, the last 10% of the training
set held out), with the same recipe: Adam (Keras's epsilon), batch size, epochs, a constant or
cosine learning rate per step, and, with --augment, tinycnn's own augmentation layers from the
example's build_model applied to every training batch. It prints validation and test accuracy after
every epoch. What differs: PyTorch's default weight initialisation and its random streams.
"""

import argparse
import math
import os
import sys
import time

import common
import numpy as np
from examples.mnist import ARCHS, arch_name


def accuracy(model, x, y):
    import torch

    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((predicted == y).float().mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=arch_name, choices=ARCHS, default="bn-dropout",
                   help="as examples/mnist.py's (--arch seed, the old name of keras, is deprecated)")
    p.add_argument("--augment", action="store_true", help="the example's RandomRotation and RandomTranslation")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not common.torch_available():
        sys.exit("PyTorch is not installed: pip install torch==2.13.0")
    if not os.path.isdir(common.FASHION_DIR):
        sys.exit(f"This needs the real Fashion-MNIST in {common.FASHION_DIR}: "
                 "apt-get install dataset-fashion-mnist")
    import torch
    from examples.mnist import VALIDATION_SPLIT, build_model
    from tinycnn.datasets import fashion_mnist
    from tinycnn.layers import RandomRotation, RandomTranslation
    from tinycnn.parallel import cpu_count
    from tinycnn.schedules import CosineDecay

    torch.manual_seed(args.seed)
    torch.set_num_threads(cpu_count())          # the cores this process may run on (taskset, containers)
    (x_all, y_all), (x_test, y_test) = fashion_mnist.load_data(path=common.FASHION_DIR)
    n_train = int(len(x_all) * (1 - VALIDATION_SPLIT))

    def nchw(a):
        return torch.from_numpy((a.astype(np.float32) / 255)[:, None])

    x, y = x_all[:n_train].astype(np.float32)[..., None] / 255, y_all[:n_train].astype(np.int64)
    xv, yv = nchw(x_all[n_train:]), torch.from_numpy(y_all[n_train:].astype(np.int64))
    xt, yt = nchw(x_test), torch.from_numpy(y_test.astype(np.int64))
    # The example's augmentation layers, exactly as it builds them (seeded), applied to NHWC batches.
    augment = [layer for layer in build_model(args.arch, True, args.seed).layers
               if isinstance(layer, (RandomRotation, RandomTranslation))] if args.augment else []

    model = common.torch_network(args.arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    schedule = CosineDecay(args.lr, decay_steps=args.epochs * steps_per_epoch)
    rng = np.random.default_rng(args.seed)
    print(f"PyTorch {torch.__version__}: {args.arch}, augment={args.augment}, schedule={args.schedule}, "
          f"lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, {n_train} training images")
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(n_train)
        for i in range(steps_per_epoch):
            if args.schedule == "cosine":       # the rate tinycnn's optimizer would use at this step
                for group in optimizer.param_groups:
                    group["lr"] = schedule(epoch * steps_per_epoch + i)
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            xb = x[idx]
            for layer in augment:
                xb = layer.forward(xb, training=True)
            xb = torch.from_numpy(np.ascontiguousarray(xb.transpose(0, 3, 1, 2)))
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb), torch.from_numpy(y[idx])).backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1:2d}: {seconds:5.1f} s  val_accuracy {accuracy(model, xv, yv):.4f}  "
              f"test_accuracy {accuracy(model, xt, yt):.4f}", flush=True)


if __name__ == "__main__":
    main()
