"""Image folders uploaded as zip archives (one sub-folder of images per class), treated as untrusted input: sizes,
counts and compression ratios are capped, unsafe member names and links are refused, and every member is written
to a path built here, under a fresh folder of its own inside the app's data folder. A refused archive leaves
nothing on disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from aep_core.errors import DataError

DATA_DIR_ENV = "AEP_APP_DATA_DIR"
MIB = 1 << 20
MAX_AGE_S = 24 * 3600.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # what ImageFolder reads
SYSTEM_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
CHUNK = 64 * 1024
_FOLDER_NAME = re.compile(r"^[0-9a-f]{16}-[A-Za-z0-9_]+$")  # <archive digest>-<mkdtemp suffix>
_EOCD = b"PK\x05\x06"  # end of the central directory
_CENTRAL_ENTRY = b"PK\x01\x02"  # one entry of the central directory

SKIP_SYSTEM = "system files (__MACOSX, dotfiles)"
SKIP_NOT_IMAGE = "not image files (PNG, JPEG, BMP, PPM/PGM, TIFF or WebP)"
SKIP_OUTSIDE = "files outside a class folder"
SKIP_UNREADABLE = "images that cannot be decoded"
SKIP_TOO_LARGE = "images with too many pixels"

_in_use_lock = threading.Lock()
_in_use: dict[Path, int] = {}  # upload folders a run of this process reads -> number of such runs


class UploadError(DataError):
    """An uploaded archive that is refused, with the reason."""


@dataclass(frozen=True)
class UploadLimits:
    """What an uploaded image-folder archive may hold."""

    max_archive_bytes: int = 200 * MIB
    max_total_bytes: int = 1024 * MIB  # all members, uncompressed
    max_entries: int = 20_000  # files and folders
    max_ratio: float = 100.0  # uncompressed / compressed size of one member
    ratio_floor_bytes: int = 1 * MIB  # smaller members may compress further (a blank image does)
    max_image_pixels: int = 25_000_000
    min_images_per_class: int = 5
    min_classes: int = 2


@dataclass(frozen=True)
class ExtractedFolder:
    """An uploaded image folder on disk, ready for `load_dataset("folder", path)`."""

    path: Path
    digest: str  # sha256 of the archive
    counts: dict[str, int]  # class -> images, in ImageFolder's (sorted) class order
    skipped: dict[str, int]  # reason -> files left out

    @property
    def classes(self) -> list[str]:
        """The class names, in label order."""
        return list(self.counts)

    @property
    def images(self) -> int:
        """Images kept, all classes together."""
        return sum(self.counts.values())

    @property
    def skipped_total(self) -> int:
        """Files of the archive left out, all reasons together."""
        return sum(self.skipped.values())

    def skipped_text(self) -> str:
        """The files left out, in one line ('' when none)."""
        return "; ".join(f"{reason}: {n}" for reason, n in self.skipped.items())


@dataclass(frozen=True)
class _Member:
    """A member to extract: its archive entry, its class, and the suffix it keeps."""

    info: zipfile.ZipInfo
    label: str
    suffix: str


def uploads_dir(default: str | Path, env: Mapping[str, str] = os.environ) -> Path:
    """The folder uploaded data goes to: AEP_APP_DATA_DIR if set, else `default`."""
    return Path(env.get(DATA_DIR_ENV) or default)


def archive_digest(data: bytes) -> str:
    """The sha256 of an archive, in hex: uploads with this digest hold the same bytes."""
    return hashlib.sha256(data).hexdigest()


def extract_image_folder(data: bytes, dest_root: str | Path, limits: UploadLimits = UploadLimits()) -> ExtractedFolder:
    """Check a zip archive of an image folder (one sub-folder per class, optionally inside one top folder) and
    write its images under a new folder of `dest_root`. Raises UploadError, leaving nothing behind, when the
    archive is too large, holds too many entries, looks like a decompression bomb, has unsafe member names or
    links, is damaged, or has fewer than `min_classes` classes or `min_images_per_class` images in a class."""
    if len(data) > limits.max_archive_bytes:
        raise UploadError(
            f"The archive is {_mib(len(data))}; at most {_mib(limits.max_archive_bytes)} can be uploaded."
        )
    _check_entry_bound(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, NotImplementedError, EOFError) as e:
        raise UploadError(f"The upload is not a readable zip archive ({e}).") from None
    with archive:
        members, classes, skipped = _plan(archive.infolist(), limits)
        root = Path(dest_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            digest = archive_digest(data)
            folder = Path(tempfile.mkdtemp(prefix=f"{digest[:16]}-", dir=root))
        except OSError as e:
            raise UploadError(f"Cannot create a folder for the upload in {root}: {e}") from None
        try:
            counts = _write_members(archive, members, classes, folder, skipped, limits)
            _check_classes(counts, limits)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return ExtractedFolder(folder, digest, counts, {k: v for k, v in skipped.items() if v})


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _check_entry_bound(data: bytes, limits: UploadLimits) -> None:
    """Refuse an archive whose central directory holds too many entries, before parsing it (parsing keeps an
    object per entry in memory)."""
    end = data.rfind(_EOCD, max(0, len(data) - 22 - 0xFFFF))
    if end < 0:
        raise UploadError("The upload is not a zip archive (no zip directory at its end).")
    entries = data.count(_CENTRAL_ENTRY, 0, end)  # an upper bound: the signature may also occur inside data
    if entries > limits.max_entries:
        raise UploadError(
            f"The archive holds about {entries} files and folders; at most {limits.max_entries} are accepted."
        )


def _member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; UploadError if the name could reach outside the folder."""
    if "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise UploadError(f"Refused: the member '{name}' has a Windows path (backslash or drive letter).")
    if name.startswith("/"):
        raise UploadError(f"Refused: the member '{name}' has an absolute path.")
    if any(ord(ch) < 32 for ch in name):
        raise UploadError(f"Refused: the member {name!r} has control characters in its name.")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise UploadError(f"Refused: the member '{name}' points outside the folder ('..').")
    return parts


