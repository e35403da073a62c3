"""The app in a real browser: start `streamlit run`, drive Chromium with Playwright, upload an image, see
per-exit predictions, move a threshold and see the chart change, switch pages; save a screenshot of
every page to test-artifacts/ (and docs/screenshots/ with AEP_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from app_helpers import ROOT, garment_photo, small_model_dir
from browser_helpers import idle, shot, until

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.paths import shipped_models_dir
from explorer.serve import CHROMIUM, launch_chromium, serve_app

SHOTS = ROOT / "docs" / "screenshots"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"Chromium not found at {CHROMIUM}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = dict(os.environ, AEP_APP_RUNS_DIR=str(tmp_path_factory.mktemp("app_runs")))
    if os.environ.get("AEP_BROWSER_MODELS_DIR"):  # e.g. a better-trained model for the docs' screenshots
        env.update(AEP_MODELS_DIR=os.environ["AEP_BROWSER_MODELS_DIR"], AEP_MODELS_ONLY="1")
    elif not (shipped_models_dir() / f"{DEFAULT_MODEL}.pt").exists():
        env.update(AEP_MODELS_DIR=str(small_model_dir()), AEP_MODELS_ONLY="1")
    with open(tmp_path_factory.mktemp("log") / "streamlit.log", "w") as log, serve_app(env, log) as url:
        yield url


def _goto(page, title: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    idle(page)
    page.wait_for_selector(f"h1:has-text('{title.split()[0]}')", timeout=60_000)


def test_a_shared_link_opens_its_page_with_the_sidebar_on_a_fresh_server(server):
    """The first visitor of a fresh server follows a link straight to a page: the page runs inside the app
    (sidebar, navigation) with the link's settings."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server}/thresholds?rule=entropy&t=0.42")
        idle(page)
        page.wait_for_selector("h1:has-text('Thresholds')", timeout=60_000)
        sidebar = page.locator("[data-testid='stSidebar']")
        assert sidebar.locator("[data-testid='stSidebarNav']").count() == 1
        assert sidebar.get_by_role("combobox", name="Exit rule").input_value() == "Normalised entropy <= t"
        assert page.get_by_text("entropy, t = 0.42").count() >= 1
        until(lambda: "rule=entropy" in page.url and "t=0.42" in page.url, "the link's settings kept in the URL")
        browser.close()


