"""Shared helpers for the app's tests: one small trained checkpoint per test session, and test images."""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from aep_core.paths import PROJECT_DIR

ROOT = PROJECT_DIR
APP = str(ROOT / "app.py")
PAGES = [  # every page file, by its URL path
    "overview",
    "learn",
    "try_image",
    "thresholds",
    "calibration",
    "ensemble",
    "pruning",
    "saliency",
    "deploy",
    "train",
]


@functools.lru_cache(maxsize=1)
def small_model_dir() -> Path:
    """A folder holding `tiny.pt` (AEP) and `tiny_eenet.pt` (EENet heads), each with its val/test evaluation
    files: compact CNN, 1 epoch on a few hundred slice images."""
    import torch

    from aep_core.training import MethodSettings, TrainConfig
    from aep_core.training.job import TrainJob, run_train_job

    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp(prefix="aep_app_models_"))
    job = TrainJob(
        out=str(d / "tiny.pt"),
        dataset="fashion-mnist-slice",
        limit=400,
        method=MethodSettings(method="aep", weighting="linear"),
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05, progress=False),
    )
    run_train_job(job, log=lambda s: None)
    job = TrainJob(
        out=str(d / "tiny_eenet.pt"),
        dataset="fashion-mnist-slice",
        limit=200,
        method=MethodSettings(method="eenet"),
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05, progress=False),
    )
    run_train_job(job, log=lambda s: None)
    return d


def run_app(page: str | None = None, timeout: int = 60, **state):
    """The app run once under AppTest, with `state` in the session and `pages/<page>.py` opened."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in state.items():
        at.session_state[k] = v
    if page:
        at.switch_page(f"pages/{page}.py")
    return at.run()


def assert_no_exception(at, errors_too: bool = False) -> None:
    """No uncaught exception on the page (and no st.error either when `errors_too`)."""
    assert not at.exception, [e.value for e in at.exception]
    if errors_too:
        assert not at.error, [e.value for e in at.error]


def png_bytes(
    mode: str = "RGB", size: tuple[int, int] = (40, 30), fmt: str = "PNG", light_background: bool = True, **save
) -> bytes:
    """An image with a dark rectangle on a light background (or the reverse), encoded in `fmt`."""
    w, h = size
    a = np.full((h, w), 240 if light_background else 10, dtype=np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 20 if light_background else 230
    im = Image.fromarray(a, "L").convert(mode) if mode not in ("I;16",) else Image.fromarray(a.astype(np.uint16) * 256)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but carries no pixel data (for size checks)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def garment_photo(label: int = 7, size: tuple[int, int] = (480, 600)) -> bytes:
    """A shipped Fashion-MNIST image of class `label` shown like a photo: dark garment on a white
    background, enlarged, off-square, JPEG-compressed."""
    from aep_core.data import load_slice

    s = load_slice()
    img = s["images"][int(np.flatnonzero(s["labels"] == label)[0])]
    garment = Image.fromarray(255 - img).resize((size[0] - 80, size[0] - 80), Image.Resampling.BICUBIC)
    canvas = Image.new("L", size, 248)
    canvas.paste(garment, (40, (size[1] - garment.height) // 2))
    buf = io.BytesIO()
    canvas.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()
