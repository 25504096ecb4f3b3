"""Atomic file writes: the one implementation every xrdflow writer uses.

:func:`atomic_output` gives a temporary path in the directory of the target;
after the caller has written it, the file is fsync'ed, given its final mode,
moved onto the target with :func:`os.replace` (atomic on POSIX and Windows)
and the directory is fsync'ed so the rename itself survives a power cut.  On
any error or interrupt the temporary file is removed.  Readers of the target
therefore see the old file or the complete new one, never a half-written file,
and no temporary file is left behind.

File mode: a file that replaces an existing one keeps that file's permissions;
a new file gets ``0o666 & ~umask``, exactly like ``open(path, "w")``
(``tempfile.mkstemp`` would leave it 0600).  The temporary file is created
with ``os.open(..., 0o666)`` so the kernel applies the umask; the process
umask is never changed (changing it is not thread-safe).

:func:`atomic_write_bytes` and :func:`atomic_write_text` are the one-call
forms; :func:`fsync_directory` flushes a directory entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from typing import Iterator

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "check_output_path", "fsync_directory"]

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def check_output_path(path: "str | os.PathLike") -> str:
    """Raise a clear OSError/ValueError unless ``path`` can be (over)written as a
    file: it is not a directory and its directory exists. Returns the directory."""
    path = os.fspath(path)
    if not path:
        raise ValueError("output path is empty")
    if os.path.isdir(path):
        raise IsADirectoryError(f"output path {path!r} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    return directory


def fsync_directory(directory: "str | os.PathLike") -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where the OS refuses."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(directory: str, base: str, temp_name: "str | None") -> str:
    """Create an empty temporary file (mode 0o666 & ~umask) in ``directory``; returns its path."""
    if temp_name is not None:
        tmp = os.path.join(directory, temp_name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover of a killed earlier run with the same name
        os.close(os.open(tmp, _CREATE_FLAGS, 0o666))
        return tmp
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, _CREATE_FLAGS, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file for {base!r} in {directory!r}")


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike", *, make_parents: bool = False,
                  temp_name: "str | None" = None) -> Iterator[str]:
    """Context manager giving a temporary path in the directory of ``path``
    (see the module docs): write the file there; on leaving the block it is
    fsync'ed, given its mode, ``os.replace``-d onto ``path`` and the directory
    is fsync'ed.  On any error the temporary file is removed and ``path`` is
    untouched.

    make_parents: create missing parent directories (else a missing directory
        is a FileNotFoundError that names it).
    temp_name: a fixed name for the temporary file in the same directory
        (for formats that recognise and clean their own leftovers); default
        ``.<name>.<random>.tmp``.
    """
    path = os.fspath(path)
    if make_parents:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    directory = check_output_path(path)
    tmp = _create_temp(directory, os.path.basename(path), temp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # keep the permissions of the file replaced
        except FileNotFoundError:
            pass  # a new file keeps 0o666 & ~umask from its creation
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def atomic_write_bytes(path: "str | os.PathLike", data: bytes, *, make_parents: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path, make_parents=make_parents) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: "str | os.PathLike", text: str, *, encoding: str = "utf-8",
                      newline: "str | None" = None, make_parents: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_output`); ``newline`` as for :func:`open`."""
    with atomic_output(path, make_parents=make_parents) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)


def sha256_file(path: "str | os.PathLike") -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
