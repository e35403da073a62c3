"""The Learn page in a real browser: start the app, open the lesson, answer the first question, walk every step
with Next, and save a screenshot of each step to test-artifacts/learn/step_N.png."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from app_helpers import ROOT

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.paths import shipped_models_dir
from explorer.lesson import NUM_STEPS, STEPS
from explorer.serve import CHROMIUM, IDLE, launch_chromium, serve_app

ARTIFACTS = ROOT / "test-artifacts" / "learn"
SHOTS = ROOT / "docs" / "screenshots" / "learn"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium not found at {CHROMIUM}"),
    pytest.mark.skipif(
        not (shipped_models_dir() / f"{DEFAULT_MODEL}.pt").exists(), reason="the lesson reads the shipped models"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = dict(os.environ, AEP_APP_RUNS_DIR=str(tmp_path_factory.mktemp("app_runs")))
    with open(tmp_path_factory.mktemp("log") / "streamlit.log", "w") as log, serve_app(env, log) as url:
        yield url


def _idle(page) -> None:
    page.wait_for_timeout(400)
    page.wait_for_selector(IDLE, timeout=90_000)
    page.wait_for_timeout(300)


def _until(check, what: str, timeout: float = 30.0) -> None:
    """Poll `check()` until it is true (reruns and URL updates land a moment after the script ends)."""
    t0 = time.time()
    while not check():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _shot(page, name: str) -> None:
    """A small palette PNG of the viewport in test-artifacts/learn (and docs/screenshots/learn with
    AEP_UPDATE_SCREENSHOTS=1, so a test run leaves the repository clean)."""
    from PIL import Image

    raw = page.screenshot()
    im = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    for d in (SHOTS, ARTIFACTS) if os.environ.get("AEP_UPDATE_SCREENSHOTS") == "1" else (ARTIFACTS,):
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{name}.png", optimize=True)


def test_every_step_of_the_lesson_in_the_browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/learn")
        _idle(page)
        page.wait_for_selector("h1:has-text('Learn')", timeout=60_000)
        # The first question, answered wrong then right: the feedback follows each pick.
        question = page.locator("[data-testid='stRadio']", has_text="Question.")
        question.get_by_text("It is a rounding error in the MACs count.").click()
        _idle(page)
        page.wait_for_selector("text=No: MACs are counted exactly", timeout=30_000)
        question.get_by_text("The early exits' heads it passed on the way were computed too.").click()
        _idle(page)
        page.wait_for_selector("text=Right: an image that travels to the end", timeout=30_000)
        for step in range(1, NUM_STEPS + 1):
            page.locator("h3", has_text=f"{step}. {STEPS[step - 1].title}").wait_for(timeout=60_000)
            page.wait_for_selector("[data-testid='stVegaLiteChart'], [data-testid='stDataFrame']", timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0, step
            _until(lambda step=step: f"step={step}" in page.url, f"step {step} in the URL")
            page.mouse.move(0, 0)  # no tooltip over the page
            page.wait_for_timeout(800)
            _shot(page, f"step_{step}")
            if step < NUM_STEPS:
                page.get_by_role("button", name="Next").click()
                _idle(page)
        browser.close()
    assert not errors, errors
    assert sorted(p.name for p in ARTIFACTS.glob("step_*.png")) == sorted(
        f"step_{n}.png" for n in range(1, NUM_STEPS + 1)
    )