def _file_kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', or what else the member's Unix mode says it is (a link, a device, ...)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.is_dir() or kind == stat.S_IFDIR:
        return "dir"
    if kind in (0, stat.S_IFREG):  # 0: written without Unix attributes (Windows tools)
        return "file"
    return {stat.S_IFLNK: "symbolic link", stat.S_IFCHR: "device", stat.S_IFBLK: "device", stat.S_IFIFO: "pipe"}.get(
        kind, "special file"
    )


def _check_member(info: zipfile.ZipInfo, limits: UploadLimits) -> None:
    """Refuse an encrypted member or one whose declared sizes make it a decompression bomb."""
    if info.flag_bits & 0x1:
        raise UploadError(f"Refused: the member '{info.filename}' is encrypted.")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise UploadError(
            f"Refused: the member '{info.filename}' expands {ratio:.0f}:1 ({_mib(info.file_size)}), more than "
            f"{limits.max_ratio:.0f}:1; this looks like a decompression bomb."
        )


def _plan(infos: list[zipfile.ZipInfo], limits: UploadLimits) -> tuple[list[_Member], list[str], dict[str, int]]:
    """The members to extract, the class names (sorted, as ImageFolder labels them), and the files skipped by reason.
    Raises UploadError for unsafe or oversized entries, before anything is written."""
    if len(infos) > limits.max_entries:
        raise UploadError(
            f"The archive holds {len(infos)} files and folders; at most {limits.max_entries} are accepted."
        )
    skipped = dict.fromkeys((SKIP_SYSTEM, SKIP_OUTSIDE, SKIP_NOT_IMAGE, SKIP_UNREADABLE, SKIP_TOO_LARGE), 0)
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    dirs: list[tuple[str, ...]] = []
    total = 0
    for info in infos:
        parts, kind = _member_parts(info.filename), _file_kind(info)
        if kind not in ("dir", "file"):
            raise UploadError(
                f"Refused: the member '{info.filename}' is a {kind}; only files and folders are accepted."
            )
        if not parts:
            continue
        if kind == "file":
            _check_member(info, limits)
            total += info.file_size
        if parts[0] in SYSTEM_NAMES or any(p.startswith(".") for p in parts) or parts[-1] in SYSTEM_NAMES:
            skipped[SKIP_SYSTEM] += kind == "file"
        elif kind == "dir":
            dirs.append(parts)
        else:
            files.append((info, parts))
    if total > limits.max_total_bytes:
        raise UploadError(f"The archive expands to {_mib(total)}; at most {_mib(limits.max_total_bytes)} are accepted.")
    # One top folder around the class folders is unwrapped: a zip of `myzip/` holds `myzip/<class>/<image>`.
    tops = {p[0] for _, p in files} | {p[0] for p in dirs}
    strip = 1 if len(tops) == 1 and any(len(p) >= 3 for _, p in files) else 0
    # Every folder at the class level is a class, also one without images (it is then refused as too small).
    classes = {_class_name(p[strip]) for p in dirs if len(p) > strip}
    members: list[_Member] = []
    for info, parts in files:
        inner = parts[strip:]
        suffix = PurePosixPath(inner[-1]).suffix.lower()
        if len(inner) < 2:
            skipped[SKIP_OUTSIDE] += 1
            continue
        classes.add(_class_name(inner[0]))
        if suffix in IMAGE_SUFFIXES:
            members.append(_Member(info, inner[0], suffix))
        else:
            skipped[SKIP_NOT_IMAGE] += 1
    if len(classes) < limits.min_classes:
        _refuse_classes(sorted(classes), limits)
    return members, sorted(classes), skipped


