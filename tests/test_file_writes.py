"""Writing files: every file is written whole or not at all, with the permissions the umask allows; a temporary
file left by a killed write is removed by the next write to the same path, a live one is not; an output
location that cannot be written is refused with one clear message before any work."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from aep_core.checkpoint import atomic_write_bytes, read_checkpoint, rewrite_meta
from aep_core.errors import AepError
from aep_core.paths import shipped_models_dir

SHIPPED = shipped_models_dir() / "aep_hybrid.pt"


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the old one afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(umask, tmp_path, mask, expected):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert mode(tmp_path / "a.bin") == expected
    ckpt = tmp_path / "m.pt"
    shutil.copy(SHIPPED, ckpt)
    os.chmod(ckpt, 0o600)
    rewrite_meta(ckpt, read_checkpoint(ckpt).meta)  # a checkpoint rewritten in place
    assert mode(ckpt) == expected


def test_a_stale_temporary_is_removed_by_the_next_write_and_a_fresh_one_is_kept(tmp_path):
    stale, fresh = tmp_path / ".m.pt.abcd1234.tmp", tmp_path / ".m.pt.efgh5678.tmp"
    other = tmp_path / ".other.pt.abcd1234.tmp"  # another file's temporary is not ours to judge here
    for p in (stale, fresh, other):
        p.write_bytes(b"x" * 1000)
    old = time.time() - 600
    for p in (stale, other):
        os.utime(p, (old, old))
    atomic_write_bytes(tmp_path / "m.pt", b"new")
    assert (tmp_path / "m.pt").read_bytes() == b"new"
    assert not stale.exists()
    assert fresh.exists() and other.exists()


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "m.bin"
    target.write_bytes(b"old")

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AepError) as e:
        atomic_write_bytes(target, b"new" * 1000)
    message = str(e.value)
    assert str(target) in message and "full" in message and len(message.splitlines()) == 1
    assert target.read_bytes() == b"old"
    assert temporaries(tmp_path) == []


def test_the_writer_refuses_a_directory_and_a_file_in_the_way(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(AepError, match="is a directory"):
        atomic_write_bytes(tmp_path / "d", b"x")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(AepError, match="not a folder"):
        atomic_write_bytes(tmp_path / "f" / "sub" / "m.pt", b"x")


def test_check_writable(tmp_path):
    from aep_core.outputs import check_writable

    assert check_writable(tmp_path / "new" / "deeper" / "m.pt") == tmp_path / "new" / "deeper" / "m.pt"
    assert (tmp_path / "new" / "deeper").is_dir() and list((tmp_path / "new" / "deeper").iterdir()) == []
    with pytest.raises(AepError, match="does not exist"):
        check_writable(tmp_path / "missing" / "m.pt", create_parents=False)
    assert not (tmp_path / "missing").exists()
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(AepError, match="does not accept new files"):
            check_writable(folder / "m.pt")
    finally:
        folder.chmod(0o700)
