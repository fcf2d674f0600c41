"""Small image datasets, downloaded once, checked, and cached.

Each module has a ``load_data()`` that returns NumPy arrays shaped like
Keras's ``(x_train, y_train), (x_test, y_test)``, and a ``CLASS_NAMES`` tuple::

    from tinycnn.datasets import mnist, fashion_mnist

    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()

Downloads are kept in ``~/.tinycnn/datasets`` (or ``$TINYCNN_HOME/datasets``,
or the ``cache_dir=`` you pass) and checked against their SHA-256; see
:mod:`tinycnn.datasets.download` for how.  Offline, pass ``path=`` to read a
copy you already have.

All errors raised here derive from :class:`DatasetError`:

- :class:`DownloadError`: the network failed (offline, HTTP error, ...);
- :class:`ChecksumError`: a download's SHA-256 is not the expected one;
- :class:`CacheDirError`: the cache directory is not writable (also an OSError);
- :class:`DataFormatError`: a file is corrupt or holds the wrong arrays
  (also a ValueError).

A ``path=`` that does not exist raises the built-in :class:`FileNotFoundError`.
"""

from . import fashion_mnist, mnist
from .download import CacheDirError, ChecksumError, DataFormatError, DatasetError, DownloadError

__all__ = [
    "mnist",
    "fashion_mnist",
    "DatasetError",
    "DownloadError",
    "ChecksumError",
    "CacheDirError",
    "DataFormatError",
]
