"""Upload preprocessing: any user image (PNG, JPEG, WebP, BMP, GIF, TIFF; 16-bit, palette, RGBA, CMYK,
animated, EXIF-rotated) -> the tensor a model expects, plus a preview of what the model sees.

Fashion-MNIST shows light garments on a black background, so photos with a light background are
inverted (decided from the border pixels). Huge images are refused from their header, before decoding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from aep_core.errors import DataError

ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
MAX_PIXELS = 40_000_000  # ~ a 6300x6300 photo; larger ones are refused before decoding
MAX_BYTES = 20 * 1024 * 1024


@dataclass
class PreparedImage:
    """A preprocessed image: the model input, what the model sees, and what was done to get there."""

    tensor: torch.Tensor  # (1, c, h, w), normalised with the dataset's mean and std
    preview: np.ndarray  # (h, w) or (h, w, 3) uint8, after grayscale/resize/inversion
    original_size: tuple[int, int]  # (width, height) of the upload
    inverted: bool
    notes: list[str] = field(default_factory=list)


def _open(data: bytes) -> Image.Image:
    """Open and validate an image from its header only; raise DataError for anything unusable."""
    if not data:
        raise DataError("The file is empty (0 bytes). Upload a PNG, JPEG, WebP, BMP, GIF or TIFF image.")
    if len(data) > MAX_BYTES:
        raise DataError(f"The file is {len(data) / 2**20:.1f} MB; images up to {MAX_BYTES // 2**20} MB are accepted.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DataError(
            f"The image is far too large to decode safely (over {MAX_PIXELS:,} pixels). "
            "Resize it below 6000x6000 pixels and upload it again."
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            "This file is not an image Pillow can read. Upload a PNG, JPEG, WebP, BMP, GIF or TIFF image."
        ) from None
    except OSError as e:
        raise DataError(f"The image cannot be read: {e}.") from None
    if im.format not in ALLOWED_FORMATS:
        raise DataError(f"{im.format} images are not supported. Upload a PNG, JPEG, WebP, BMP, GIF or TIFF image.")
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataError(
            f"The image is {w}x{h} pixels ({w * h:,}); at most {MAX_PIXELS:,} pixels are accepted. "
            "Resize it and upload it again."
        )
    if w < 1 or h < 1:
        raise DataError("The image has no pixels.")
    return im


def _to_8bit(im: Image.Image, notes: list[str]) -> Image.Image:
    """Any mode -> 'L' or 'RGB', transparent pixels composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        notes.append(f"{im.mode} image rescaled to 8 bits.")
        return Image.fromarray(a.astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("Transparent pixels placed on white.")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode == "CMYK":
        notes.append("CMYK converted to RGB.")
        return im.convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def _background(a: np.ndarray) -> np.ndarray:
    """The median colour of the image's border pixels: a scalar for (h, w), (c,) for (h, w, c)."""
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]], axis=0)
    return np.median(border, axis=0)


def _crop_to_object(a: np.ndarray, background: np.ndarray, tolerance: int = 40) -> np.ndarray:
    """Crop (h, w[, c]) to the bounding box of the pixels that differ from the background colour, so the
    object fills the frame as in Fashion-MNIST (products trimmed, longest side scaled to the frame)."""
    diff = np.abs(a.astype(np.float32) - background.astype(np.float32))
    mask = (diff if diff.ndim == 2 else diff.max(axis=2)) > tolerance
    if mask.sum() < 0.002 * mask.size:  # nothing stands out: keep the whole image
        return a
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _pad_square(a: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Pad (h, w[, c]) to a square with the background colour, keeping the object's aspect ratio."""
    h, w = a.shape[:2]
    if h == w:
        return a
    side = max(h, w)
    out = np.empty((side, side, *a.shape[2:]), dtype=a.dtype)
    out[...] = fill.astype(a.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = a
    return out


def prepare_image(
    data: bytes,
    image_size: int = 28,
    in_channels: int = 1,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    invert: bool | None = None,
    crop: bool = True,
) -> PreparedImage:
    """Decode untrusted image bytes into a normalised (1, c, s, s) tensor for a model trained on
    `image_size` x `image_size` images with `in_channels` channels. `invert=None` inverts light
    backgrounds (Fashion-MNIST style); True/False forces it. `crop` trims the background around the
    object first. Raises DataError with a clear message."""
    mean = mean or [0.5] * in_channels
    std = std or [0.5] * in_channels
    im = _open(data)
    notes: list[str] = []
    n_frames = getattr(im, "n_frames", 1)
    try:
        if n_frames > 1:
            im.seek(0)
            notes.append(f"Animated image with {n_frames} frames: the first frame is used.")
        im.load()
        im = ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"The image data is truncated or corrupt and cannot be decoded ({e}).") from None
    original = im.size
    im = _to_8bit(im, notes)
    im = im.convert("L") if in_channels == 1 else im.convert("RGB")
    a = np.asarray(im)
    bg = _background(a)
    if crop:
        a = _crop_to_object(a, bg)
    a = _pad_square(a, bg)
    side = a.shape[0]
    # Shrink in two steps for big photos: a cheap reduce, then a high-quality resize.
    small = Image.fromarray(a)
    if side > 8 * image_size:
        small = small.reduce(side // (4 * image_size))
    small = small.resize((image_size, image_size), Image.Resampling.LANCZOS)
    arr = np.asarray(small).astype(np.uint8)
    if invert is None:
        invert = bool(np.mean(bg) > 127)
    if invert:
        arr = 255 - arr
        notes.append("Light background: colours inverted to match the training images (light object on dark).")
    x = torch.from_numpy(arr.astype(np.float32) / 255)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (c, s, s)
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return PreparedImage(x[None].contiguous(), arr, original, invert, notes)


def prepare_array(image: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """A dataset image already at the model's size, uint8 (h, w) or (c, h, w) -> normalised (1, c, h, w)."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    if x.ndim == 2:
        x = x[None]
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return x[None].contiguous()


@dataclass
class PreparedFolder:
    """Every readable image under a folder as one batch, with the files that could not be used and why."""

    tensor: torch.Tensor  # (n, c, h, w)
    files: list[str]  # (n,) paths relative to the folder
    skipped: list[tuple[str, str]]  # (path, reason)


def prepare_folder(
    root: str | Path, image_size: int, in_channels: int, mean: list[float], std: list[float], limit: int | None = None
) -> PreparedFolder:
    """Prepare every image file under `root` (recursively, sorted) like an upload; unreadable ones are skipped
    with their reason. Raises DataError if the folder is missing or holds no usable image."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in UPLOAD_TYPES)
    if limit is not None:
        paths = paths[:limit]
    tensors, files, skipped = [], [], []
    for p in paths:
        try:
            tensors.append(prepare_image(p.read_bytes(), image_size, in_channels, mean, std).tensor)
            files.append(str(p.relative_to(root)))
        except (DataError, OSError) as e:
            skipped.append((str(p.relative_to(root)), str(e)))
    if not tensors:
        why = f"; {len(skipped)} could not be read" if skipped else ""
        raise DataError(f"No usable image ({', '.join(UPLOAD_TYPES)}) under {root}{why}.")
    return PreparedFolder(torch.cat(tensors), files, skipped)
