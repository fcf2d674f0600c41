"""Fashion-MNIST: 70,000 small grey pictures of clothes, in 10 classes.

A drop-in replacement for MNIST made by Zalando Research: same sizes, same
shapes, harder to learn.  :func:`load_data` returns what
``keras.datasets.fashion_mnist.load_data()`` returns::

    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train.shape, y_train.shape  # (60000, 28, 28), (60000,)   uint8
    x_test.shape, y_test.shape    # (10000, 28, 28), (10000,)   uint8
    CLASS_NAMES[y_train[0]]       # 'Ankle boot'

The data is four files in the IDX format (see :func:`read_idx`), gzipped.
They are downloaded once into ``<cache>/fashion-mnist`` (see
:mod:`tinycnn.datasets.download`), or read from a local directory with
``path=DIR``, for example ``/usr/share/datasets/fashion-mnist`` from Debian's
``dataset-fashion-mnist`` package.

Every file is checked, downloaded, cached or local, against the SHA-256 of its
*decompressed* IDX bytes (:data:`SHA256S`).  Those bytes do not change when a
file is recompressed (Debian recompresses them), so the official files,
Debian's copy and any faithful mirror all pass the same check, gzipped or not.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .. import checks
from .download import ChecksumError, DataFormatError, fetch
from .mnist import check_split

DEFAULT_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

#: The four files, in the order (train images, train labels, test images, test labels).
FILENAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: SHA-256 of each file's decompressed IDX bytes (``zcat FILE | sha256sum``): the same for the
#: official files, Debian's recompressed copy and any faithful mirror, gzipped or not.
SHA256S = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: ``CLASS_NAMES[label]`` is the name of a label.
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: IDX magic numbers: two zero bytes, the type code (0x08 = uint8), the number of dimensions.
IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803

ADVICE = (
    "Ways out: load a copy you already have with "
    "fashion_mnist.load_data(path='/dir/with/the/four/files') "
    "(Debian's dataset-fashion-mnist package puts them in /usr/share/datasets/fashion-mnist), "
    "or use a mirror of the official files with fashion_mnist.load_data(base_url='https://.../') "
    "(they are checked against the official hashes of their decompressed contents)."
)

#: Added to a hash mismatch: the file is well-formed IDX, only not the official one.
CHECKSUM_ADVICE = (
    "It is a well-formed IDX file, but not the official Fashion-MNIST one. For another dataset "
    "in the same format, pass sha256s={name: SHA-256 of the decompressed file} "
    "(zcat FILE | sha256sum)."
)


def load_data(
    path: str | os.PathLike | None = None,
    base_url: str = DEFAULT_BASE_URL,
    cache_dir: str | os.PathLike | None = None,
    sha256s: dict[str, str] | None = None,
):
    """Return Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays.

    With ``path``, read the four files from that local directory.  Otherwise
    download each from ``base_url`` into ``<cache>/fashion-mnist`` unless a copy
    with the right hash is already there.  ``sha256s`` maps file names to the
    hashes of the decompressed files, for another dataset in the same format;
    names left out keep the official hashes.  Local files are checked too.
    """
    hashes = expected_hashes(sha256s or {})
    if path is None:
        base_url = checks.text(base_url, "base_url")
        if cache_dir is not None:
            checks.path(cache_dir, "cache_dir")
        paths = download_files(base_url, cache_dir, hashes)
    else:
        paths = local_files(checks.path(path, "path"))
    x_train, y_train, x_test, y_test = (read_checked(p, hashes[name]) for p, name in zip(paths, FILENAMES))
    train = check_split(x_train, y_train, f"{paths[0].name} + {paths[1].name}")
    test = check_split(x_test, y_test, f"{paths[2].name} + {paths[3].name}")
    return train, test


def expected_hashes(sha256s: dict[str, str]) -> dict[str, str]:
    """The official hashes, overridden by ``sha256s`` (checked: known names, 64 hex digits)."""
    if not isinstance(sha256s, dict):
        raise TypeError(f"sha256s must be a dict {{file name: SHA-256}}, got {checks.show(sha256s)}.")
    unknown = set(sha256s) - set(FILENAMES)
    if unknown:
        raise ValueError(f"sha256s has unknown file names {sorted(unknown)}; known: {FILENAMES}.")
    return {**SHA256S, **{name: checks.sha256(h, f"sha256s[{name!r}]") for name, h in sha256s.items()}}


def download_files(base_url: str, cache_dir, hashes: dict[str, str]) -> list[Path]:
    """Fetch the four files from ``base_url`` (or the cache); return their paths.

    ``hashes`` maps each file name to the SHA-256 of its decompressed contents.
    """
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    return [fetch(base_url + name, f"fashion-mnist/{name}", hashes[name], cache_dir, advice=ADVICE,
                  check=read_idx, digest=idx_sha256, checksum_advice=CHECKSUM_ADVICE)
            for name in FILENAMES]


def idx_sha256(source) -> str:
    """The SHA-256 of an IDX file's decompressed bytes: the same, however it was compressed."""
    name, raw = read_bytes(source)
    return hashlib.sha256(gunzip_if_needed(raw, name)).hexdigest()


