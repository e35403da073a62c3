"""Zip uploads of image folders as untrusted input: archives built here, good and hostile; every refusal is one
UploadError and leaves nothing on disk, and nothing is ever written outside the upload folder."""

import io
import os
import stat
import struct
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aep_core.data import load_dataset
from aep_core.errors import AepError
from aep_core.uploads import (
    SKIP_NOT_IMAGE,
    SKIP_OUTSIDE,
    SKIP_SYSTEM,
    SKIP_UNREADABLE,
    UploadError,
    UploadLimits,
    archive_digest,
    extract_image_folder,
    hold_upload,
    release_upload,
    remove_old_uploads,
    remove_upload,
    uploads_dir,
)


def _png(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    return buf.getvalue()


def _images(classes: dict[str, int], top: str = "") -> dict[str, bytes]:
    """`top/<class>/<i>.png` -> image bytes, for `n` images of each class."""
    return {f"{top}{c}/{i}.png": _png(100 * k + i) for k, (c, n) in enumerate(classes.items()) for i in range(n)}


def _zip(files: dict[str, bytes], dirs: tuple[str, ...] = (), special: tuple[zipfile.ZipInfo, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for d in dirs:
            z.writestr(d if d.endswith("/") else d + "/", b"")
        for name, data in files.items():
            z.writestr(name, data)
        for info in special:
            z.writestr(info, b"/etc/passwd")
    return buf.getvalue()


def _special(name: str, kind: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (kind | 0o777) << 16
    return info


def _patch_central(data: bytes, name: str, **fields: int) -> bytes:
    """The archive with fields of `name`'s central-directory entry overwritten (flags, file_size)."""
    offsets = {"flags": (8, "<H"), "file_size": (24, "<I")}
    out = bytearray(data)
    at = out.index(b"PK\x01\x02")  # the first entry; walk on to the one named `name`
    while out[at + 46 : at + 46 + len(name)] != name.encode():
        at = out.index(b"PK\x01\x02", at + 4)
    for field, value in fields.items():
        offset, fmt = offsets[field]
        struct.pack_into(fmt, out, at + offset, value)
    return bytes(out)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _outside_uploads(parent: Path) -> set[str]:
    return {p for p in _tree(parent) if not (p == "uploads" or p.startswith("uploads/"))}


@pytest.fixture
def area(tmp_path):
    """(parent, dest): an upload folder inside a parent folder that already holds a file; the test checks that
    the parent holds the same things afterwards, apart from what is inside dest."""
    parent, dest = tmp_path / "parent", tmp_path / "parent" / "uploads"
    dest.mkdir(parents=True)
    (parent / "keep.txt").write_text("mine")
    before = _outside_uploads(parent)
    yield parent, dest
    assert _outside_uploads(parent) == before == {"keep.txt"}, "something was written outside the upload folder"


def _refused(data: bytes, dest: Path, match: str, limits: UploadLimits = UploadLimits()) -> str:
    with pytest.raises(UploadError, match=match) as e:
        extract_image_folder(data, dest, limits)
    assert isinstance(e.value, AepError) and "\n" not in str(e.value)
    assert _tree(dest) == set(), "a refused upload leaves nothing behind"
    return str(e.value)


# ---- good archives --------------------------------------------------------------------------------------------


def test_flat_layout_is_extracted_and_reads_as_an_image_folder(area):
    _, dest = area
    data = _zip(_images({"cats": 5, "dogs": 7}), dirs=("cats", "dogs"))
    folder = extract_image_folder(data, dest)
    assert folder.path.parent == dest and folder.path.name.startswith(archive_digest(data)[:16])
    assert folder.counts == {"cats": 5, "dogs": 7} and folder.classes == ["cats", "dogs"] and folder.images == 12
    assert folder.skipped == {} and folder.skipped_total == 0 and folder.skipped_text() == ""
    bundle = load_dataset("folder", folder.path, image_size=8, in_channels=1)
    assert bundle.class_names == ["cats", "dogs"]
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 12


def test_one_top_folder_is_unwrapped(area):
    _, dest = area
    files = {**_images({"a": 5, "b": 6, "c": 5}, top="myzip/"), "__MACOSX/myzip/a/._0.png": b"\x00\x05\x16\x07"}
    folder = extract_image_folder(_zip(files, dirs=("myzip", "myzip/a", "myzip/b", "myzip/c")), dest)
    assert folder.counts == {"a": 5, "b": 6, "c": 5}
    assert folder.skipped == {SKIP_SYSTEM: 1}
    assert sorted(p.name for p in folder.path.iterdir()) == ["a", "b", "c"]


def test_junk_is_skipped_and_counted(area):
    _, dest = area
    files = {
        **_images({"a": 5, "b": 5}),
        "a/notes.txt": b"not an image",
        "b/corrupt.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 20,
        "b/cut.png": _png(1)[:40],
        "a/.DS_Store": b"\x00\x00\x00\x01Bud1",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "__MACOSX/a/._0.png": b"\x00\x05\x16\x07",
        "readme.md": b"# my data",
    }
    folder = extract_image_folder(_zip(files), dest)
    assert folder.counts == {"a": 5, "b": 5}
    assert folder.skipped == {SKIP_SYSTEM: 3, SKIP_OUTSIDE: 1, SKIP_NOT_IMAGE: 1, SKIP_UNREADABLE: 2}
    assert "images that cannot be decoded: 2" in folder.skipped_text()
    kept = [p for p in folder.path.rglob("*") if p.is_file()]
    assert len(kept) == 10 and all(p.suffix == ".png" for p in kept)


def test_parallel_extractions_of_the_same_bytes_do_not_collide(area):
    _, dest = area
    data = _zip(_images({"a": 6, "b": 6}))
    barrier, results, errors = threading.Barrier(4), [], []

    def extract() -> None:
        barrier.wait()
        try:
            results.append(extract_image_folder(data, dest))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=extract) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.path for r in results}) == 4 and len({r.digest for r in results}) == 1
    for r in results:
        assert r.counts == {"a": 6, "b": 6} and len(list(r.path.rglob("*.png"))) == 12


# ---- refused archives -----------------------------------------------------------------------------------------


def test_classes_that_are_empty_too_small_or_alone_are_named(area):
    _, dest = area
    msg = _refused(_zip(_images({"a": 5, "b": 5}), dirs=("c",)), dest, "at least 5 readable images")
    assert "'c' (0)" in msg and "'a'" not in msg
    msg = _refused(_zip({**_images({"a": 5, "b": 3}), "b/x.txt": b"x"}), dest, "too few in 'b' \\(3\\)")
    _refused(_zip(_images({"a": 8})), dest, "at least 2 classes.*has 1: 'a'")
    _refused(_zip(_images({"a": 8}, top="top/")), dest, "has 1: 'a'")
    _refused(_zip({"x.png": _png(0), "y.png": _png(1)}), dest, "has 0: none")
    only_junk = {**_images({"a": 5}), **{f"b/{i}.txt": b"x" for i in range(6)}}
    _refused(_zip(only_junk), dest, "'b' \\(0\\)")
    unreadable = {**_images({"a": 5}), **{f"b/{i}.png": b"broken" for i in range(6)}}
    _refused(_zip(unreadable), dest, "'b' \\(0\\)")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.png", r"outside the folder \('\.\.'\)"),
        ("a/../../evil.png", r"outside the folder"),
        ("/tmp/aep-evil-{}.png", "absolute path"),
        ("a\\..\\..\\evil.png", "Windows path"),
        ("C:/evil.png", "Windows path"),
    ],
)
def test_path_traversal_is_refused(area, tmp_path, name, reason):
    _, dest = area
    name = name.format(uuid.uuid4().hex)
    _refused(_zip({**_images({"a": 5, "b": 5}), name: _png(3)}), dest, reason)
    assert not list(tmp_path.rglob("evil.png")) and not Path("/tmp/evil.png").exists()
    if name.startswith("/"):
        assert not Path(name).exists()


