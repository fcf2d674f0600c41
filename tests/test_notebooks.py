"""Every notebook in examples/notebooks runs top to bottom, on small data made here, with no network.

The notebooks are committed with their outputs stripped; this checks that too. Notebook 3 reads
Fashion-MNIST from the directory in ``TINYCNN_FASHION_MNIST``: here, four tiny IDX files of random
images, so the test needs neither the real data nor a network (proxies pointing at a closed port
make any download fail at once).
"""

import glob
import gzip
import hashlib
import json
import os
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install '.[test]' brings nbformat, nbclient, ipykernel")
nbclient = pytest.importorskip("nbclient")

from loopback_server import make_fashion_files  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "examples", "notebooks", "*.ipynb")))
BUDGET_S = 60          # all of them together
TIMES = {}


def test_there_are_three_notebooks():
    assert [os.path.basename(p) for p in NOTEBOOKS] == [
        "1_a_layer_by_hand.ipynb", "2_convolution_as_im2col.ipynb", "3_train_and_look_inside.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip the outputs before committing"


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    data = tmp_path / "fashion-mnist"
    data.mkdir()
    files, _ = make_fashion_files(n_train=300, n_test=100)
    for name, payload in files.items():
        (data / name).write_bytes(payload)
    monkeypatch.setenv("TINYCNN_FASHION_MNIST", str(data))
    hashes = {name: hashlib.sha256(gzip.decompress(payload)).hexdigest() for name, payload in files.items()}
    monkeypatch.setenv("TINYCNN_FASHION_MNIST_SHA256S", json.dumps(hashes))   # not the official files
    monkeypatch.setenv("TINYCNN_NOTEBOOK_TRAIN", "300")
    monkeypatch.setenv("TINYCNN_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("TINYCNN_HOME", str(tmp_path / "home"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")      # no network: any download fails fast
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, small_data):
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(small_data)}}).execute()
    TIMES[os.path.basename(path)] = seconds = time.perf_counter() - start
    print(f"{os.path.basename(path)}: {seconds:.1f} s")
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert sum(TIMES.values()) < BUDGET_S, f"the notebooks took {TIMES}, over {BUDGET_S} s together"
