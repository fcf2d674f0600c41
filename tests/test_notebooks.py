"""Every notebook in examples/notebooks runs top to bottom, on small data made here, with no network.

The notebooks are committed with their outputs stripped; this checks that too. Notebook 3 reads
Fashion-MNIST from the directory in ``TINYCNN_FASHION_MNIST``: here, four tiny IDX files of random
images, so the test needs neither the real data nor a network (proxies pointing at a closed port
make any download fail at once). It gets the numbers examples/mnist.py gets with the same seed,
images and epochs, and says what it will download before it does.

Notebook 4 holds exercises: blanks a learner fills, each followed by a check cell that prints a
verdict. Run as committed, every check says "Not yet"; with the answers in
tests/notebook_solutions/4_exercises.py written into the blanks, every check says "Correct"; and
with a learner's usual mistakes there, the verdicts name them.
"""

import glob
import gzip
import hashlib
import importlib.util
import json
import os
import re
import runpy
import textwrap
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install '.[test]' brings nbformat, nbclient, ipykernel")
nbclient = pytest.importorskip("nbclient")

from loopback_server import make_fashion_files  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "examples", "notebooks", "*.ipynb")))
BUDGET_S = 60          # all of them together
TIMES = {}


def test_there_are_four_notebooks():
    assert [os.path.basename(p) for p in NOTEBOOKS] == [
        "1_a_layer_by_hand.ipynb", "2_convolution_as_im2col.ipynb", "3_train_and_look_inside.ipynb",
        "4_exercises.ipynb"]


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


# -- notebook 4: the exercises ------------------------------------------------------------------------

EXERCISES = os.path.join(ROOT, "examples", "notebooks", "4_exercises.ipynb")
ANSWERS = runpy.run_path(os.path.join(ROOT, "tests", "notebook_solutions", "4_exercises.py"))
#: A blank: from its marker line to the line that closes it, at the same indentation.
BLANK = re.compile(r"^(?P<indent>[ \t]*)# YOUR CODE HERE \((?P<name>\w+)\)\n.*?^(?P=indent)# END OF YOUR CODE$",
                   flags=re.M | re.S)


def fill_blanks(notebook, bodies):
    """Write ``bodies[name]`` into the blank marked ``# YOUR CODE HERE (name)``, markers kept."""
    filled = []

    def fill(match):
        indent, name = match["indent"], match["name"]
        filled.append(name)
        body = textwrap.indent(textwrap.dedent(bodies[name]).strip("\n"), indent)
        return f"{indent}# YOUR CODE HERE ({name})\n{body}\n{indent}# END OF YOUR CODE"

    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = BLANK.sub(fill, cell.source)
    assert sorted(filled) == sorted(bodies), f"blanks {filled}, answers for {sorted(bodies)}"


def run_exercises(tmp_path, bodies=None):
    """Run notebook 4 (its blanks filled with ``bodies`` if given); return, for each check cell,
    the verdicts it printed: [(kind, the whole verdict), ...]."""
    notebook = nbformat.read(EXERCISES, as_version=4)
    if bodies is not None:
        fill_blanks(notebook, bodies)
    run(notebook, tmp_path)                                # a cell that raised would fail here
    for cell in notebook.cells:
        for output in getattr(cell, "outputs", []):
            assert output.output_type != "error" and output.get("name") != "stderr", output
            assert "Traceback" not in output.get("text", "")
    checks = [c for c in notebook.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == 3
    verdicts = []
    for cell in checks:
        text = printed(cell)
        found = re.findall(r"^(Correct|Not yet): (.*?)(?=^Correct: |^Not yet: |\Z)", text, flags=re.M | re.S)
        assert "".join(f"{kind}: {rest}" for kind, rest in found) == text, "every line belongs to a verdict"
        assert len(found) == len(re.findall(r"^check\(", cell.source, flags=re.M)), text    # one per check
        verdicts.append([(kind, rest.strip()) for kind, rest in found])
    return verdicts


def test_the_exercises_with_the_answers_written_in_are_all_correct(tmp_path):
    verdicts = run_exercises(tmp_path, ANSWERS["SOLUTIONS"])
    assert [kind for cell in verdicts for kind, _ in cell] == ["Correct"] * 5, verdicts


def test_the_exercises_left_blank_say_not_yet_and_run_to_the_end(tmp_path):
    verdicts = run_exercises(tmp_path)
    assert [kind for cell in verdicts for kind, _ in cell] == ["Not yet"] * 5, verdicts
    for cell in verdicts:
        for _, verdict in cell:
            assert "backward still raises NotImplementedError; replace that line" in verdict


def test_the_exercises_say_what_is_wrong_with_a_learners_usual_mistakes(tmp_path):
    mistakes = ANSWERS["MISTAKES"]
    verdicts = run_exercises(tmp_path, {name: body for name, (body, _) in mistakes.items()})
    expected = [said for _, said in mistakes.values()]
    for cell, wanted in zip(verdicts, expected):
        assert [kind for kind, _ in cell] == [kind for kind, _ in wanted], cell
        for (_, verdict), (_, phrase) in zip(cell, wanted):
            assert phrase in verdict, (phrase, verdict)
    pooling = verdicts[1][1][1]                       # dL/dx wrong: the relative error and a hint
    assert "relative error" in pooling and "Hint: every input pixel receives" in pooling
