"""Train the classic Keras MNIST CNN with tinycnn, and show what it learned.

    python examples/mnist.py                         # MNIST, 5 epochs, batch 32, as in Keras
    python examples/mnist.py --dataset fashion-mnist --data /usr/share/datasets/fashion-mnist
    python examples/mnist.py --epochs 1 --limit 2000 # a quick look
    python examples/mnist.py --arch bn-dropout --augment --epochs 10   # the stronger network

It downloads mnist.npz (the file Keras uses) once into ~/.tinycnn/datasets, checks its SHA-256,
trains with a held-out 10% for validation, evaluates once on the test set, and writes to a new
folder under runs/: history.png, confusion_matrix.png, predictions.png, filters.png,
feature_maps.png, mistakes.png, model.npz and metrics.json. Ctrl-C stops training after the
current batch and still writes all of them for the epochs that finished. Every option is in --help.
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VALIDATION_SPLIT = 0.1        # the last 10% of the training set, held out as Keras's fit holds it out
DEFAULT_LR = 1e-3             # Adam's default, as in Keras

#: The networks --arch chooses between: "keras", the Keras MNIST CNN, and "bn-dropout", the
#: stronger network of the PyTorch version of this example.
ARCHS = ("keras", "bn-dropout")
#: Old names that still work, and the names they stand for. "seed" read like the --seed option.
DEPRECATED_ARCHS = {"seed": "keras"}

#: What to do when the data cannot be loaded, in this script's options, for each dataset.
WAYS_OUT = {
    "mnist": "--data PATH for a local mnist.npz, or --data-url URL --sha256 HEX for a mirror.",
    "fashion-mnist": "--data DIR for a local copy of the four IDX files (gzipped or not), or "
                     "--data-url BASE_URL for a mirror of the official files.",
}


def whole_number(minimum):
    """An argparse type: a whole number >= minimum, or a clear usage error (exit status 2)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number such as 1e-3, got {text}")
    return value


