"""examples/mnist.py end to end, as a subprocess, against the loopback server: no network."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import matplotlib.image
import pytest

from loopback_server import loopback_server, make_fashion_files, make_mnist_npz, refused_url  # noqa: F401
from tinycnn import load_model
from tinycnn.schedules import CosineDecay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "mnist.py")


def run_script(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=300)


def test_one_epoch_end_to_end(loopback_server, tmp_path):  # noqa: F811
    payload, sha256 = make_mnist_npz(n_train=400, n_test=100)
    url = loopback_server.add("/mnist.npz", payload)
    out = tmp_path / "run"
    result = run_script("--epochs", "1", "--limit", "300", "--data-url", url, "--sha256", sha256,
                        "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy: 0." in result.stdout
    assert "Drawing the figures" in result.stdout          # not silent while the PNGs render
    assert "Total params: 121,930" in result.stdout
    for name in ("history.png", "confusion_matrix.png", "predictions.png", "filters.png",
                 "feature_maps.png", "mistakes.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image.reshape(-1, image.shape[2]).std(axis=0).max() > 0.01   # not a blank image
    assert (out / "model.npz").stat().st_size > 100_000
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_loss", "test_accuracy", "history", "seconds_per_epoch", "data_source", "seed", "versions"):
        assert key in metrics
    assert set(metrics["versions"]) >= {"tinycnn", "numpy", "numba"}
    assert metrics["data_source"] == url and metrics["train_images"] == 300
    assert metrics["arch"] == "keras"
    assert len(metrics["history"]["val_accuracy"]) == 1 and len(metrics["seconds_per_epoch"]) == 1
    assert loopback_server.count("/mnist.npz") == 1


def test_help_lists_every_option():
    result = run_script("--help")
    assert result.returncode == 0
    for option in ("--epochs", "--batch-size", "--lr", "--seed", "--dataset", "--data", "--data-url",
                   "--sha256", "--cache-dir", "--out", "--limit", "--show", "--device", "--arch", "--augment"):
        assert option in result.stdout


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_arch_seed_is_a_deprecated_name_of_keras(capsys):
    """--arch seed (the old name, which read like --seed) still works, says so, and means keras."""
    example = load_example()
    assert example.parse_args([]).arch == "keras"
    assert capsys.readouterr().err == ""
    assert example.parse_args(["--arch", "seed"]).arch == "keras"
    assert "--arch seed is deprecated; it is now called --arch keras" in capsys.readouterr().err
    assert example.parse_args(["--arch", "bn-dropout"]).arch == "bn-dropout"
    with pytest.raises(SystemExit):
        example.parse_args(["--arch", "resnet"])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
    help_text = " ".join(run_script("--help").stdout.split())
    assert "--arch {keras,bn-dropout}" in help_text and "keras: the Keras MNIST CNN" in help_text
    assert "--arch seed, the old name of keras, still works but is deprecated" in help_text
    with pytest.raises(ValueError, match="arch must be one of 'keras', 'bn-dropout', got 'seed'"):
        example.build_model("seed", augment=False, seed=0)


def test_unwritable_output_folder_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("")
    (tmp_path / "some.npz").write_bytes(b"")
    result = run_script("--out", str(tmp_path / "afile" / "run"), "--data", str(tmp_path / "some.npz"))
    assert result.returncode != 0
    assert "cannot write to the output folder" in result.stderr and "--out" in result.stderr


def test_gpu_without_cupy_fails_fast_and_clearly(tmp_path):
    (tmp_path / "some.npz").write_bytes(b"")
    result = run_script("--device", "gpu", "--data", str(tmp_path / "some.npz"), "--out", str(tmp_path / "o"))
    if "cupy" in sys.modules or importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    assert result.returncode != 0 and 'pip install "tinycnn[gpu]"' in result.stderr
    assert not (tmp_path / "o").exists()                # nothing was created or loaded


def test_missing_local_data_is_a_clear_error(tmp_path):
    result = run_script("--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o"))
    assert result.returncode != 0 and "none.npz" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_download_leaves_no_folder_behind(tmp_path):
    """Offline, with the default output folder: neither the run's folder nor runs/ is left."""
    result = run_script("--data-url", refused_url(), "--sha256", "0" * 64, "--cache-dir", str(tmp_path / "cache"),
                        cwd=tmp_path)
    assert result.returncode == 1 and "Could not download" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("out", [None, "made/for/this/run"])
