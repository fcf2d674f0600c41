"""Writing a file so that a crash never leaves half of it behind.

``atomic_write(path, write)`` writes into a temporary file in the same directory, flushes it to
disk, and only then renames it over ``path`` with ``os.replace`` -- a single step on POSIX and
Windows. Until that rename, an earlier file at ``path`` is untouched; if anything fails (an
error, Ctrl-C), the temporary file is removed. Models, metrics and figures are saved this way.

Every error names ``path``, the file asked for, and never the temporary file. What the system
would only refuse after the whole file was written (a missing directory, a ``path`` that is a
directory) is refused before writing starts. A file or directory marked read-only (no write
permission bit) is refused too, although a rename could replace it: a rename needs permission
to change the directory, not the file, and root may write anywhere.

The temporary name is ``.NAME.XXXXXXXX.part``, NAME being the first 40 characters of the
target's name: short enough for any legal target name (a file name may have 255 bytes), and
still saying whose it is.

A process killed outright (SIGKILL, a power cut) cannot remove its temporary file, so a writer
holds an exclusive lock on it until it is renamed, and the next write to the same path removes
every ``.NAME.*.part`` beside it that nobody holds: the leftovers of dead writes. On POSIX the lock is
``flock``, which the system releases when a process dies; on Windows an open file cannot be
deleted, so a live writer's file survives the attempt.
"""

import errno
import glob
import os
import tempfile

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None

#: How much of the target's name the temporary name keeps (see the module docstring).
NAME_KEPT = 40

#: What an error number means for a save, where the system's words (strerror) are not enough.
WHY = {
    errno.EACCES: "you have no permission to write there",
    errno.EPERM: "you have no permission to write there",
    errno.ENAMETOOLONG: "the name is longer than the file system allows (usually 255 bytes)",
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
}


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

    Raises an ``OSError`` naming ``path`` (``FileNotFoundError``, ``PermissionError``, ...) when
    it cannot be written; ``path`` is then unchanged and no temporary file remains.
    """
    path = os.fsdecode(os.fspath(path))
    check_writable(path)
    try:
        fd, tmp = part_file(path)
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())               # on disk before the rename makes it visible
            os.chmod(tmp, _file_mode(path))    # mkstemp makes it private (0600)
            if fcntl is not None:              # POSIX: renamed while still locked, so no other
                os.replace(tmp, path)          # write takes it for a dead one's and removes it
        if fcntl is None:                      # Windows cannot rename an open file
            os.replace(tmp, path)
        _sync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno and err.filename in (None, tmp, path):
            raise cannot_write(path, err) from None   # the chained error would name tmp
        raise                                  # Ctrl-C, or the writer's own error


def _sync_directory(directory):
    """fsync ``directory``, so that the new name a rename gave a file is on disk too: without it,
    a power cut after the rename can leave the old file (or none) under that name. POSIX only:
    Windows cannot open a directory to sync it, and NTFS journals renames itself."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path):
    """Refuse, naming ``path``, a write that would fail only once the file is written, or that
    the system would let through although the file or its directory is marked read-only."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise OSError(errno.ENOTDIR, f"Cannot write {path!r}: {directory!r} is a file, not a "
                                         "directory. Choose another path.")
        raise OSError(errno.ENOENT, f"Cannot write {path!r}: the directory {directory!r} does not "
                                    "exist. Create it first (os.makedirs) or choose another path.")
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, f"Cannot write {path!r}: it is a directory. Give the path of "
                                    "a file, inside it or elsewhere.")
    for what, name in (("file", path), ("directory", directory)):
        why = os.path.exists(name) and unwritable(name)
        if why:
            raise OSError(errno.EACCES, f"Cannot write {path!r}: the {what} {name!r} {why}. Make it "
                                        "writable (chmod u+w) or choose another path.")


def unwritable(name):
    """Why this process must not write the file or directory ``name``, or None.

    The mode bits are read directly because ``os.access`` says yes to root whatever they are:
    a file that nobody may write is left alone, whoever saves.
    """
    mode = os.stat(name).st_mode & 0o777
    if mode & 0o222 == 0:
        return f"is read-only (mode {mode:#o})"
    if not os.access(name, os.W_OK):
        return f"is not writable by this user (mode {mode:#o})"
    return None


def cannot_write(path, err):
    """``err``, an OSError met while writing ``path``, as the same kind of error naming ``path``."""
    why = WHY.get(err.errno, err.strerror or str(err))
    return OSError(err.errno, f"Cannot write {path!r}: {why}.")


def part_file(path):
    """A new, locked temporary file ``.NAME.XXXXXXXX.part`` beside ``path``: (fd, its path).

    First removes the temporary files that dead writes of ``path`` left behind. The file is
    made, then locked: a write of the same path that starts in between finds it unlocked, takes
    it for a dead one's and removes it. So a file that is gone once the lock is ours is let go,
    and another one made.
    """
    path = os.fsdecode(os.fspath(path))
    remove_stale_parts(path)
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)[:NAME_KEPT]}.", suffix=".part",
                                   dir=os.path.dirname(os.path.abspath(path)))
        if fcntl is None:                      # Windows: an open file cannot be removed
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)         # "a live writer": released when this process dies
        if os.fstat(fd).st_nlink:              # still in the directory, and no one else's to remove
            return fd, tmp
        os.close(fd)


def remove_stale_parts(path):
    """Remove the ``.NAME.*.part`` files that dead writes of ``path`` left beside it.

    A file is removed only when no process holds its lock (POSIX) or when it can be removed at
    all (Windows, where a live writer's open file cannot be). Failures are ignored: this is
    tidying, and the write itself must not fail because of it. A dead write of another path
    whose name starts with the same 40 characters is tidied too: it is no live writer's.
    """
    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    name = glob.escape(os.path.basename(path)[:NAME_KEPT])
    pattern = os.path.join(glob.escape(os.path.dirname(path)), f".{name}.{'?' * 8}.part")
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