def _class_name(name: str) -> str:
    """A class folder's name, refused when no file system could hold it."""
    if len(name.encode()) > 200:
        raise UploadError(f"Refused: the class folder name '{name[:40]}...' is longer than 200 bytes.")
    return name


def _refuse_classes(found: list[str], limits: UploadLimits) -> None:
    listed = ", ".join(f"'{c}'" for c in found) if found else "none"
    raise UploadError(
        f"An image folder needs at least {limits.min_classes} classes, one sub-folder of images each (optionally "
        f"inside one top folder); this archive has {len(found)}: {listed}."
    )


def _write_members(
    archive: zipfile.ZipFile,
    members: list[_Member],
    classes: list[str],
    folder: Path,
    skipped: dict[str, int],
    limits: UploadLimits,
) -> dict[str, int]:
    """Write the members' images to `folder/<class>/<n><suffix>`, leave out the files that do not decode, and
    return the number of images per class."""
    counts = dict.fromkeys(classes, 0)
    written = 0  # all members together, as decompressed
    try:
        for label in classes:
            (folder / label).mkdir()
        for n, member in enumerate(members):
            target = folder / member.label / f"{n:06d}{member.suffix}"
            written += _copy_member(archive, member.info, target, limits.max_total_bytes - written, limits)
            problem = _image_problem(target, limits)
            if problem is None:
                counts[member.label] += 1
            else:
                target.unlink()
                skipped[problem] += 1
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise UploadError(f"The archive is damaged or was altered: {e}.") from None
    except OSError as e:
        raise UploadError(f"Cannot write the upload to {folder.parent}: {e}") from None
    return counts


def _copy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: UploadLimits
) -> int:
    """Stream one member to `target` (a new file), stopping at its declared size, at `budget` bytes or at the ratio
    cap, since declared sizes can lie; returns the bytes written."""
    size = 0
    with archive.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > info.file_size:
                raise UploadError(f"Refused: the member '{info.filename}' holds more than the size it declares.")
            if size > budget:
                raise UploadError(f"The archive expands to more than {_mib(limits.max_total_bytes)}.")
            if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(info.compress_size, 1):
                raise UploadError(
                    f"Refused: the member '{info.filename}' expands more than {limits.max_ratio:.0f}:1; this looks "
                    "like a decompression bomb."
                )
            dst.write(chunk)
    return size


def _image_problem(path: Path, limits: UploadLimits) -> str | None:
    """Why the file cannot be used as an image (a skip reason), or None when it decodes."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > limits.max_image_pixels:
                return SKIP_TOO_LARGE
            im.load()
    except Exception:  # a broken image raises whatever its decoder raises (OSError, SyntaxError, ValueError, ...)
        return SKIP_UNREADABLE
    return None


def _check_classes(counts: dict[str, int], limits: UploadLimits) -> None:
    """Refuse too few classes, or classes with too few images, naming them."""
    if len(counts) < limits.min_classes:
        _refuse_classes(list(counts), limits)
    small = [f"'{c}' ({n})" for c, n in counts.items() if n < limits.min_images_per_class]
    if small:
        raise UploadError(
            f"Each class needs at least {limits.min_images_per_class} readable images; too few in {', '.join(small)}."
        )


def hold_upload(path: str | Path) -> None:
    """Mark an upload folder as read by a run of this process: it is not removed until `release_upload`."""
    key = Path(path).resolve()
    with _in_use_lock:
        _in_use[key] = _in_use.get(key, 0) + 1


def release_upload(path: str | Path) -> None:
    """End one `hold_upload` of the folder."""
    key = Path(path).resolve()
    with _in_use_lock:
        left = _in_use.get(key, 0) - 1
        if left > 0:
            _in_use[key] = left
        else:
            _in_use.pop(key, None)


def _removable(path: Path, dest_root: Path) -> bool:
    """Whether `path` is an upload folder of `dest_root` that no run of this process reads."""
    path = Path(path)
    if not _FOLDER_NAME.match(path.name) or path.is_symlink() or not path.is_dir():
        return False
    if path.resolve().parent != dest_root.resolve():
        return False
    with _in_use_lock:
        return path.resolve() not in _in_use


def remove_upload(path: str | Path, dest_root: str | Path) -> bool:
    """Delete one upload folder of `dest_root` unless a run reads it; whether it was deleted."""
    if not _removable(Path(path), Path(dest_root)):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_old_uploads(dest_root: str | Path, max_age_s: float = MAX_AGE_S, now: float | None = None) -> list[Path]:
    """Delete the upload folders of `dest_root` last changed more than `max_age_s` ago (none that a run reads);
    returns them."""
    root = Path(dest_root)
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
        except OSError:
            continue
        if old and remove_upload(entry.path, root):
            removed.append(Path(entry.path))
    return removed