def test_a_diverging_run_says_which_option_to_change_and_leaves_no_folder_behind(tmp_path, out):
    payload, _ = make_mnist_npz(n_train=100, n_test=20)
    (tmp_path / "mnist.npz").write_bytes(payload)
    result = run_script("--lr", "1e30", "--batch-size", "16", "--data", str(tmp_path / "mnist.npz"),
                        *(["--out", out] if out else []), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: Training diverged at epoch 1, batch" in result.stderr        # fit's own message
    assert "With this script: try a lower --lr, such as --lr 0.001 (this run had --lr 1e+30)" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["mnist.npz"]      # neither runs/ nor made/ is left


def test_a_failed_run_keeps_an_output_folder_that_was_there_before(tmp_path):
    (tmp_path / "mine").mkdir()
    result = run_script("--data-url", refused_url(), "--sha256", "0" * 64, "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "mine"))
    assert result.returncode == 1 and "Could not download" in result.stderr, result.stderr
    assert (tmp_path / "mine").is_dir()


def test_default_output_folders_never_overwrite(tmp_path, monkeypatch):
    example = load_example()
    monkeypatch.chdir(tmp_path)
    first, second = example.new_run_dir(), example.new_run_dir()
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    assert os.path.dirname(first) == "runs"


def test_bn_dropout_with_augmentation_and_a_local_file(tmp_path):
    payload, _ = make_mnist_npz(n_train=300, n_test=60)
    (tmp_path / "mnist.npz").write_bytes(payload)
    out = tmp_path / "run"
    result = run_script("--arch", "bn-dropout", "--augment", "--schedule", "cosine", "--epochs", "1",
                        "--batch-size", "16", "--data", str(tmp_path / "mnist.npz"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch_normalization" in result.stdout and "random_rotation" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "bn-dropout" and metrics["augment"] is True and metrics["schedule"] == "cosine"
    # 300 images, 270 left after the 10% validation split: ceil(270 / 16) = 17 updates in the epoch
    schedule = load_model(out / "model.npz").optimizer.learning_rate
    assert isinstance(schedule, CosineDecay)
    assert schedule.get_config() == {"initial_learning_rate": 1e-3, "decay_steps": 17, "alpha": 0.0}
    assert (out / "feature_maps.png").exists() and (out / "mistakes.png").exists()


def test_ctrl_c_still_writes_everything_for_the_finished_epochs(tmp_path):
    payload, _ = make_mnist_npz(n_train=2000, n_test=60)
    (tmp_path / "mnist.npz").write_bytes(payload)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-u", SCRIPT, "--epochs", "200", "--data", str(tmp_path / "mnist.npz"),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT,
                            # a SIGINT that pytest's own launcher ignored would be inherited
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:                      # wait until epoch 1 has finished
            if "Epoch 2/200" in line:
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Interrupted" in stdout and "Test accuracy" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 1 <= len(metrics["history"]["loss"]) < 200
    # Ctrl-C came during epoch 2: the record and the bar say how far it got, not "57/57"
    where = metrics["interrupted_at"]
    assert where["epoch"] == 2 and 1 <= where["batch"] < where["batches"] == 57, where
    # (the lines up to "Epoch 2/200" were read above, so epoch 2's bar is the first one left)
    partial_bar = next(line for line in stdout.splitlines() if "/57 [" in line)
    assert partial_bar.startswith(f"{where['batch']}/57 ["), partial_bar
    assert f"stopped after batch {where['batch']} of 57" in stdout
    for name in ("history.png", "confusion_matrix.png", "predictions.png", "model.npz"):
        assert (out / name).exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "0"], "--lr: must be a positive number"),
    (["--lr", "-1"], "--lr: must be a positive number"),
    (["--lr", "inf"], "--lr: must be a positive number"),
    (["--lr", "fast"], "--lr: 'fast' is not a number"),
    (["--epochs", "-1"], "--epochs: must be at least 1"),
    (["--epochs", "2.5"], "--epochs: '2.5' is not a whole number"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--limit", "1"], "--limit: must be at least 2"),
    (["--seed", "-3"], "--seed: must be at least 0"),
    (["--sha256", "abc", "--data-url", "http://127.0.0.1:9/mnist.npz"], "--sha256: must be 64 hexadecimal digits"),
    (["--data", "/no/such/mnist.npz"], "no such file or directory"),
    (["--dataset", "fashion-mnist", "--sha256", "0" * 64, "--data-url", "http://127.0.0.1:9/"],
     "decompressed contents"),
    (["--data-url", "file:///data/mnist.npz", "--sha256", "0" * 64],
     "--data-url: only http and https URLs are downloaded, got 'file:///data/mnist.npz'; for a copy on "
     "this machine, pass its path with --data /data/mnist.npz"),
    (["--dataset", "fashion-mnist", "--data-url", "file:///data/fashion/"], "pass its path with --data /data/fashion/"),
    (["--data-url", "ftp://mirror.example/mnist.npz", "--sha256", "0" * 64],
     "--data-url: only http and https URLs are downloaded, got 'ftp://mirror.example/mnist.npz'"),
    (["--data-url", "mirror.example/mnist.npz", "--sha256", "0" * 64], "only http and https URLs"),
])
def test_bad_options_exit_2_before_anything_loads_or_any_folder_is_made(tmp_path, args, message):
    out = tmp_path / "o"
    result = run_script(*args, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "usage:" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_fashion_idx_files_without_dataset_option_say_which_option_to_add(tmp_path):
    files, _ = make_fashion_files(10, 5)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_script("--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "add --dataset fashion-mnist" in result.stderr
    assert not (tmp_path / "o").exists()


def test_help_shows_each_default_once_and_no_none():
    result = run_script("--help")
    text = " ".join(result.stdout.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("~/.tinycnn/datasets") == 1
    assert "--dataset {mnist,fashion-mnist} mnist: handwritten digits" in text
