"""Download a file once, check it, and keep it in a cache.

Every dataset loader in :mod:`tinycnn.datasets` goes through :func:`fetch`,
which does four things, each in its own small function:

1. **Find the cache.**  Files live in ``~/.tinycnn/datasets``.  Setting the
   environment variable ``TINYCNN_HOME`` moves it to ``$TINYCNN_HOME/datasets``,
   and a ``cache_dir=`` argument beats both (:func:`cache_directory`).
2. **Trust nothing.**  A download is first checked for what it holds (each
   loader passes a ``check``: an ``mnist.npz`` must be an .npz with the four
   arrays of the right shapes and dtypes), so a web page served in place of the
   data is never cached, whatever hash is given.  Then its SHA-256 is compared
   with the expected one, after every download *and* on every cache hit
   (:func:`sha256_of`, or the loader's ``digest``: Fashion-MNIST hashes the
   decompressed IDX bytes, which recompressing a file does not change).  A
   cached file that fails the check is thrown away and downloaded again, once.
3. **Never leave half a file.**  The bytes go to a uniquely named temporary
   file beside the target (``.mnist.npz.XXXXXXXX.part``); only once its hash is
   right is it renamed onto the final name with :func:`os.replace`, which is
   atomic.  If anything goes wrong, Ctrl-C included, the temporary file is
   deleted.  Two processes downloading the same file at once each write their
   own temporary file and the last rename wins; both renames put a good file
   in place.
4. **Be polite and patient with the network.**  :func:`stream_to` uses
   ``requests`` with streaming, connect and read timeouts, a ``User-Agent``
   naming tinycnn and its version, and TLS certificate checks always on.
   Connection errors, timeouts and HTTP 5xx answers are retried a few times
   with exponential backoff (:data:`BACKOFF_SECONDS`, then twice that, ...);
   HTTP 4xx answers are not, since asking again will not change them.  Each
   retry logs one short line; the full error comes once, at the end.  A
   progress bar (tqdm) is shown only when stderr is an interactive terminal.

An unwritable cache directory is an error, not a silent fallback: we raise
:class:`CacheDirError` (a subclass of both :class:`DatasetError` and
:class:`OSError`) naming the directory and the two fixes, passing
``cache_dir=...`` (``--cache-dir`` in the example scripts) or setting
``TINYCNN_HOME``.  Quietly writing somewhere else (a temporary directory, say)
would re-download the data on every run without telling anyone why.

``requests`` and ``tqdm`` are imported inside the functions that use them, so
``import tinycnn`` stays fast and works without them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..files import part_file

logger = logging.getLogger(__name__)

#: Sent with every request, so server operators can see who is asking.
USER_AGENT = f"tinycnn/{__version__} (+educational deep-learning library; python-requests)"

#: Seconds to wait for a connection, and then for each piece of the answer.
TIMEOUT = (10.0, 60.0)

#: How many times a failed attempt is tried again (so 1 + RETRIES attempts).
RETRIES = 3

#: Wait before the first retry, in seconds; it doubles before each next one.
#: Tests set this very small.
BACKOFF_SECONDS = 1.0

#: Bytes read from the network at a time.
CHUNK_SIZE = 1 << 16

#: What to do when a download fails; each loader passes its own wording.
DEFAULT_ADVICE = (
    "Either load a copy you already have with path=..., "
    "or use a mirror with url=... and its sha256=..."
)


class DatasetError(Exception):
    """Base class of every error raised by :mod:`tinycnn.datasets`."""


class DownloadError(DatasetError):
    """The file could not be downloaded (offline, refused, HTTP error, ...)."""


class ChecksumError(DatasetError):
    """A downloaded file's SHA-256 is not the expected one."""


class CacheDirError(DatasetError, OSError):
    """The cache directory cannot be created or written to."""


class DataFormatError(DatasetError, ValueError):
    """A data file is corrupt, truncated, or does not hold what it should."""


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory where downloaded datasets are kept.

    The ``cache_dir`` argument wins; otherwise ``$TINYCNN_HOME/datasets`` when
    that environment variable is set; otherwise ``~/.tinycnn/datasets``.  The
    directory is not created here (see :func:`make_cache_dir`).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    home = os.environ.get("TINYCNN_HOME")
    if home:
        return Path(home).expanduser() / "datasets"
    return Path.home() / ".tinycnn" / "datasets"


