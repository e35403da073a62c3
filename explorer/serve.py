"""The app served by `streamlit run` on a free local port, and a headless Chromium to drive it: what the browser
tests and the page-load benchmark share."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from explorer import APP_DIR

CHROMIUM = "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"  # the page once its script run has finished


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read() == b"ok"
    except OSError:
        return False


@contextlib.contextmanager
def serve_app(
    env: dict[str, str] | None = None,
    log: IO[str] | int = subprocess.DEVNULL,
    wait_s: float = 60.0,
    warm: bool = True,
) -> Iterator[str]:
    """Run the app headless on a free port (server output to `log`); yield its URL once its health check
    answers, and stop the server on exit. TimeoutError when it is not healthy within `wait_s` seconds.
    `warm`: started as `python -m explorer` (imports and default model loaded first), else `streamlit run`."""
    port = free_port()
    start = (
        [sys.executable, "-m", "explorer"]
        if warm
        else [str(Path(sys.executable).parent / "streamlit"), "run", "app.py"]
    )
    command = [
        *start,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    proc = subprocess.Popen(command, cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while not _healthy(url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not become healthy in {wait_s:g} s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch_chromium(playwright: Any, executable: str = CHROMIUM) -> Any:
    """A headless Chromium started by Playwright (`playwright` from `sync_playwright()`)."""
    return playwright.chromium.launch(
        executable_path=executable,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
