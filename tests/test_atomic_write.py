"""atomic_write makes a file durable in the order a crash needs, with the mode a plain write gives.

The order: data, then name, then directory.

A rename is atomic, but a file system may write it to disk before the file's data: after a
power cut the new name can then point at an empty or half-written file. So the data must be
flushed to disk (``fsync`` of the file) *before* ``os.replace`` makes it visible under its
name, and the rename itself is on disk only once the directory that holds the name is synced
(``fsync`` of the directory, after the rename), as SQLite, git and PostgreSQL do.

The order is observed by wrapping ``os.fsync`` and ``os.replace`` as ``tinycnn.files`` calls
them, recording what each call touched (the inode it synced, whether it was a directory, the
file's size at that moment; the inode renamed).

The mode: the temporary file is made private (``mkstemp``: 0600), but the file that ends up at
the path has the permissions ``open(path, "w")`` would give it (0666 less the umask), or, when
it replaces a file, that file's.
"""

import os
import stat
import sys

import pytest

from conftest import seed_model
from tinycnn import files

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fsync of a directory is POSIX")


@pytest.fixture
def calls(monkeypatch):
    """The fsync and replace calls tinycnn.files makes, in order."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(("fsync", st.st_ino, stat.S_ISDIR(st.st_mode), st.st_size))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        log.append(("replace", os.stat(src).st_ino, os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    return log


def the_rename(log, path):
    renames = [i for i, call in enumerate(log) if call[0] == "replace" and call[2] == os.fspath(path)]
    assert len(renames) == 1, log
    return renames[0], log[renames[0]][1]


@pytest.mark.parametrize("existing", [False, True])
def test_the_whole_file_is_synced_before_the_rename(tmp_path, calls, existing):
    path = tmp_path / "out.bin"
    if existing:
        path.write_bytes(b"old")
    payload = b"x" * 100_000
    files.atomic_write(path, lambda f: f.write(payload))
    assert path.read_bytes() == payload
    at, inode = the_rename(calls, path)
    synced = [call for call in calls[:at] if call[0] == "fsync" and call[1] == inode]
    assert synced, f"the file's data was not synced before the rename: {calls}"
    assert synced[-1][3] == len(payload), "fsync ran before the whole file was written"
    assert os.stat(path).st_ino == inode


def test_a_saved_model_is_synced_before_its_rename(tmp_path, calls):
    path = tmp_path / "model.npz"
    seed_model().save(path)
    at, inode = the_rename(calls, path)
    assert any(call[:2] == ("fsync", inode) and call[3] == os.path.getsize(path) for call in calls[:at]), calls


def test_the_directory_is_synced_after_the_rename(tmp_path, calls):
    path = tmp_path / "out.bin"
    files.atomic_write(path, lambda f: f.write(b"data"))
    at, _ = the_rename(calls, path)
    directory = os.stat(tmp_path).st_ino
    assert any(call[0] == "fsync" and call[1] == directory and call[2] for call in calls[at + 1:]), \
        f"the directory holding the new name was not synced after the rename: {calls}"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_a_new_file_gets_the_mode_open_would_give_it(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.atomic_write(tmp_path / "new.bin", lambda f: f.write(b"data"))
        with open(tmp_path / "plain.bin", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    files.atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o640
