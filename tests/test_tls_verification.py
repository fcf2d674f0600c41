"""Downloads always verify the server's TLS certificate: checked by what they do, not by the text.

Two behaviours, whichever way the code is written (``verify=False``, ``verify = False``, a
session with ``session.verify = False``, ...):

- every request the download code makes reaches requests' transport (``HTTPAdapter.send``,
  through which every ``requests`` call goes) with certificate verification on: ``verify`` is
  True or a CA bundle, never False. Watched on the loopback HTTP server, for both datasets and
  for a download that is retried;
- a real HTTPS server on 127.0.0.1 whose certificate nobody trusts is refused with a
  DownloadError that says the TLS check failed, and nothing is cached; trusted (its certificate
  given as the CA bundle), the same server is downloaded from. Needs the ``openssl`` command to
  make the certificate.
"""

import gzip
import hashlib
import os
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from loopback_server import loopback_server, make_fashion_files, make_mnist_npz  # noqa: F401 (a fixture)
from tinycnn.datasets import DownloadError, download, fashion_mnist, mnist


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, instant retries, and no proxy between the client and 127.0.0.1."""
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.001)
    monkeypatch.setenv("TINYCNN_HOME", str(tmp_path / "home"))
    for proxy in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)


@pytest.fixture
def sent(monkeypatch):
    """The ``verify`` setting of every request that reaches requests' transport."""
    seen = []
    real_send = requests.adapters.HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        seen.append(kwargs.get("verify", "not given"))
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return seen


def assert_verified(seen, at_least):
    assert len(seen) >= at_least, f"only {len(seen)} requests went through requests' transport"
    for verify in seen:
        assert verify is not False and verify not in ("", None, "not given"), \
            f"a request was sent with verify={verify!r}: TLS certificates would not be checked"


def test_every_mnist_request_verifies_certificates(loopback_server, sent, tmp_path):
    payload, sha256 = make_mnist_npz()
    url = loopback_server.add("/mnist.npz", payload)
    loopback_server.fail("/mnist.npz", 503, times=2)          # two retries: three requests
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path / "cache")
    assert loopback_server.count("/mnist.npz") == 3
    assert_verified(sent, 3)


def test_every_fashion_mnist_request_verifies_certificates(loopback_server, sent, tmp_path):
    files, _ = make_fashion_files()
    for name, data in files.items():
        loopback_server.add(f"/fashion/{name}", data)
    hashes = {name: hashlib.sha256(gzip.decompress(data)).hexdigest() for name, data in files.items()}
    fashion_mnist.load_data(base_url=loopback_server.url("/fashion/"), cache_dir=tmp_path / "cache",
                            sha256s=hashes)
    assert_verified(sent, len(files))


def openssl_certificate(directory):
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate, serving one mnist.npz:
    yields (url, sha256, certificate file)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = openssl_certificate(tmp_path)
    payload, sha256 = make_mnist_npz()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None     # the refused handshakes
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/mnist.npz", sha256, cert
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_an_untrusted_certificate_is_refused(https_server, tmp_path, monkeypatch):
    url, sha256, _ = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())     # the usual trust store
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="TLS check failed"):
        mnist.load_data(url=url, sha256=sha256, cache_dir=cache)
    assert not cache.exists() or os.listdir(cache) == []


def test_the_same_server_trusted_is_downloaded_from(https_server, tmp_path, monkeypatch):
    """The refusal above is the certificate's: trusting it, the download works."""
    url, sha256, cert = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    (x_train, _), _ = mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path / "cache")
    assert len(x_train) == 200