def http_url(text):
    """An argparse type: an http:// or https:// URL, the only ones the loaders download. A file
    on this machine, as a file:// URL or a plain path, is answered with the --data option."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return text
    hint = ""
    if scheme == "file" or os.path.exists(text):
        local = url2pathname(urlsplit(text).path) if scheme == "file" else text
        hint = f"; for a copy on this machine, pass its path with --data {local}"
    raise argparse.ArgumentTypeError(f"only http and https URLs are downloaded, got {text!r}{hint}")


def arch_name(text):
    """An argparse type for --arch: the name, with an old one replaced by its new name (and a note)."""
    if text in DEPRECATED_ARCHS:
        print(f"note: --arch {text} is deprecated; it is now called --arch {DEPRECATED_ARCHS[text]}",
              file=sys.stderr)
    return DEPRECATED_ARCHS.get(text, text)


def sha256_hex(text):
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"must be 64 hexadecimal digits (as sha256sum prints), got "
                                         f"{text!r} ({len(text)} characters)")
    return text.lower()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has one: no "(default: None)"."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


#: Fashion-MNIST's IDX file names, gzipped or not: recognised when --dataset is missing.
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def holds_idx_files(path):
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n + ext)) for n in IDX_NAMES for ext in ("", ".gz"))
    return os.path.basename(path).removesuffix(".gz") in IDX_NAMES


def parse_args(argv=None):
    """The options, every one checked here: a mistake exits with status 2 before anything loads."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=whole_number(1), default=5, help="passes over the training set")
    p.add_argument("--batch-size", type=whole_number(1), default=32, help="images per gradient step")
    p.add_argument("--lr", type=learning_rate, default=DEFAULT_LR,
                   help="Adam's learning rate (the initial one, with a schedule)")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="constant: the same learning rate throughout, as in Keras; cosine: from --lr "
                        "down to 0 along half a cosine wave over the whole run")
    p.add_argument("--seed", type=whole_number(0), default=0, help="seed for the weights and the shuffling")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
                   help="mnist: handwritten digits; fashion-mnist: pictures of clothes")
    p.add_argument("--data", metavar="PATH",
                   help="a local mnist.npz, or a directory with the four Fashion-MNIST IDX files")
    p.add_argument("--data-url", metavar="URL", type=http_url,
                   help="a mirror: the mnist.npz URL (give --sha256 too), or for fashion-mnist "
                        "the base URL of the four .gz files (checked against the official hashes "
                        "of their decompressed contents)")
    p.add_argument("--sha256", metavar="HEX", type=sha256_hex,
                   help="SHA-256 of the mnist.npz at --data-url (64 hex digits)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where downloads are kept (default: $TINYCNN_HOME/datasets or ~/.tinycnn/datasets)")
    p.add_argument("--out", metavar="DIR", help="where this run's files go (default: a new folder under runs/)")
    p.add_argument("--limit", type=whole_number(2), metavar="N",
                   help="train on the first N training images only (at least 2: 10%% are held out "
                        "for validation)")
    p.add_argument("--arch", type=arch_name, choices=ARCHS, default="keras",
                   help="keras: the Keras MNIST CNN; bn-dropout: with batch normalisation and dropout "
                        "(--arch seed, the old name of keras, still works but is deprecated)")
    p.add_argument("--augment", action="store_true",
                   help="random rotations (up to ±7°) and shifts (up to ±5%% of the size) while training")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to train")
    p.add_argument("--show", action="store_true", help="also open the figures in windows")
    args = p.parse_args(argv)
    if args.sha256 and not args.data_url:
        p.error("--sha256 goes with --data-url (the hash of the mirror's file)")
    if args.dataset == "mnist" and args.data_url and not args.sha256:
        p.error("--data-url needs --sha256: every download is checked against its hash")
    if args.dataset == "fashion-mnist" and args.sha256:
        p.error("--sha256 is for mnist.npz; the four Fashion-MNIST files are checked against the "
                "official hashes of their decompressed contents, so a faithful mirror needs none")
    if args.data is not None:
        if not os.path.exists(args.data):
            p.error(f"--data {args.data}: no such file or directory")
        if args.dataset == "mnist" and holds_idx_files(args.data):
            p.error(f"--data {args.data} holds Fashion-MNIST's IDX files: add --dataset fashion-mnist")
        if args.dataset == "fashion-mnist" and not os.path.isdir(args.data):
            p.error(f"--data {args.data}: for fashion-mnist, give the directory that holds the four IDX files")
    return args


def new_run_dir(base="runs"):
    """A folder under ``base`` named after the time, never one that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = os.path.join(base, stamp if k == 1 else f"{stamp}-{k}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not create a new run folder under {base!r}")


def missing_folders(path):
    """``path`` and those of its parent folders that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def prepare_out_dir(out):
    """Create the output folder before training, so a bad path fails in seconds, not after an hour.

    Returns the folder and the folders this created, deepest first (the run's own folder, runs/
    the first time), for remove_made_folders to take away if the run ends with nothing written.
    """
    try:
        made = missing_folders("runs" if out is None else out)
        path = new_run_dir() if out is None else out
        if out is None:
            made.insert(0, os.path.abspath(path))
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        sys.exit(f"error: cannot write to the output folder {out or 'runs/'!r} ({err.strerror}). "
                 "Choose another with --out DIR.")
    return path, made


def remove_made_folders(made):
    """Take away the folders prepare_out_dir made, deepest first, while they are empty: a run that
    fails before writing anything leaves no empty folder behind, and never removes one that was
    there before it or that holds a file (another run's, say)."""
    for folder in made:
        try:
            os.rmdir(folder)
        except OSError:                # not empty: it stays, and so do the folders above it
            return


def load_dataset(args):
    """(x_train, y_train), (x_test, y_test), class names, and a description of the source."""
    from tinycnn.datasets import fashion_mnist, mnist

    if args.dataset == "mnist":
        kwargs = {"path": args.data, "cache_dir": args.cache_dir}
        if args.data_url:
            kwargs.update(url=args.data_url, sha256=args.sha256)
        source = args.data or args.data_url or mnist.DEFAULT_URL
        return mnist.load_data(**kwargs), mnist.CLASS_NAMES, source
    kwargs = {"path": args.data, "cache_dir": args.cache_dir}
    if args.data_url:
        kwargs["base_url"] = args.data_url
    source = args.data or args.data_url or fashion_mnist.DEFAULT_BASE_URL
    return fashion_mnist.load_data(**kwargs), fashion_mnist.CLASS_NAMES, source


