"""Tests of tinycnn.datasets: downloading, caching, checking and reading MNIST files.

Everything runs against a loopback HTTP server (tests/loopback_server.py);
no test touches the internet.
"""

import gzip
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

import tinycnn
from tinycnn.datasets import (
    CacheDirError,
    ChecksumError,
    DataFormatError,
    DatasetError,
    DownloadError,
    download,
    fashion_mnist,
    mnist,
)
from loopback_server import (  # noqa: F401 (loopback_server is a fixture)
    loopback_server,
    make_arrays,
    make_fashion_files,
    make_idx,
    make_mnist_npz,
    make_npz,
    refused_url,
    sha256_hex,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def fast_and_isolated(monkeypatch, tmp_path):
    """Make retries instant and keep every test away from the real ~/.tinycnn."""
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.001)
    monkeypatch.setattr(download, "TIMEOUT", (2.0, 2.0))
    monkeypatch.setenv("TINYCNN_HOME", str(tmp_path / "default-home"))
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # talk to 127.0.0.1 directly


@pytest.fixture
def served_mnist(loopback_server):
    """Serve a small synthetic mnist.npz; return (url, sha256, payload)."""
    payload, sha256 = make_mnist_npz()
    return loopback_server.add("/mnist.npz", payload), sha256, payload


def files_in(directory):
    """Return the names of all files under ``directory`` (empty if it doesn't exist)."""
    return sorted(p.name for p in Path(directory).rglob("*") if p.is_file())


def assert_mnist_like(data, n_train=200, n_test=50):
    """Check the Keras shapes and dtypes of a load_data() result."""
    (x_train, y_train), (x_test, y_test) = data
    assert x_train.shape == (n_train, 28, 28) and y_train.shape == (n_train,)
    assert x_test.shape == (n_test, 28, 28) and y_test.shape == (n_test,)
    for array in (x_train, y_train, x_test, y_test):
        assert array.dtype == np.uint8
    assert 0 <= y_train.min() and y_train.max() <= 9


# --- the package itself ----------------------------------------------------------


def test_import_pulls_in_no_heavy_modules():
    code = ("import tinycnn.datasets, sys; "
            "assert not {'requests', 'tqdm', 'matplotlib'} & set(sys.modules), sys.modules.keys()")
    root = Path(tinycnn.__file__).parent.parent  # the tinycnn under test
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


def test_defaults_and_class_names():
    assert mnist.DEFAULT_URL == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    assert mnist.DEFAULT_SHA256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    assert mnist.CLASS_NAMES == tuple("0123456789")
    assert fashion_mnist.CLASS_NAMES[0] == "T-shirt/top" and fashion_mnist.CLASS_NAMES[9] == "Ankle boot"
    assert len(fashion_mnist.CLASS_NAMES) == 10
    assert set(fashion_mnist.SHA256S) == set(fashion_mnist.FILENAMES)
    for error in (DownloadError, ChecksumError, CacheDirError, DataFormatError):
        assert issubclass(error, DatasetError)
    assert issubclass(CacheDirError, OSError)


def test_tls_verification_is_never_turned_off():
    import inspect

    assert "verify=False" not in inspect.getsource(download)


# --- downloading and caching ----------------------------------------------------


def test_download_then_cache_hit(loopback_server, served_mnist, tmp_path):
    url, sha256, payload = served_mnist
    cache = tmp_path / "cache"
    assert_mnist_like(mnist.load_data(url=url, sha256=sha256, cache_dir=cache))
    assert loopback_server.count("/mnist.npz") == 1
    assert (cache / "mnist.npz").read_bytes() == payload
    assert files_in(cache) == ["mnist.npz"]
    assert_mnist_like(mnist.load_data(url=url, sha256=sha256, cache_dir=cache))
    assert loopback_server.count("/mnist.npz") == 1  # the cache hit asked nothing


