"""A tiny HTTP server on 127.0.0.1 for testing downloads without the internet.

Use the ``loopback_server`` fixture in a test module (pytest puts ``tests/`` on
``sys.path``, so a plain import works)::

    from loopback_server import loopback_server, make_mnist_npz  # noqa: F401

    def test_download(loopback_server, tmp_path):
        payload, sha256 = make_mnist_npz()
        url = loopback_server.add("/mnist.npz", payload)
        ...                                     # download url
        assert loopback_server.count("/mnist.npz") == 1

The server (a :class:`LoopbackServer`) serves in-memory bytes by path and can
misbehave on purpose, per path:

- ``fail(path, status, times=None)``: answer with that HTTP status (404, 500,
  ...), always, or only for the first ``times`` requests and then normally;
- ``drop(path, times=None)``: announce the full Content-Length, send half the
  body, then close the connection;
- ``delay(path, seconds)``: wait before answering (to test timeouts, or to
  make two downloads overlap).

It counts requests per path (``count(path)``) and remembers the headers of the
last one (``last_headers(path)``).  Unknown paths get 404.

Helpers: :func:`make_mnist_npz` builds a small synthetic ``mnist.npz``,
:func:`make_idx` / :func:`make_fashion_files` build IDX files, and
:func:`refused_url` gives a URL on which nothing listens.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

__all__ = [
    "LoopbackServer",
    "loopback_server",
    "make_mnist_npz",
    "make_idx",
    "make_fashion_files",
    "refused_url",
    "sha256_hex",
]


class LoopbackServer:
    """An HTTP server in a daemon thread, serving registered byte payloads."""

    def __init__(self):
        self._payloads: dict[str, bytes] = {}
        self._faults: dict[str, dict] = {}  # path -> {"kind", "status", "times", "seconds"}
        self._delays: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._headers: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # clients hang up on purpose
        # A short poll interval makes stop() quick (the default would add 0.5 s per test).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        """Return the full URL of ``path`` (which starts with ``/``)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, payload: bytes) -> str:
        """Serve ``payload`` at ``path``; return its URL."""
        with self._lock:
            self._payloads[path] = bytes(payload)
        return self.url(path)

    def fail(self, path: str, status: int, times: int | None = None) -> None:
        """Answer ``path`` with HTTP ``status``: always, or the first ``times`` times only."""
        with self._lock:
            self._faults[path] = {"kind": "status", "status": status, "times": times}

    def drop(self, path: str, times: int | None = None) -> None:
        """Send half of ``path``'s body and hang up: always, or the first ``times`` times."""
        with self._lock:
            self._faults[path] = {"kind": "drop", "times": times}

    def delay(self, path: str, seconds: float) -> None:
        """Wait ``seconds`` before answering each request for ``path``."""
        with self._lock:
            self._delays[path] = seconds

    def count(self, path: str) -> int:
        """Return how many requests ``path`` has received."""
        with self._lock:
            return self._counts.get(path, 0)

    def last_headers(self, path: str) -> dict:
        """Return the headers of the last request for ``path`` (lower-case names)."""
        with self._lock:
            return dict(self._headers.get(path, {}))

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _plan(self, path: str, headers) -> tuple[str, bytes | None, float, dict | None]:
        """Record a request and decide how to answer it (called by the handler)."""
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            self._headers[path] = {k.lower(): v for k, v in headers.items()}
            fault = self._faults.get(path)
            if fault is not None and fault["times"] is not None:
                if fault["times"] <= 0:
                    fault = None
                else:
                    fault["times"] -= 1
            return path, self._payloads.get(path), self._delays.get(path, 0.0), fault


def _make_handler(server: LoopbackServer):
    """Build a request-handler class bound to ``server``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (name fixed by http.server)
            path, payload, delay, fault = server._plan(self.path, self.headers)
            if delay:
                time.sleep(delay)
            if payload is None:
                return self._send_status(404)
            if fault is not None and fault["kind"] == "status":
                return self._send_status(fault["status"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if fault is not None and fault["kind"] == "drop":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _send_status(self, status: int) -> None:
            body = f"HTTP {status}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def loopback_server():
    """Yield a running :class:`LoopbackServer`; stop it after the test."""
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.stop()


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as hex."""
    return hashlib.sha256(data).hexdigest()


def make_arrays(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Return random MNIST-like arrays: uint8 28x28 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }


def make_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """Return the bytes of an ``.npz`` file holding ``arrays``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def make_mnist_npz(n_train: int = 200, n_test: int = 50, seed: int = 0) -> tuple[bytes, str]:
    """Return ``(bytes, sha256hex)`` of a small synthetic ``mnist.npz``.

    It has Keras's keys (x_train, y_train, x_test, y_test) and shapes, only
    fewer rows: (n_train, 28, 28), (n_train,), (n_test, 28, 28), (n_test,).
    """
    data = make_npz(make_arrays(n_train, n_test, seed))
    return data, sha256_hex(data)


def make_idx(array: np.ndarray, compress: bool = True) -> bytes:
    """Return ``array`` (uint8, 1-D labels or 3-D images) as IDX bytes, gzipped by default."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def make_fashion_files(n_train: int = 200, n_test: int = 50, seed: int = 0,
                       compress: bool = True) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Return ``(files, arrays)``: the four Fashion-MNIST IDX files by name, and their arrays.

    File names are the official ones (``train-images-idx3-ubyte.gz`` ...), without
    ``.gz`` when ``compress`` is false.
    """
    arrays = make_arrays(n_train, n_test, seed)
    names = {
        "train-images-idx3-ubyte.gz": "x_train",
        "train-labels-idx1-ubyte.gz": "y_train",
        "t10k-images-idx3-ubyte.gz": "x_test",
        "t10k-labels-idx1-ubyte.gz": "y_test",
    }
    files = {}
    for name, key in names.items():
        files[name if compress else name.removesuffix(".gz")] = make_idx(arrays[key], compress)
    return files, arrays


def refused_url(path: str = "/mnist.npz") -> str:
    """Return a 127.0.0.1 URL on a port where (very probably) nothing listens.

    It binds a socket to get a free port, then closes it, so connecting is refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