def build_model(arch, augment, seed):
    """The Keras MNIST CNN line for line ("keras"), or the PyTorch version's stronger network
    ("bn-dropout")."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, got {arch!r}")
    from tinycnn import Sequential
    from tinycnn.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                                RandomRotation, RandomTranslation, ReLU)

    # Augmentation layers change each training image a little (and nothing at test time):
    # a turn of up to 0.02 of a full circle (about 7°) and a shift of up to 5% of the size.
    layers = [RandomRotation(0.02), RandomTranslation(0.05, 0.05)] if augment else []
    if arch == "keras":
        layers += [
            Conv2D(32, 3, activation="relu"),
            MaxPool2D(2),
            Conv2D(64, 3, activation="relu"),
            MaxPool2D(2),
            Flatten(),
            Dense(64, activation="relu"),
            Dense(10, activation="softmax"),
        ]
    else:
        # The network starts as its source, the PyTorch version, starts it: PyTorch's default
        # initialisation of Conv2d and Linear ("torch_default"), and BatchNormalization with
        # PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5); Keras's are 0.99 and 1e-3.
        torch = dict(kernel_initializer="torch_default", bias_initializer="torch_default")
        layers += [
            Conv2D(32, 3, **torch), BatchNormalization(momentum=0.9, epsilon=1e-5), ReLU(), MaxPool2D(2),
            Conv2D(64, 3, **torch), BatchNormalization(momentum=0.9, epsilon=1e-5), ReLU(), MaxPool2D(2),
            Dropout(0.25),
            Flatten(),
            Dense(128, **torch), ReLU(),
            Dropout(0.5),
            Dense(10, activation="softmax", **torch),
        ]
    return Sequential(layers, input_shape=(28, 28, 1), seed=seed)


def conv_feature_maps(model, image):
    """What each convolution makes of one image (H, W, 1), in inference, after its ReLU:
    [(the convolution's name, its (H', W', F) output)]. The ReLU is the convolution's own
    (activation="relu") in the Keras MNIST CNN, and in bn-dropout the ReLU layer after it, once
    BatchNormalization has run."""
    from tinycnn.backend import to_device, to_numpy
    from tinycnn.layers import Conv2D, ReLU

    x, maps, conv = to_device(image[None], model.device), [], None
    for layer in model.layers:
        x = layer.forward(x, training=False)
        if isinstance(layer, Conv2D):
            conv = layer
        if conv is not None and (isinstance(layer, ReLU) or isinstance(conv.activation, ReLU)):
            maps.append((conv.name, to_numpy(x)[0]))
            conv = None
    return maps


def write_json(path, data):
    from tinycnn.files import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def main(argv=None):
    args = parse_args(argv)
    if args.device == "gpu":                       # fail before the data is loaded, not after
        from tinycnn.backend import require_cupy
        try:
            require_cupy()
        except RuntimeError as err:
            sys.exit(f"error: {err}")
    out, made = prepare_out_dir(args.out)

    import numba
    import numpy as np

    import tinycnn
    from tinycnn.datasets import DatasetError
    from tinycnn.optimizers import Adam
    from tinycnn.schedules import CosineDecay

    try:
        ((x_train, y_train), (x_test, y_test)), class_names, source = load_dataset(args)
    except (DatasetError, FileNotFoundError) as err:
        remove_made_folders(made)
        sys.exit(f"error: {err}\nWith this script: {WAYS_OUT[args.dataset]}")
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    # Preprocessing, as in the Keras example: pixels 0..255 -> floats in [0, 1], and a channel
    # axis, since images are (N, height, width, channels): (N, 28, 28) -> (N, 28, 28, 1).
    # (Dividing in place, /=, avoids a second full-size float copy of the training set.)
    x_train = x_train.astype("float32")
    x_train /= 255.0
    x_train = x_train[..., None]
    x_test = (x_test.astype("float32") / 255.0)[..., None]
    print(f"{args.dataset}: {len(x_train)} training and {len(x_test)} test images of shape {x_train.shape[1:]}")

    model = build_model(args.arch, args.augment, args.seed)
    if args.device != "cpu":
        try:
            model.to(args.device)
        except RuntimeError as err:
            sys.exit(f"error: {err}")
    model.summary()
    learning_rate = args.lr
    if args.schedule == "cosine":                   # one update per batch, over every epoch
        steps_per_epoch = math.ceil(int(len(x_train) * (1 - VALIDATION_SPLIT)) / args.batch_size)
        learning_rate = CosineDecay(args.lr, decay_steps=args.epochs * steps_per_epoch)
    model.compile(optimizer=Adam(learning_rate=learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    try:
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=VALIDATION_SPLIT, seed=args.seed)
    except FloatingPointError as err:      # diverged: fit's message says where and why
        remove_made_folders(made)
        sys.exit(f"error: {err}\nWith this script: try a lower --lr, such as --lr "
                 f"{min(args.lr / 10, DEFAULT_LR):g} (this run had --lr {args.lr:g}); the images are "
                 "already scaled to [0, 1].")

    if history.interrupted:
        where = history.interrupted_at
        partial = (f" (the weights include {where['batch']} of {where['batches']} batches of epoch "
                   f"{where['epoch']}, which the history does not list)" if where and where["batch"] else "")
        print(f"Training was interrupted; evaluating and saving what was learned so far{partial}.")
    test_loss, test_accuracy = model.evaluate(x_test, y_test)
    print(f"Test accuracy: {test_accuracy:.4f}")
    probs = model.predict(x_test)
    y_pred = probs.argmax(axis=1)

    from tinycnn import plotting
    from tinycnn.backend import to_numpy
    from tinycnn.layers import Conv2D

    paths = {
        "history": os.path.join(out, "history.png"),
        "confusion_matrix": os.path.join(out, "confusion_matrix.png"),
        "predictions": os.path.join(out, "predictions.png"),
        "filters": os.path.join(out, "filters.png"),
        "feature_maps": os.path.join(out, "feature_maps.png"),
        "mistakes": os.path.join(out, "mistakes.png"),
        "model": os.path.join(out, "model.npz"),
        "metrics": os.path.join(out, "metrics.json"),
    }
    print("Drawing the figures (history, filters, feature maps, mistakes, confusion matrix, "
          "predictions) ...", flush=True)
    if history.epoch:
        plotting.plot_history(history.history, path=paths["history"], show=args.show)
    else:
        del paths["history"]             # interrupted before the first epoch ended: no curves
    first_conv = next(layer for layer in model.layers if isinstance(layer, Conv2D))
    plotting.plot_filters(to_numpy(first_conv.params["kernel"]), path=paths["filters"], show=args.show,
                          layer_name=f"{first_conv.name}, the first convolution")
    plotting.plot_feature_maps(x_test[0], conv_feature_maps(model, x_test[0]), path=paths["feature_maps"],
                               show=args.show, activation="ReLU")
    plotting.plot_mistakes(x_test[..., 0], y_test, probs, class_names=class_names, path=paths["mistakes"],
                           show=args.show)
    plotting.plot_confusion_matrix(y_test, y_pred, class_names=class_names,
                                   path=paths["confusion_matrix"], show=args.show)
    plotting.plot_predictions(x_test[..., 0], y_test, probs=probs, class_names=class_names,
                              path=paths["predictions"], show=args.show, seed=args.seed)
    model.save(paths["model"])
    write_json(paths["metrics"], {
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "history": history.history,
        "seconds_per_epoch": history.seconds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "schedule": args.schedule,
        "seed": args.seed,
        "arch": args.arch,
        "augment": args.augment,
        "interrupted": history.interrupted,
        "interrupted_at": history.interrupted_at,      # {"epoch", "batch", "batches"}, from 1
        "dataset": args.dataset,
        "data_source": source,
        "train_images": int(len(x_train)),
        "device": args.device,
        "versions": {"tinycnn": tinycnn.__version__, "numpy": np.__version__, "numba": numba.__version__,
                     "python": sys.version.split()[0]},
    })
    print("Wrote:")
    for path in paths.values():
        print(f"  {path}")
    return test_accuracy


if __name__ == "__main__":
    main()
