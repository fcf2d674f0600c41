"""MNIST: 70,000 small grey pictures of handwritten digits, 0 to 9.

:func:`load_data` returns the same arrays as ``keras.datasets.mnist.load_data()``::

    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train.shape, y_train.shape  # (60000, 28, 28), (60000,)   uint8
    x_test.shape, y_test.shape    # (10000, 28, 28), (10000,)   uint8

Pixels are 0 (black) to 255 (white); labels are the digits 0 to 9.

The data comes from Keras's ``mnist.npz``, downloaded once into the cache
directory (``~/.tinycnn/datasets``, see :mod:`tinycnn.datasets.download`) and
checked against its SHA-256 every time it is used.  A download is first
checked for what it holds (an .npz with the four arrays, of the right shapes
and dtypes), so whatever ``sha256`` is given, a file that is not MNIST (a web
page a mirror served by mistake) is never cached.  Without a network, pass a
copy you already have with ``path=``, or a mirror with ``url=`` and ``sha256=``.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import checks
from .download import DataFormatError, describe_start, fetch

DEFAULT_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
DEFAULT_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
FILENAME = "mnist.npz"

#: ``CLASS_NAMES[label]`` is the name of a label: here simply the digit.
CLASS_NAMES = tuple(str(digit) for digit in range(10))

IMAGE_SHAPE = (28, 28)

#: Fashion-MNIST's IDX file names (also gzipped): recognised when given where mnist.npz belongs.
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NUM_CLASSES = 10

ADVICE = (
    "Ways out: load a copy you already have with "
    "mnist.load_data(path='/path/to/mnist.npz'), or use a mirror with "
    "mnist.load_data(url='https://.../mnist.npz', sha256='<its SHA-256>')."
)

#: Added to a hash mismatch: the file downloaded is a well-formed mnist.npz, only not the one expected.
CHECKSUM_ADVICE = (
    "It is a well-formed mnist.npz, but not the one expected. If you trust this mirror's "
    "copy, pass its SHA-256 as sha256=... (sha256sum mnist.npz)."
)


def load_data(
    path: str | os.PathLike | None = None,
    url: str = DEFAULT_URL,
    sha256: str = DEFAULT_SHA256,
    cache_dir: str | os.PathLike | None = None,
):
    """Return MNIST as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays.

    With ``path``, read that local ``.npz`` file (no network, no hash check).
    Otherwise download ``url`` into the cache (``cache_dir``, else
    ``$TINYCNN_HOME/datasets``, else ``~/.tinycnn/datasets``) unless a copy
    with the right ``sha256`` is already there, and read that.
    """
    if path is not None:
        return read_npz(checks.path(path, "path"))
    url = checks.text(url, "url")
    sha256 = checks.sha256(sha256, "sha256")
    if cache_dir is not None:
        checks.path(cache_dir, "cache_dir")
    path = fetch(url, FILENAME, sha256, cache_dir, advice=ADVICE, check=read_npz,
                 checksum_advice=CHECKSUM_ADVICE)
    return read_npz(path)


def read_npz(path: str | os.PathLike):
    """Read and check an ``mnist.npz``-style file; return the two (x, y) splits.

    The file must hold the arrays ``x_train``, ``y_train``, ``x_test`` and
    ``y_test``.  It is opened with ``allow_pickle=False``, so it can hold only
    plain arrays, never code.
    """
    path = Path(path)
    if path.name.removesuffix(".gz") in IDX_NAMES or path.is_dir() and any(
            (path / name).is_file() or (path / (name + ".gz")).is_file() for name in IDX_NAMES):
        raise FileNotFoundError(f"{path} holds Fashion-MNIST's IDX files, not mnist.npz: load them "
                                "with fashion_mnist.load_data(path=...) (--dataset fashion-mnist in the "
                                "example script).")
    if not path.is_file():
        raise FileNotFoundError(f"No MNIST file at {path} (expected an .npz file).")
    arrays = read_arrays(path)
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in arrays]
    if missing:
        raise DataFormatError(f"{path} lacks the arrays {missing}; it has {sorted(arrays)}.")
    train = check_split(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    test = check_split(arrays["x_test"], arrays["y_test"], f"{path} (test)")
    return train, test


def read_arrays(path: Path) -> dict:
    """Return every array in the ``.npz`` file ``path``, as a dict by name.

    Anything that is not a readable ``.npz`` archive (a truncated download, an
    HTML error page, a lone ``.npy`` array) raises :class:`DataFormatError`, and
    so does an archive of object arrays, which would need unpickling: never done.
    """
    if not zipfile.is_zipfile(path):
        raise DataFormatError(f"{path} is not an .npz archive: {describe_start(path)}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise DataFormatError(f"{path}: the array {name!r} is an object array, which is "
                                          "never loaded (unpickling can run code); this is not "
                                          "an MNIST file.") from None
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFormatError(
            f"{path} is not a readable .npz file (corrupt or truncated?): {exc}") from exc


def check_split(x: np.ndarray, y: np.ndarray, where: str):
    """Check one split of images ``x`` and labels ``y``; return them as uint8.

    ``x`` must be uint8 images of shape (n, 28, 28) and ``y`` n integer labels
    in 0..9.  ``where`` names the source in the error message.  Any number of
    rows n is accepted, so small test files work too.
    """
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(
            f"{where}: images should be uint8 of shape (n, 28, 28), got {x.dtype} {x.shape}.")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(
            f"{where}: labels should be a 1-D integer array, got {y.dtype} {y.shape}.")
    if len(x) != len(y):
        raise DataFormatError(f"{where}: {len(x)} images but {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataFormatError(
            f"{where}: labels should be 0..9, got {y.min()}..{y.max()}.")
    return x, y.astype(np.uint8)