@pytest.mark.parametrize(
    "kind, reason", [(stat.S_IFLNK, "symbolic link"), (stat.S_IFCHR, "device"), (stat.S_IFIFO, "pipe")]
)
def test_links_and_special_files_are_refused(area, kind, reason):
    _, dest = area
    _refused(_zip(_images({"a": 5, "b": 5}), special=(_special("a/link.png", kind),)), dest, reason)


def test_decompression_bomb_is_refused(area):
    _, dest = area
    bomb = {**_images({"a": 5, "b": 5}), "a/bomb.png": bytes(30 * 1024 * 1024)}
    _refused(_zip(bomb), dest, r"expands \d+:1 .*decompression bomb")
    total = UploadLimits(max_total_bytes=1000)  # ten images of about 140 bytes
    _refused(_zip(_images({"a": 5, "b": 5})), dest, "expands to .* at most", total)


def test_a_member_whose_declared_size_lies_is_refused(area):
    _, dest = area
    honest = _zip({**_images({"a": 5, "b": 5}), "a/big.png": bytes(8 * 1024 * 1024)})
    lying = _patch_central(honest, "a/big.png", file_size=900_000)  # small enough to pass the declared checks
    _refused(lying, dest, "damaged or was altered")


def test_reading_stops_at_the_declared_size_even_if_the_reader_does_not(area, monkeypatch):
    _, dest = area
    data = _zip(_images({"a": 5, "b": 5}))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(bytes(200_000)))
    _refused(data, dest, "holds more than the size it declares")


