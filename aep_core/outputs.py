"""Output files: a location is checked before the work that fills it starts, and every file is written whole or
not at all (a temporary file beside it, then a rename), with the permissions the umask allows. A temporary
file left behind by a write that was killed is removed by the next write to the same path.

Temporary files are named `.<name>.<8 random characters>.tmp`, in the folder of the file they become.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from aep_core.errors import AepError

STALE_SECONDS = 60.0  # a temporary file untouched this long belongs to no write still in progress

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
}
WRITE_ERRNOS = frozenset(_REASONS)  # the errors of a place that cannot be written (not of a program bug)


class OutputError(AepError, OSError):
    """An output cannot be written where asked: a directory in the way, a folder that is missing or refuses new
    files, a full disk. Also an OSError, so that code handling failed writes as such keeps doing so."""


def reason(e: OSError) -> str:
    """Why an operating-system error stopped a write, in words."""
    return _REASONS.get(e.errno, e.strerror or str(e)) if e.errno is not None else str(e)


def current_umask() -> int:
    """The process's umask, read without changing it where the system shows it (Linux)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # Reading it elsewhere means setting it: the most restrictive mask meanwhile, so that a file another
    # thread creates in that instant is never more open than intended.
    old = os.umask(0o077)
    os.umask(old)
    return old


def _folder_of(target: Path, folder: Path, create: bool) -> Path:
    """`folder`, which is to hold `target`, existing (created when missing and `create`); OutputError otherwise."""
    if folder.is_dir():
        return folder
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"Cannot write {target}: {existing} is a file, not a folder.")
    if not create:
        raise OutputError(f"Cannot write {target}: the folder {folder} does not exist.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"Cannot write {target}: the folder {folder} cannot be created ({reason(e)}).") from None
    return folder


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a directory; give a file name (e.g. {path / 'NAME'}).")


def _probe(folder: Path, target: Path) -> None:
    """OutputError unless `folder` accepts a new file (one of our temporaries, removed at once)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"Cannot write {target}: the folder {folder} does not accept new files ({reason(e)})."
        ) from None


def check_writable(path: str | Path, create_parents: bool = True) -> Path:
    """The output file `path`, once a file can be written there: it is not a directory, and its folder exists
    (created when missing and `create_parents`) and accepts new files. OutputError with one line otherwise."""
    p = Path(path)
    if str(path).strip() == "":
        raise OutputError("The output path is empty; give a file name.")
    _refuse_directory(p)
    _probe(_folder_of(p, p.parent, create_parents), p)
    return p


def check_folder(path: str | Path, create: bool = True) -> Path:
    """The output folder `path`, once it exists (created when missing and `create`) and accepts new files.
    OutputError with one line otherwise."""
    p = Path(path)
    if str(path).strip() == "":
        raise OutputError("The output folder is empty; give a folder name.")
    if p.exists() and not p.is_dir():
        raise OutputError(f"Cannot write into {p}: it is a file, not a folder.")
    _probe(_folder_of(p, p, create), p)
    return p


def stale_temporaries(path: str | Path, older_than: float = STALE_SECONDS) -> list[Path]:
    """The temporary files of `path` (`.<name>.XXXXXXXX.tmp` beside it) untouched for `older_than` seconds:
    left by writes that were killed. A younger one may belong to a write still in progress."""
    p = Path(path)
    pattern = re.compile(rf"\.{re.escape(p.name)}\.[a-z0-9_]{{8}}\.tmp")
    now = time.time()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(p.parent):
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                    found.append(Path(entry.path))
    return found


def remove_stale_temporaries(path: str | Path, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove the temporary files killed writes of `path` left beside it (see `stale_temporaries`); returns
    those removed."""
    removed = []
    for t in stale_temporaries(path, older_than):
        with contextlib.suppress(OSError):
            t.unlink()
            removed.append(t)
    return removed


def _write_all(f: BinaryIO, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: readers see the old file or the new one, never a part. The
    file gets the permissions the umask allows (as a plain `open` would give), a missing folder is created,
    and temporaries that killed writes of `path` left are removed. OutputError with one line when it cannot be
    written (a full disk, a read-only folder, a directory in the way); the old file is then left as it was."""
    p = Path(path)
    _refuse_directory(p)
    _folder_of(p, p.parent, create=True)
    remove_stale_temporaries(p)
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"Cannot write {p}: {reason(e)}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, 0o666 & ~current_umask())
        os.replace(tmp, p)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"Cannot write {p}: {reason(e)}.") from None
        raise
    _sync_folder(p.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable where the system allows it (POSIX: fsync of the folder)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