def test_app_in_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        idle(page)
        page.wait_for_selector("h1:has-text('Early-Exit Explorer')")
        # the loaded model's exit strip, or the table of a cascade's members (the default is a cascade)
        page.wait_for_selector("[data-testid='stVegaLiteChart'], [data-testid='stDataFrame']", timeout=60_000)
        idle(page)
        shot(page, "overview", ARTIFACTS, SHOTS)

        # Try an image: upload a photo of a sneaker on white, see every exit's answer
        _goto(page, "Try an image")
        page.locator("[data-testid='stRadio']").first.get_by_text("Upload", exact=True).click()
        idle(page)
        img = tmp_path / "sneaker.jpg"
        img.write_bytes(garment_photo(7))
        upload_box = page.locator("[data-testid='stFileUploader']", has_text="Upload an image")
        uploader = upload_box.locator("input[type=file]")
        uploader.set_input_files(str(img))
        idle(page)
        page.wait_for_selector("text=this image stops at", timeout=60_000)
        assert page.get_by_text("What the model sees").count() == 1
        charts = page.locator("[data-testid='stVegaLiteChart']")  # probabilities per exit + rule scores
        until(lambda: charts.count() >= 2, "both charts of the image's answers", 30)  # the second may render later
        assert page.get_by_text("inverted").count() >= 1
        shot(page, "try_image", ARTIFACTS, SHOTS)

        # a bad upload gets a message and the page keeps working
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image")
        uploader.set_input_files(str(bad))
        idle(page)
        page.wait_for_selector("text=cannot be used", timeout=30_000)

        # Thresholds: move the sidebar threshold, the metrics and the chart change
        _goto(page, "Thresholds")
        chart = page.locator("[data-testid='stVegaLiteChart']").first
        chart.wait_for()
        page.wait_for_timeout(800)
        macs_before = page.locator("[data-testid='stMetricValue']").nth(1).inner_text()
        chart_before = chart.screenshot()
        thumb = page.locator("[data-testid='stSidebar'] [data-testid='stSlider'] input[type=range]").first
        thumb.focus()
        thumb.press("Home")  # threshold 0: everything leaves at exit 0
        idle(page)
        metric = page.locator("[data-testid='stMetricValue']").nth(1)
        until(lambda: metric.inner_text() != macs_before, "the expected MACs to change")
        macs_after = metric.inner_text()
        until(lambda: chart.screenshot() != chart_before, "the chart to change")
        until(lambda: "t=0&" in page.url + "&", "the threshold in the URL")
        thumb.focus()
        for _ in range(50):
            thumb.press("ArrowRight")  # on to a middle threshold (0.5)
        idle(page)
        until(lambda: metric.inner_text() != macs_after, "the expected MACs to change back")
        # one-click preset: per-exit thresholds certified on validation
        page.get_by_role("button", name="Guaranteed within 0.5 points (90% confidence)").click()
        idle(page)
        page.wait_for_selector("text=Preset applied", timeout=60_000)
        until(lambda: "pe=" in page.url, "per-exit thresholds in the URL")
        page.mouse.move(0, 0)  # no tooltip over the page
        page.wait_for_timeout(800)
        shot(page, "thresholds", ARTIFACTS, SHOTS)
        # the real runtime, timed on this machine for the preset's thresholds
        page.get_by_role("button", name="Measure the real speed-up").click()
        idle(page)
        page.wait_for_selector("text=Measured for", timeout=60_000)

        for title, name in [
            ("Calibration", "calibration"),
            ("Ensemble weights", "ensemble"),
            ("Pruning savings", "pruning"),
            ("Saliency", "saliency"),
            ("Deploy", "deploy"),
            ("Train", "train"),
        ]:
            _goto(page, title)
            page.wait_for_timeout(800)
            assert page.locator("[data-testid='stException']").count() == 0, name
            shot(page, name, ARTIFACTS, SHOTS)
        browser.close()
    assert not errors, errors


def _no_exception(page, where: str) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, where


def test_two_sessions_at_once_neither_breaks_nor_stalls_the_other(server):
    """Two browsers on one server: one on Pruning while the other computes saliency maps, then one training a
    model while the other moves the threshold. No exception in either, and every threshold move is answered
    while the training runs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        one = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        two = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        errors: list[str] = []
        for page in (one, two):
            page.on("pageerror", lambda e: errors.append(str(e)))
        one.goto(f"{server}/pruning")
        two.goto(f"{server}/saliency")
        for page in (one, two):
            idle(page)
        sample = two.locator("[data-testid='stSlider']", has_text="Sample").locator("input[type=range]")
        for _ in range(4):
            # each step: a new saliency map in one session while the other re-runs the Pruning page
            sample.focus()
            sample.press("ArrowRight")
            one.reload()
            for page in (one, two):
                idle(page)
            _no_exception(one, "pruning")
            _no_exception(two, "saliency")
        assert two.locator("[data-testid='stImage']").count() >= 2

        one.goto(f"{server}/train")
        two.goto(f"{server}/thresholds")
        for page in (one, two):
            idle(page)
        one.get_by_role("textbox", name="Model name").fill(f"two_sessions_{int(time.time())}")
        one.get_by_role("button", name="Start training").click()
        one.wait_for_selector("[data-testid='stProgress']", timeout=60_000)  # the run has started
        metric = two.locator("[data-testid='stMetricValue']").nth(1)
        thumb = two.locator("[data-testid='stSidebar'] [data-testid='stSlider'] input[type=range]").first
        answered: list[float] = []
        for key in ("Home", "End", "Home", "End"):
            before = metric.inner_text()
            t0 = time.perf_counter()
            thumb.focus()
            thumb.press(key)
            until(lambda before=before: metric.inner_text() != before, "a threshold move to be answered", 20)
            answered.append(time.perf_counter() - t0)
            _no_exception(two, "thresholds")
        assert one.get_by_text("Saved two_sessions").count() == 0  # every move was answered while the run went on
        until(lambda: one.get_by_text("Saved two_sessions").count() > 0, "the training run to finish", 180)
        _no_exception(one, "train")
        browser.close()
    assert not errors, errors
    print("threshold moves answered in", ", ".join(f"{s:.2f} s" for s in answered))
