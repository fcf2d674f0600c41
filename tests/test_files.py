"""atomic_write: what a save killed outright leaves behind is cleaned up by the next save."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import seed_model
from tinycnn import files
from tinycnn.files import atomic_write, part_file, remove_stale_parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SLOW_SAVE = """
import sys, time
from tinycnn.files import atomic_write
def write(f):
    f.write(b"x" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def parts(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".part"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    target = tmp_path / "model.npz"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    (tmp_path / ".model.npz.deadbeef.part").write_bytes(b"x" * 100)   # as an older dead save left it
    assert len(parts(tmp_path)) == 2 and not target.exists()
    (tmp_path / ".other.npz.abcdefgh.part").write_bytes(b"")     # another path's: not ours to remove
    seed_model().save(target)
    assert parts(tmp_path) == [".other.npz.abcdefgh.part"] and target.stat().st_size > 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock")
def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    target = tmp_path / "m.bin"
    fd, tmp = part_file(target)                # held (locked) as a save in progress holds it
    try:
        remove_stale_parts(target)
        assert os.path.exists(tmp)
        atomic_write(target, lambda f: f.write(b"done"))
        assert os.path.exists(tmp) and target.read_bytes() == b"done"
    finally:
        os.close(fd)
    time.sleep(0)
    atomic_write(target, lambda f: f.write(b"again"))   # now nobody holds it: removed
    assert parts(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock")
def test_a_temporary_file_removed_before_its_lock_is_made_anew(tmp_path, monkeypatch):
    """part_file makes its file, then locks it. A write of the same path that tidies in between
    removes it as a dead write's: part_file then makes another, and returns one that exists."""
    real_mkstemp, made = tempfile.mkstemp, []

    def mkstemp(**kwargs):
        fd, tmp = real_mkstemp(**kwargs)
        if not made:
            remove_stale_parts(tmp_path / "m.bin")          # the other write, before our lock
        made.append(tmp)
        return fd, tmp

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    fd, tmp = part_file(tmp_path / "m.bin")
    try:
        assert len(made) == 2 and not os.path.exists(made[0])
        assert tmp == made[1] and os.path.exists(tmp) and parts(tmp_path) == [os.path.basename(tmp)]
    finally:
        os.close(fd)