def test_request_headers_name_tinycnn(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    agent = loopback_server.last_headers("/mnist.npz")["user-agent"]
    assert agent.startswith(f"tinycnn/{tinycnn.__version__} (+")


def test_tinycnn_home_sets_the_cache(loopback_server, served_mnist, tmp_path, monkeypatch):
    url, sha256, _ = served_mnist
    monkeypatch.setenv("TINYCNN_HOME", str(tmp_path / "home"))
    mnist.load_data(url=url, sha256=sha256)
    assert (tmp_path / "home" / "datasets" / "mnist.npz").is_file()


def test_cache_dir_argument_beats_tinycnn_home(loopback_server, served_mnist, tmp_path, monkeypatch):
    url, sha256, _ = served_mnist
    monkeypatch.setenv("TINYCNN_HOME", str(tmp_path / "home"))
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path / "mine")
    assert files_in(tmp_path / "mine") == ["mnist.npz"]
    assert not (tmp_path / "home").exists()


def test_default_cache_is_under_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYCNN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.cache_directory() == tmp_path / ".tinycnn" / "datasets"


def test_wrong_hash_names_both_and_keeps_nothing(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        mnist.load_data(url=url, sha256=wrong, cache_dir=tmp_path / "cache")
    assert wrong in str(info.value) and sha256 in str(info.value)
    assert files_in(tmp_path / "cache") == []  # no mnist.npz, no .part file


def test_404_names_url_and_status_and_is_not_retried(loopback_server, tmp_path):
    url = loopback_server.url("/missing.npz")
    with pytest.raises(DownloadError) as info:
        mnist.load_data(url=url, cache_dir=tmp_path)
    assert url in str(info.value) and "404" in str(info.value)
    assert loopback_server.count("/missing.npz") == 1
    assert files_in(tmp_path) == []


def test_500_is_retried_then_fails(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    loopback_server.fail("/mnist.npz", 500)
    with pytest.raises(DownloadError) as info:
        mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    assert "500" in str(info.value) and url in str(info.value)
    assert loopback_server.count("/mnist.npz") == 1 + download.RETRIES
    assert files_in(tmp_path) == []


def test_500_then_success_succeeds(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    loopback_server.fail("/mnist.npz", 503, times=2)
    assert_mnist_like(mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path))
    assert loopback_server.count("/mnist.npz") == 3
    assert files_in(tmp_path) == ["mnist.npz"]


def test_dropped_connection_fails_and_leaves_nothing(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    loopback_server.drop("/mnist.npz")
    with pytest.raises(DownloadError) as info:
        mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    assert url in str(info.value)
    assert loopback_server.count("/mnist.npz") == 1 + download.RETRIES
    assert files_in(tmp_path) == []


def test_dropped_connection_once_is_retried(loopback_server, served_mnist, tmp_path):
    url, sha256, payload = served_mnist
    loopback_server.drop("/mnist.npz", times=1)
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    assert (tmp_path / "mnist.npz").read_bytes() == payload  # the half body was thrown away


def test_read_timeout_is_an_error(loopback_server, served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    loopback_server.delay("/mnist.npz", 0.5)
    with pytest.raises(DownloadError, match="Timeout"):
        download.fetch(url, "mnist.npz", sha256, tmp_path, retries=0, timeout=(1.0, 0.1))
    assert files_in(tmp_path) == []


def test_refused_connection_explains_the_ways_out(tmp_path):
    url = refused_url()
    with pytest.raises(DownloadError) as info:
        mnist.load_data(url=url, cache_dir=tmp_path)
    message = str(info.value)
    assert url in message
    assert "path=" in message and "url=" in message and "sha256=" in message
    assert files_in(tmp_path) == []


def test_keyboard_interrupt_mid_stream_leaves_nothing(served_mnist, tmp_path, monkeypatch):
    url, sha256, _ = served_mnist
    real_iter_content = requests.models.Response.iter_content
    seen_while_streaming = []

    def interrupted(self, *args, **kwargs):
        for i, chunk in enumerate(real_iter_content(self, *args, **kwargs)):
            if i == 1:
                seen_while_streaming.extend(files_in(tmp_path))
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(download, "CHUNK_SIZE", 1024)
    monkeypatch.setattr(requests.models.Response, "iter_content", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    [part] = seen_while_streaming  # the bytes went to a temporary file ...
    assert part.startswith(".mnist.npz.") and part.endswith(".part")
    assert files_in(tmp_path) == []  # ... which is gone


def test_corrupt_cached_file_is_downloaded_again_once(loopback_server, served_mnist, tmp_path):
    url, sha256, payload = served_mnist
    (tmp_path / "mnist.npz").write_bytes(b"not the real file")
    assert_mnist_like(mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path))
    assert loopback_server.count("/mnist.npz") == 1
    assert (tmp_path / "mnist.npz").read_bytes() == payload


def test_corrupt_cache_and_bad_download_is_an_error(loopback_server, tmp_path):
    url = loopback_server.add("/mnist.npz", b"also wrong")
    (tmp_path / "mnist.npz").write_bytes(b"not the real file")
    with pytest.raises(DataFormatError, match="nothing was cached"):
        mnist.load_data(url=url, cache_dir=tmp_path)
    assert loopback_server.count("/mnist.npz") == 1
    assert files_in(tmp_path) == []


def test_two_concurrent_downloads_both_get_a_valid_file(loopback_server, served_mnist, tmp_path):
    url, sha256, payload = served_mnist
    loopback_server.delay("/mnist.npz", 0.2)  # so both requests are in flight together
    results, errors = [], []

    def load():
        try:
            results.append(mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert loopback_server.count("/mnist.npz") == 2
    for result in results:
        assert_mnist_like(result)
    assert files_in(tmp_path) == ["mnist.npz"]
    assert sha256_hex((tmp_path / "mnist.npz").read_bytes()) == sha256


def test_a_download_being_checked_is_not_taken_for_a_dead_one(loopback_server, served_mnist,
                                                               tmp_path):
    url, sha256, _ = served_mnist
    checking, go_on = threading.Event(), threading.Event()
    errors = []

    def slow_check(path):
        checking.set()
        go_on.wait(10)
        return mnist.read_npz(path)

    def first():
        try:
            download.fetch(url, "mnist.npz", sha256, tmp_path, check=slow_check)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert checking.wait(10)
    # The second download tidies the .part files of dead downloads: the first one's is not one.
    download.fetch(url, "mnist.npz", sha256, tmp_path, check=mnist.read_npz)
    go_on.set()
    thread.join()
    assert errors == []
    assert loopback_server.count("/mnist.npz") == 2
    assert files_in(tmp_path) == ["mnist.npz"]


def test_unwritable_cache_dir_is_a_clear_error(served_mnist, tmp_path):
    url, sha256, _ = served_mnist
    (tmp_path / "afile").write_text("a file, so nothing can be created below it")
    cache = tmp_path / "afile" / "sub"
    with pytest.raises(CacheDirError) as info:
        mnist.load_data(url=url, sha256=sha256, cache_dir=cache)
    message = str(info.value)
    assert str(cache) in message
    assert "cache_dir=" in message and "--cache-dir" in message and "TINYCNN_HOME" in message
    assert isinstance(info.value, OSError)


def test_progress_bar_only_on_a_terminal(served_mnist, tmp_path, monkeypatch, capsys):
    url, sha256, _ = served_mnist
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path / "a")
    assert capsys.readouterr().err == ""  # captured stderr is not a terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path / "b")
    assert "mnist.npz" in terminal.getvalue() and "B" in terminal.getvalue()


# --- reading local .npz files ---------------------------------------------------


def test_path_reads_a_good_npz(tmp_path):
    arrays = make_arrays(30, 10)
    path = tmp_path / "mnist.npz"
    path.write_bytes(make_npz(arrays))
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=path)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert_mnist_like(((x_train, y_train), (x_test, y_test)), 30, 10)


def test_path_accepts_other_integer_label_types(tmp_path):
    arrays = make_arrays(30, 10)
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    path = tmp_path / "mnist.npz"
    path.write_bytes(make_npz(arrays))
    (_, y_train), _ = mnist.load_data(path=path)
    assert y_train.dtype == np.uint8


def test_path_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        mnist.load_data(path=tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [
    pytest.param(make_mnist_npz()[0][:1000], id="truncated"),
    pytest.param(make_mnist_npz()[0][:-200], id="truncated-end"),
    pytest.param(b"<html>Sorry, an error page</html>", id="not-npz"),
    pytest.param(b"", id="empty"),
])
def test_path_corrupt_npz_names_the_file(tmp_path, content):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="broken.npz"):
        mnist.load_data(path=path)


def test_path_npy_instead_of_npz(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match="single.npz"):
        mnist.load_data(path=path)


def bad_arrays(change):
    """Return synthetic MNIST arrays after applying ``change`` to them."""
    arrays = make_arrays(20, 5)
    change(arrays)
    return arrays


@pytest.mark.parametrize("arrays, words", [
    pytest.param(bad_arrays(lambda a: a.pop("y_test")), "y_test", id="missing-key"),
    pytest.param(bad_arrays(lambda a: a.update(x_train=np.zeros((20, 32, 32), np.uint8))),
                 "28, 28", id="wrong-image-shape"),
    pytest.param(bad_arrays(lambda a: a.update(x_test=np.zeros((5, 28, 28), np.float32))),
                 "uint8", id="wrong-dtype"),
    pytest.param(bad_arrays(lambda a: a.update(y_train=np.zeros(19, np.uint8))),
                 "20 images but 19 labels", id="length-mismatch"),
    pytest.param(bad_arrays(lambda a: a.update(y_test=np.full(5, 10, np.uint8))),
                 "0..9", id="label-out-of-range"),
    pytest.param(bad_arrays(lambda a: a.update(y_test=np.zeros(5, np.float64))),
                 "integer", id="float-labels"),
])
def test_path_npz_with_wrong_contents(tmp_path, arrays, words):
    path = tmp_path / "odd.npz"
    path.write_bytes(make_npz(arrays))
    with pytest.raises(DataFormatError, match="odd.npz") as info:
        mnist.load_data(path=path)
    assert words in str(info.value)


# --- IDX files and Fashion-MNIST -------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_good_files(tmp_path, compress):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7, 9], np.uint8)
    (tmp_path / "images").write_bytes(make_idx(images, compress))
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "images"), images)
    np.testing.assert_array_equal(fashion_mnist.read_idx(io.BytesIO(make_idx(labels, compress))), labels)


