"""The Learn page in a real browser: start the app, open the lesson, answer the first question, walk every step
with Next, and save a screenshot of each step to test-artifacts/learn/step_N.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app_helpers import ROOT
from browser_helpers import idle, shot, until

from aep_core.paths import shipped_models_dir
from explorer import lesson
from explorer.lesson import NUM_STEPS, STEPS
from explorer.serve import CHROMIUM, launch_chromium, serve_app

ARTIFACTS = ROOT / "test-artifacts" / "learn"
SHOTS = ROOT / "docs" / "screenshots" / "learn"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium not found at {CHROMIUM}"),
    pytest.mark.skipif(
        not (shipped_models_dir() / f"{lesson.LESSON_MODEL}.pt").exists(), reason="the lesson reads the shipped models"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = dict(os.environ, AEP_APP_RUNS_DIR=str(tmp_path_factory.mktemp("app_runs")))
    with open(tmp_path_factory.mktemp("log") / "streamlit.log", "w") as log, serve_app(env, log) as url:
        yield url


def test_every_step_of_the_lesson_in_the_browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/learn")
        idle(page)
        page.wait_for_selector("h1:has-text('Learn')", timeout=60_000)
        # The first question, answered wrong then right: the feedback follows each pick.
        question = page.locator("[data-testid='stRadio']", has_text="Question.")
        question.get_by_text("It is a rounding error in the MACs count.").click()
        idle(page)
        page.wait_for_selector("text=No: MACs are counted exactly", timeout=30_000)
        question.get_by_text("The early exits' heads it passed on the way were computed too.").click()
        idle(page)
        page.wait_for_selector("text=Right: an image that travels to the end", timeout=30_000)
        for step in range(1, NUM_STEPS + 1):
            page.locator("h3", has_text=f"{step}. {STEPS[step - 1].title}").wait_for(timeout=60_000)
            page.wait_for_selector("[data-testid='stVegaLiteChart'], [data-testid='stDataFrame']", timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0, step
            until(lambda step=step: f"step={step}" in page.url, f"step {step} in the URL")
            page.mouse.move(0, 0)  # no tooltip over the page
            page.wait_for_timeout(800)
            shot(page, f"step_{step}", ARTIFACTS, SHOTS)
            if step < NUM_STEPS:
                page.get_by_role("button", name="Next").click()
                idle(page)
        browser.close()
    assert not errors, errors
    assert sorted(p.name for p in ARTIFACTS.glob("step_*.png")) == sorted(
        f"step_{n}.png" for n in range(1, NUM_STEPS + 1)
    )