def read_checked(path: Path, sha256: str) -> np.ndarray:
    """Read an IDX file after checking its decompressed bytes against ``sha256``."""
    name, raw = read_bytes(path)
    data = gunzip_if_needed(raw, name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        array = parse_idx(data, name)          # a file that is not IDX at all says so first
        raise ChecksumError(
            f"{name}: the SHA-256 of its decompressed contents is {actual}, not {sha256} "
            f"(a {'x'.join(map(str, array.shape))} IDX array). It is not the official "
            f"Fashion-MNIST file, or it is damaged. {CHECKSUM_ADVICE}")
    return parse_idx(data, name)


def local_files(directory: str | os.PathLike) -> list[Path]:
    """Return the paths of the four files in ``directory``, gzipped or not.

    For each name, ``train-images-idx3-ubyte.gz`` is used if present, else the
    un-gzipped ``train-images-idx3-ubyte``.  A missing file raises
    :class:`FileNotFoundError` listing what is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"No Fashion-MNIST directory at {directory}; path= should be a directory "
            f"holding {', '.join(FILENAMES)}.")
    paths, missing = [], []
    for name in FILENAMES:
        candidates = [directory / name, directory / name.removesuffix(".gz")]
        found = [p for p in candidates if p.is_file()]
        if found:
            paths.append(found[0])
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks the Fashion-MNIST files {missing} (gzipped or not).")
    return paths


def read_idx(source) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array of the shape in its header.

    ``source`` is a path or a binary file object.  Raises
    :class:`~tinycnn.datasets.DataFormatError`, naming the file, if it cannot
    be decompressed, has the wrong magic number, or is not exactly as long
    as its header says.
    """
    name, raw = read_bytes(source)
    return parse_idx(gunzip_if_needed(raw, name), name)


def read_bytes(source) -> tuple[str, bytes]:
    """Return ``(name, contents)`` for a path or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source), Path(source).read_bytes()
    return getattr(source, "name", "<file object>"), source.read()


def gunzip_if_needed(raw: bytes, name: str) -> bytes:
    """Decompress ``raw`` if it starts with the gzip signature; else return it."""
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{name}: corrupt or truncated gzip data ({exc}).") from exc


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Turn the bytes of an (uncompressed) IDX file into a uint8 array.

    Layout: a 4-byte big-endian magic number (0x00000801 for a vector of
    labels, 0x00000803 for a stack of images; the 0x08 means uint8, the last
    byte the number of dimensions), one 4-byte big-endian size per dimension,
    then the values, one byte each, row by row.
    """
    if len(data) < 4:
        raise DataFormatError(f"{name}: {len(data)} bytes is too short for an IDX header.")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        looks = b"<html" in data[:512].lower() or data[:1] == b"<"
        raise DataFormatError(
            f"{name}: bad IDX magic number 0x{magic:08x}; expected 0x{IDX_LABELS_MAGIC:08x} "
            f"(uint8 labels) or 0x{IDX_IMAGES_MAGIC:08x} (uint8 images)."
            + (" It looks like a web page (HTML), not data." if looks else ""))
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{name}: truncated IDX header ({len(data)} of {header} bytes).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "too long"
        raise DataFormatError(
            f"{name}: {problem}; its header promises {expected} bytes of data "
            f"for shape {shape} but it holds {actual}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
