"""Creating files safely: never through a symlink planted at the final path, always with the
permissions the umask allows (and an existing file's own, when we replace it).

Every file etl creates goes through here: the run lock (:func:`open_lock`), the archive's
``.partial`` file (:func:`create_new`) and the report (:func:`replace_file`). Another local user
who can write to the folder cannot make us truncate or write a file of their choosing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import IO

_NEW = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MODE = 0o666
"""Asked of the kernel, which takes the umask away: 0644 under the usual umask 022."""


def create_new(path: str | os.PathLike[str]) -> IO[bytes]:
    """Creates ``path`` for writing; it must not exist, not even as a symlink.

    Raises:
        FileExistsError: Something (a file, a symlink) is already there.
        OSError: The folder cannot be written.
    """
    fd = os.open(path, os.O_WRONLY | _NEW, _MODE)
    return os.fdopen(fd, "wb")


def open_lock(path: str | os.PathLike[str]) -> int:
    """Opens (creating if needed) a lock file for reading and writing, without truncating it.

    Returns:
        The file descriptor; the caller closes it.

    Raises:
        OSError: A symlink (``ELOOP``), something that is not a regular file, or no access.
    """
    # O_NONBLOCK: a FIFO planted at the path must not hang the open.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, _MODE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{os.fspath(path)} is not a regular file")
    return fd


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a fresh name beside ``path``, then renames it over ``path``.

    The rename replaces whatever is at ``path`` (a symlink included: its target is untouched).
    A new file gets the umask's permissions; an existing regular file keeps its own (a report
    someone made 0600 stays 0600).

    Raises:
        OSError: The folder cannot be written.
    """
    final = Path(path)
    keep: int | None = None
    with contextlib.suppress(FileNotFoundError):
        before = os.lstat(final)
        keep = stat.S_IMODE(before.st_mode) if stat.S_ISREG(before.st_mode) else None
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
    try:
        with create_new(temporary) as out:
            if keep is not None:
                os.fchmod(out.fileno(), keep)
            out.write(data)
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