def test_read_idx_bad_magic(tmp_path):
    data = bytearray(make_idx(np.zeros(4, np.uint8), compress=False))
    data[2] = 0x0D  # type code of float32, which we do not read
    (tmp_path / "labels.idx").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"labels\.idx.*magic"):
        fashion_mnist.read_idx(tmp_path / "labels.idx")


@pytest.mark.parametrize("cut", [-1, 10, 2])
def test_read_idx_truncated(tmp_path, cut):
    data = make_idx(np.zeros((3, 28, 28), np.uint8), compress=False)
    (tmp_path / "images.idx").write_bytes(data[:cut])
    with pytest.raises(DataFormatError, match=r"images\.idx.*(truncated|too short)"):
        fashion_mnist.read_idx(tmp_path / "images.idx")


def test_read_idx_too_long_and_truncated_gzip(tmp_path):
    data = make_idx(np.zeros(4, np.uint8), compress=False) + b"\x00"
    with pytest.raises(DataFormatError, match="too long"):
        fashion_mnist.read_idx(io.BytesIO(data))
    gz = make_idx(np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.gz.*gzip"):
        fashion_mnist.read_idx(tmp_path / "cut.gz")


def content_hashes(files):
    """sha256s for fashion_mnist.load_data: the hashes of the decompressed files, by official name."""
    return {name if name.endswith(".gz") else name + ".gz": sha256_hex(gzip.decompress(data)
                                                                       if name.endswith(".gz") else data)
            for name, data in files.items()}


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_from_local_directory(tmp_path, compress):
    files, arrays = make_fashion_files(40, 10, compress=compress)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ChecksumError, match="not the official Fashion-MNIST file.*sha256s="):
        fashion_mnist.load_data(path=tmp_path)        # local copies are hash-checked too
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(path=tmp_path, sha256s=content_hashes(files))
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_train, arrays["y_train"])
    np.testing.assert_array_equal(x_test, arrays["x_test"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def test_fashion_local_directory_missing_file(tmp_path):
    files, _ = make_fashion_files(10, 5)
    for name, data in files.items():
        if not name.startswith("t10k-labels"):
            (tmp_path / name).write_bytes(data)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist.load_data(path=tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        fashion_mnist.load_data(path=tmp_path / "no-such-dir")


def test_fashion_local_directory_mixed_up_files(tmp_path):
    files, _ = make_fashion_files(10, 5)
    files["train-labels-idx1-ubyte.gz"] = files["t10k-labels-idx1-ubyte.gz"]  # 5 labels, 10 images
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataFormatError, match="10 images but 5 labels"):
        fashion_mnist.load_data(path=tmp_path, sha256s=content_hashes(files))


def test_fashion_via_mirror_with_sha256s(loopback_server, tmp_path):
    files, arrays = make_fashion_files(40, 10)
    for name, data in files.items():
        loopback_server.add(f"/mirror/{name}", data)
    sha256s = content_hashes(files)
    base_url = loopback_server.url("/mirror/")
    data = fashion_mnist.load_data(base_url=base_url, sha256s=sha256s, cache_dir=tmp_path)
    assert_mnist_like(data, 40, 10)
    np.testing.assert_array_equal(data[0][0], arrays["x_train"])
    assert files_in(tmp_path / "fashion-mnist") == sorted(files)
    fashion_mnist.load_data(base_url=base_url.rstrip("/"), sha256s=sha256s, cache_dir=tmp_path)
    assert all(loopback_server.count(f"/mirror/{name}") == 1 for name in files)  # cache hits


def test_fashion_mirror_with_official_hashes_is_rejected(loopback_server, tmp_path):
    files, _ = make_fashion_files(10, 5)
    for name, data in files.items():
        loopback_server.add(f"/m/{name}", data)
    with pytest.raises(ChecksumError, match=fashion_mnist.SHA256S["train-images-idx3-ubyte.gz"]):
        fashion_mnist.load_data(base_url=loopback_server.url("/m/"), cache_dir=tmp_path)
    assert files_in(tmp_path) == []


def test_fashion_offline_explains_the_ways_out(tmp_path):
    with pytest.raises(DownloadError) as info:
        fashion_mnist.load_data(base_url=refused_url("/"), cache_dir=tmp_path)
    message = str(info.value)
    assert "path=" in message and "base_url=" in message and "official hashes" in message


def test_fashion_rejects_unknown_sha256s_names():
    with pytest.raises(ValueError, match="train-images.gz"):
        fashion_mnist.load_data(base_url="http://127.0.0.1:9/", sha256s={"train-images.gz": "0" * 64})


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_from_debian_package():
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(path=FASHION_DIR)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert set(np.unique(y_train)) == set(range(10))
    assert np.bincount(y_test).tolist() == [1000] * 10


# --- nothing that is not the dataset is ever cached ---------------------------------------

HTML = b"<!DOCTYPE html><html><body><h1>Welcome to our mirror</h1></body></html>"


def test_a_web_page_in_place_of_mnist_is_never_cached(loopback_server, tmp_path):
    url = loopback_server.add("/mnist.npz", HTML)
    with pytest.raises(DataFormatError) as info:
        mnist.load_data(url=url, cache_dir=tmp_path)
    message = str(info.value)
    assert "web page" in message and "nothing was cached" in message
    assert "sha256" not in message and "allow_pickle" not in message     # no advice that caches it
    # even with the page's own hash, it is not cached
    with pytest.raises(DataFormatError, match="web page"):
        mnist.load_data(url=url, sha256=sha256_hex(HTML), cache_dir=tmp_path)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("arrays, match", [
    ({"x_train": np.zeros((2, 28, 28), np.uint8)}, "lacks the arrays"),
    ({**make_arrays(4, 2), "x_train": np.zeros((4, 28, 28), np.float32)}, "uint8"),
    ({**make_arrays(4, 2), "x_test": np.zeros((2, 32, 32), np.uint8)}, r"\(n, 28, 28\)"),
    ({**make_arrays(4, 2), "y_train": np.array([{"a": 1}] * 4, dtype=object)}, "object array"),
])
def test_a_wrong_npz_from_a_mirror_is_never_cached(loopback_server, tmp_path, arrays, match):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    url = loopback_server.add("/mnist.npz", buffer.getvalue())
    with pytest.raises(DataFormatError, match=match) as info:
        mnist.load_data(url=url, sha256=sha256_hex(buffer.getvalue()), cache_dir=tmp_path)
    assert "allow_pickle" not in str(info.value)
    assert files_in(tmp_path) == []


def test_a_well_formed_mirror_copy_with_another_hash_gets_sha256_advice(loopback_server, served_mnist, tmp_path):
    url, _, _ = served_mnist
    with pytest.raises(ChecksumError, match="well-formed mnist.npz.*sha256="):
        mnist.load_data(url=url, cache_dir=tmp_path)


@pytest.mark.parametrize("bad", ["abc", "0" * 63, "g" * 64, "0" * 65, 123, None])
def test_sha256_is_checked_before_any_download(loopback_server, served_mnist, tmp_path, bad):
    url, _, _ = served_mnist
    with pytest.raises((TypeError, ValueError), match="sha256 must be a SHA-256: 64 hexadecimal digits"):
        mnist.load_data(url=url, sha256=bad, cache_dir=tmp_path)
    assert loopback_server.count("/mnist.npz") == 0
    with pytest.raises(ValueError, match="64 hexadecimal"):
        fashion_mnist.load_data(base_url=url, sha256s={"t10k-labels-idx1-ubyte.gz": "abc"}, cache_dir=tmp_path)


@pytest.mark.parametrize("url", ["file:///data/mnist.npz", "ftp://mirror.example/mnist.npz", "/data/mnist.npz"])
def test_only_http_and_https_urls_are_downloaded(loopback_server, served_mnist, tmp_path, url):
    """Not requests' "No connection adapters": what is wrong and the ways out, before the cache
    is looked at, so a cached copy does not hide the mistake on one machine only."""
    served, sha256, _ = served_mnist
    mnist.load_data(url=served, sha256=sha256, cache_dir=tmp_path)              # now cached
    with pytest.raises(ValueError, match=f"Only http:// and https:// URLs are downloaded, got '{url}'.*"
                                         r"\n.*mnist.load_data\(path="):
        mnist.load_data(url=url, sha256=sha256, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=f"(?s)got '{url.rsplit('/', 1)[0]}/train-images-idx3-ubyte.gz'.*"
                                         r"fashion_mnist.load_data\(path="):
        fashion_mnist.load_data(base_url=url.rsplit("/", 1)[0], cache_dir=tmp_path)
    assert loopback_server.count("/mnist.npz") == 1


def test_a_local_file_url_says_path_is_the_way_to_load_it(tmp_path):
    with pytest.raises(ValueError, match=r"a file on this machine is loaded with path=\.\.\., not downloaded"):
        mnist.load_data(url=(tmp_path / "mnist.npz").as_uri(), cache_dir=tmp_path)


def test_fashion_idx_files_given_as_mnist_say_which_loader_to_use(tmp_path):
    files, _ = make_fashion_files(10, 5)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST.*fashion_mnist.load_data.*--dataset fashion-mnist"):
        mnist.load_data(path=tmp_path)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        mnist.load_data(path=tmp_path / "train-images-idx3-ubyte.gz")


def test_fashion_hashes_are_of_the_decompressed_bytes(loopback_server, tmp_path):
    """The same contents, compressed differently (as Debian recompresses), pass the same check."""
    files, arrays = make_fashion_files(10, 5)
    hashes = content_hashes(files)
    for name, data in files.items():
        recompressed = gzip.compress(gzip.decompress(data), compresslevel=1, mtime=12345)
        assert recompressed != data
        loopback_server.add(f"/re/{name}", recompressed)
    data = fashion_mnist.load_data(base_url=loopback_server.url("/re/"), sha256s=hashes, cache_dir=tmp_path)
    np.testing.assert_array_equal(data[0][0], arrays["x_train"])
    assert fashion_mnist.idx_sha256(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") == \
        hashes["train-images-idx3-ubyte.gz"]


def test_a_web_page_in_place_of_a_fashion_file_is_never_cached(loopback_server, tmp_path):
    files, _ = make_fashion_files(10, 5)
    for name in files:
        loopback_server.add(f"/h/{name}", HTML)
    with pytest.raises(DataFormatError, match="web page.*nothing was cached"):
        fashion_mnist.load_data(base_url=loopback_server.url("/h/"), cache_dir=tmp_path)
    assert files_in(tmp_path) == []


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_recompressed_copy_matches_the_official_content_hashes():
    for name in fashion_mnist.FILENAMES:
        assert fashion_mnist.idx_sha256(FASHION_DIR / name) == fashion_mnist.SHA256S[name]


def test_offline_each_retry_is_one_short_line(tmp_path, caplog):
    url = refused_url()
    with caplog.at_level("WARNING", logger="tinycnn.datasets.download"):
        with pytest.raises(DownloadError):
            mnist.load_data(url=url, cache_dir=tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == download.RETRIES
    assert all(len(line) < 100 and "\n" not in line for line in lines), lines
    assert lines[0] == "Download of mnist.npz failed (connection failed); retry 1 of 3 in 0.001 s."
