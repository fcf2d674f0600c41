"""Every notebook in examples/notebooks runs top to bottom, on small data made here, with no network.

The notebooks are committed with their outputs stripped; this checks that too. Notebook 3 reads
Fashion-MNIST from the directory in ``TINYCNN_FASHION_MNIST``: here, four tiny IDX files of random
images, so the test needs neither the real data nor a network (proxies pointing at a closed port
make any download fail at once). It gets the numbers examples/mnist.py gets with the same seed,
images and epochs, and says what it will download before it does.
"""

import glob
import gzip
import hashlib
import importlib.util
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


def run(notebook, path, allow_errors=False):
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(path)}}).execute()


def printed(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


# -- notebook 3: the script's numbers, and a word before any download ---------------------------------

TRAIN_AND_LOOK = os.path.join(ROOT, "examples", "notebooks", "3_train_and_look_inside.ipynb")
RESULTS = ("import json\n"
           "test_loss, test_accuracy = model.evaluate(x_test, y_test)\n"
           "print(json.dumps({'test_loss': test_loss, 'test_accuracy': test_accuracy, "
           "'history': history.history}))")


def test_notebook_3_gets_the_numbers_of_the_script(small_data, monkeypatch):
    """The same seed, images and epochs: the same weights, the same shuffling, the same numbers,
    to the last digit (the notebook's data and training cells, then what the script reports)."""
    notebook = nbformat.read(TRAIN_AND_LOOK, as_version=4)
    training = [c for c in notebook.cells if c.cell_type == "code" and "model.fit(" in c.source]
    data = [c for c in notebook.cells if c.cell_type == "code" and "load_data(" in c.source]
    assert len(training) == len(data) == 1 and "seed=SEED" in training[0].source
    notebook.cells = data + training + [nbformat.v4.new_code_cell(RESULTS)]
    run(notebook, small_data)
    from_notebook = json.loads(printed(notebook.cells[-1]))

    from tinycnn.datasets import fashion_mnist
    monkeypatch.setattr(fashion_mnist, "SHA256S", json.loads(os.environ["TINYCNN_FASHION_MNIST_SHA256S"]))
    spec = importlib.util.spec_from_file_location("mnist_example", os.path.join(ROOT, "examples", "mnist.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = small_data / "run"
    script.main(["--dataset", "fashion-mnist", "--data", os.environ["TINYCNN_FASHION_MNIST"], "--seed", "0",
                 "--limit", os.environ["TINYCNN_NOTEBOOK_TRAIN"], "--epochs", os.environ["TINYCNN_NOTEBOOK_EPOCHS"],
                 "--out", str(out)])
    from_script = json.loads((out / "metrics.json").read_text())
    assert from_script["train_images"] == 300 and len(from_script["history"]["loss"]) == 1
    assert {k: from_script[k] for k in from_notebook} == from_notebook


def test_notebook_3_says_what_it_will_download_and_where_before_it_does(small_data, monkeypatch):
    monkeypatch.setenv("TINYCNN_FASHION_MNIST", str(small_data / "not-here"))
    notebook = nbformat.read(TRAIN_AND_LOOK, as_version=4)
    data = next(c for c in notebook.cells if c.cell_type == "code" and "load_data(" in c.source)
    fast = nbformat.v4.new_code_cell("import tinycnn.datasets.download as d\nd.RETRIES = 0")   # fail at once
    notebook.cells = [fast, data]
    run(notebook, small_data, allow_errors=True)
    kinds = [o.output_type for o in data.outputs]
    assert kinds[0] == "stream" and "error" in kinds, kinds          # said first, then tried (offline here)
    said = printed(data)
    cache = small_data / "home" / "datasets" / "fashion-mnist"       # TINYCNN_HOME/datasets/fashion-mnist
    assert f"There is no {small_data / 'not-here'}" in said
    assert "30 MB" in said and "https://storage.googleapis.com/tensorflow/tf-keras-datasets/" in said
    assert str(cache) in said, said

