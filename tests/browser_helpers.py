"""What the real-browser tests share: waiting for a page's script run to finish, polling for what lands a moment
later, and saving small screenshots."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

from explorer.serve import IDLE


def idle(page) -> None:
    """Wait until the page's script run has finished (and the browser has drawn what it sent)."""
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=90_000)
    page.wait_for_timeout(300)


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `check()` until it is true (reruns and URL updates land a moment after the script ends)."""
    t0 = time.time()
    while not check():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def shot(page, name: str, artifacts: Path, docs: Path) -> None:
    """Save a small palette PNG of the viewport to `artifacts`, and to `docs` too when AEP_UPDATE_SCREENSHOTS=1
    (so a test run leaves the repository clean)."""
    from PIL import Image

    raw = page.screenshot()
    im = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    for d in (docs, artifacts) if os.environ.get("AEP_UPDATE_SCREENSHOTS") == "1" else (artifacts,):
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{name}.png", optimize=True)