def cache_dir_error(directory: Path, reason: BaseException) -> CacheDirError:
    """Build the error for a cache directory we cannot write, with both fixes."""
    return CacheDirError(
        f"Cannot write to the dataset cache directory {directory} ({reason}). "
        "Choose a writable one: pass cache_dir=... (--cache-dir in the example "
        "scripts), or set the TINYCNN_HOME environment variable "
        "(data then goes to $TINYCNN_HOME/datasets)."
    )


def make_cache_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) or raise :class:`CacheDirError`."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_dir_error(directory, exc) from exc


def sha256_of(path: str | os.PathLike) -> str:
    """Return the SHA-256 of a file as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    url: str,
    filename: str,
    sha256: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    advice: str = DEFAULT_ADVICE,
    check=None,
    digest=None,
    checksum_advice: str = "",
    retries: int | None = None,
    backoff: float | None = None,
    timeout: tuple[float, float] | None = None,
) -> Path:
    """Return the path of a checked copy of ``url``, downloading it if needed.

    The file is kept as ``filename`` in the cache directory (see
    :func:`cache_directory`); ``filename`` may include a subfolder, such as
    ``"fashion-mnist/t10k-labels-idx1-ubyte.gz"``.  A cached copy is used only if its SHA-256 equals
    ``sha256``; otherwise it is deleted and the file downloaded again, once.
    ``advice`` is added to download errors to tell the user a way out.
    ``check(path)`` raises :class:`DataFormatError` when a downloaded file does
    not hold the dataset; it runs before the hash check, so such a file is never
    cached.  ``digest(path)`` computes the hash compared with ``sha256``
    (default: :func:`sha256_of`, the SHA-256 of the file's bytes).
    ``checksum_advice`` is added to a hash mismatch of a well-formed file.
    ``retries``, ``backoff`` and ``timeout`` default to the module settings
    :data:`RETRIES`, :data:`BACKOFF_SECONDS` and :data:`TIMEOUT`.
    A ``url`` that is not http:// or https:// is a ValueError before the cache is looked at
    (:func:`check_url`).
    """
    check_url(url, advice)
    digest = digest or sha256_of
    target = cache_directory(cache_dir) / filename
    if target.is_file():
        try:
            if digest(target) == sha256.lower():
                return target  # cache hit: no network at all
        except DataFormatError:
            pass
        logger.warning("Cached %s fails its SHA-256 check; downloading it again.", target)
        discard(target)
    download(url, target, sha256, advice=advice, check=check, digest=digest,
             checksum_advice=checksum_advice, retries=retries, backoff=backoff, timeout=timeout)
    return target


def check_url(url: str, advice: str = DEFAULT_ADVICE) -> None:
    """Refuse a URL that is not http:// or https://, the only schemes :func:`stream_to` speaks.

    Without this, a ``file://`` URL (or a plain path) would reach ``requests``, whose answer
    ("No connection adapters were found") does not say what to do. It is checked even when
    the cache holds the file, so that the same call never works on one machine and fails on
    another.
    """
    from urllib.parse import urlsplit

    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        local = ""
        if scheme in ("file", ""):
            local = " (a file on this machine is loaded with path=..., not downloaded)"
        raise ValueError(f"Only http:// and https:// URLs are downloaded, got {url!r}{local}.\n{advice}")


def discard(path: Path) -> None:
    """Delete a file we no longer want, as a :class:`CacheDirError` if we can't."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise cache_dir_error(path.parent, exc) from exc


def download(
    url: str,
    target: Path,
    sha256: str,
    *,
    advice: str = DEFAULT_ADVICE,
    check=None,
    digest=None,
    checksum_advice: str = "",
    retries: int | None = None,
    backoff: float | None = None,
    timeout: tuple[float, float] | None = None,
) -> None:
    """Download ``url`` to ``target`` atomically, keeping it only if it is right.

    The bytes go to a temporary file beside ``target``, which is renamed onto
    ``target`` after the content check (``check``) and the SHA-256 check
    (``digest``, see :func:`fetch`) and deleted on any failure, including
    KeyboardInterrupt.
    """
    make_cache_dir(target.parent)
    try:
        fd, tmp_name = part_file(target)     # also removes what killed downloads left
    except OSError as exc:
        raise cache_dir_error(target.parent, exc) from exc
    try:
        # Open until renamed, as atomic_write does (tinycnn.files): closing it releases its lock,
        # and a download of the same file starting meanwhile would take it for a dead one's.
        with os.fdopen(fd, "wb") as out:
            actual = stream_with_retries(url, out, advice=advice, retries=retries,
                                         backoff=backoff, timeout=timeout)
            out.flush()                      # the checks read it by name
            if check is not None:
                try:
                    check(tmp_name)
                except DataFormatError as exc:
                    reason = str(exc).replace(tmp_name, "the file")
                    raise DataFormatError(
                        f"The file downloaded from {url} is not {target.name}: {reason} It was "
                        "discarded and nothing was cached. Check the URL: a server that answers "
                        "with a web page (an error or login page) in place of the file looks like this."
                    ) from None
            if digest is not None:
                actual = digest(tmp_name)
            if actual != sha256.lower():
                raise ChecksumError(
                    f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {actual}. "
                    f"The download was discarded. {checksum_advice}".rstrip()
                )
            if os.name == "posix":
                os.replace(tmp_name, target)
        if os.name != "posix":               # Windows cannot rename an open file
            os.replace(tmp_name, target)
    except BaseException:
        remove_if_present(tmp_name)
        raise


def describe_start(path: str | os.PathLike) -> str:
    """What a file that should hold data seems to be, from its first bytes: for error messages."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "it is empty"
    if b"<html" in head.lower() or head.lstrip().lower().startswith((b"<!doctype", b"<?xml", b"<")):
        return "it looks like a web page (HTML), not data"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array"
    if head.startswith(b"\x1f\x8b"):
        return "it is a gzip file"
    if head.startswith(b"PK"):
        return "it is a zip archive, truncated or corrupt"
    return f"it starts with {head[:16]!r}"


def remove_if_present(path: str | os.PathLike) -> None:
    """Delete ``path`` if it exists; used to clean up temporary files."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def stream_with_retries(
    url: str,
    out,
    *,
    advice: str = DEFAULT_ADVICE,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: tuple[float, float] | None = None,
) -> str:
    """Write the body of ``url`` to the binary file ``out``; return its SHA-256.

    Transient failures (connection errors, timeouts, HTTP 5xx) are retried
    ``retries`` times, waiting ``backoff``, ``2 * backoff``, ``4 * backoff``
    ... seconds in between; each attempt starts ``out`` afresh.  HTTP 4xx is
    not retried.  Every failure ends as a :class:`DownloadError` naming the URL.
    """
    import requests

    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    timeout = TIMEOUT if timeout is None else timeout
    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    for attempt in range(retries + 1):
        out.seek(0)
        out.truncate()
        try:
            return stream_to(url, out, timeout=timeout)
        except requests.HTTPError as exc:
            status = exc.response.status_code
            reason = f"the server answered HTTP {status} {exc.response.reason}"
            if status < 500:
                raise DownloadError(f"Could not download {url}: {reason}.\n{advice}") from exc
            error, short = exc, f"HTTP {status}"
        except requests.exceptions.SSLError as exc:  # a bad certificate won't fix itself
            raise DownloadError(f"Could not download {url}: TLS check failed ({exc}).\n{advice}") from exc
        except transient as exc:
            reason, error = f"{type(exc).__name__}: {exc}", exc
            short = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
        except requests.RequestException as exc:  # bad URL and the like: retrying won't help
            raise DownloadError(f"Could not download {url}: {exc}.\n{advice}") from exc
        if attempt < retries:
            delay = backoff * 2**attempt
            # one short line per retry; the full reason is in the error at the end
            logger.warning("Download of %s failed (%s); retry %d of %d in %.3g s.",
                           url.rsplit("/", 1)[-1] or url, short, attempt + 1, retries, delay)
            time.sleep(delay)
    offline = "" if isinstance(error, requests.HTTPError) else "Are you offline? "
    raise DownloadError(
        f"Could not download {url} after {retries + 1} attempts; last error: {reason}.\n"
        f"{offline}{advice}"
    ) from error


def stream_to(url: str, out, *, timeout: tuple[float, float]) -> str:
    """Make one GET request for ``url``, write its body to ``out``, return its SHA-256.

    Raises ``requests.HTTPError`` for 4xx/5xx answers and lets other
    ``requests`` errors through; :func:`stream_with_retries` sorts them out.
    """
    import requests

    digest = hashlib.sha256()
    # "identity" asks for the bytes as stored, so the hash is the file's hash.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length", 0)) or None
        with progress_bar(total, url.rsplit("/", 1)[-1]) as bar:
            for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


class _NoProgress:
    """A do-nothing stand-in for a tqdm bar, used when nobody is watching."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n: int) -> None:
        """Ignore progress."""


def progress_bar(total: int | None, description: str):
    """Return a byte-counting tqdm bar if stderr is a terminal, else a silent stand-in."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False)
