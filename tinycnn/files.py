"""Writing a file so that a crash never leaves half of it behind.

``atomic_write(path, write)`` writes into a temporary file in the same directory, flushes it to
disk, and only then renames it over ``path`` with ``os.replace`` -- a single step on POSIX and
Windows. Until that rename, an earlier file at ``path`` is untouched; if anything fails (an
error, Ctrl-C), the temporary file is removed. Models, metrics and figures are saved this way.
"""

import os
import tempfile


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
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory)
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
