"""Writing a file so that a crash never leaves half of it behind.

``atomic_write(path, write)`` writes into a temporary file in the same directory, flushes it to
disk, and only then renames it over ``path`` with ``os.replace`` -- a single step on POSIX and
Windows. Until that rename, an earlier file at ``path`` is untouched; if anything fails (an
error, Ctrl-C), the temporary file is removed. Models, metrics and figures are saved this way.

A process killed outright (SIGKILL, a power cut) cannot remove its temporary file, so a writer
holds an exclusive lock on it while writing, and the next write to the same path removes every
``.NAME.*.part`` beside it that nobody holds: the leftovers of dead writes. On POSIX the lock is
``flock``, which the system releases when a process dies; on Windows an open file cannot be
deleted, so a live writer's file survives the attempt.
"""

import glob
import os
import tempfile

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None


def _umask():
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def _file_mode(path):
    """Permissions for the new file: an existing file's, else 0o666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place.

    Raises ``OSError`` naming the directory when it is missing or not writable.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = part_file(path)
    except OSError as err:
        raise OSError(f"Cannot write {path!r}: the directory {directory!r} is missing or not "
                      f"writable ({err.strerror}). Choose another path.") from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())               # on disk before the rename makes it visible
        os.chmod(tmp, _file_mode(path))        # mkstemp makes it private (0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def part_file(path):
    """A new, locked temporary file ``.NAME.XXXXXXXX.part`` beside ``path``: (fd, its path).

    First removes the temporary files that dead writes of ``path`` left behind.
    """
    path = os.fspath(path)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                               dir=os.path.dirname(os.path.abspath(path)))
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)         # "a live writer": released when this process dies
    return fd, tmp


def remove_stale_parts(path):
    """Remove the ``.NAME.*.part`` files that dead writes of ``path`` left beside it.

    A file is removed only when no process holds its lock (POSIX) or when it can be removed at
    all (Windows, where a live writer's open file cannot be). Failures are ignored: this is
    tidying, and the write itself must not fail because of it.
    """
    path = os.path.abspath(os.fspath(path))
    pattern = os.path.join(glob.escape(os.path.dirname(path)), f".{glob.escape(os.path.basename(path))}.{'?' * 8}.part")
    for part in glob.glob(pattern):
        try:
            if fcntl is None:
                os.remove(part)
                continue
            fd = os.open(part, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its writer lives
                os.remove(part)
            finally:
                os.close(fd)
        except OSError:
            pass