def test_too_many_entries_or_bytes_and_unreadable_archives_are_refused(area):
    _, dest = area
    many = _zip(_images({"a": 6, "b": 6}))
    _refused(many, dest, "about 12 files and folders; at most 10", UploadLimits(max_entries=10))
    _refused(many, dest, "at most 0.0 MiB can be uploaded", UploadLimits(max_archive_bytes=100))
    _refused(b"just text", dest, "not a zip archive")
    _refused(many[:-30], dest, "not a zip archive|not a readable zip archive")
    encrypted = _patch_central(many, "a/0.png", flags=0x1)
    _refused(encrypted, dest, "is encrypted")


def test_an_unwritable_upload_folder_gives_one_message(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UploadError, match="Cannot create a folder for the upload"):
        extract_image_folder(_zip(_images({"a": 5, "b": 5})), tmp_path / "file" / "uploads")


# ---- the data folder --------------------------------------------------------------------------------------------


def test_old_uploads_are_removed_unless_a_run_reads_them(area):
    _, dest = area
    data = _zip(_images({"a": 5, "b": 5}))
    old, read, fresh = (extract_image_folder(data, dest).path for _ in range(3))
    other = dest / "not-an-upload"
    other.mkdir()
    day_ago = time.time() - 2 * 24 * 3600
    for p in (old, read, other):
        os.utime(p, (day_ago, day_ago))
    hold_upload(read)
    try:
        assert remove_old_uploads(dest) == [old]
        assert not remove_upload(read, dest) and read.is_dir()
    finally:
        release_upload(read)
    assert remove_old_uploads(dest) == [read]
    assert fresh.is_dir() and other.is_dir()
    assert remove_upload(fresh, dest) and not fresh.exists()
    assert not remove_upload(other, dest) and other.is_dir()
    assert remove_old_uploads(dest / "missing") == []


def test_uploads_dir_comes_from_the_environment(tmp_path):
    assert uploads_dir(tmp_path / "d", env={}) == tmp_path / "d"
    assert uploads_dir(tmp_path / "d", env={"AEP_APP_DATA_DIR": str(tmp_path / "e")}) == tmp_path / "e"
