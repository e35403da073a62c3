"""App speed, measured with Streamlit's AppTest (script run time, no browser): the first load of the
entry page and of the Thresholds page in a fresh process, the re-render after a threshold move, and the
re-render of the Deploy page after a link-latency move.

Usage: python -m benchmarks.app_speed [--model LABEL] [--moves 12] [--browser]
--browser also starts the server, as `streamlit run app.py` and as `python -m explorer` (started warm), and
times page loads in Chromium: a fresh server's first visitor, the next one, a page opened directly.
Uses the shipped model (assets/models/aep_hybrid.pt) when present; AEP_MODELS_DIR adds model folders.
Targets: threshold move < 300 ms; first page load < 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from aep_core.checkpoint.discovery import default_model, discover_models, model_folders, trained_models_dir
from aep_core.paths import PROJECT_DIR, shipped_models_dir
from explorer.serve import CHROMIUM, IDLE, launch_chromium, serve_app

ROOT = PROJECT_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model label in the picker (default: the app's default model)")
    ap.add_argument("--moves", type=int, default=12, help="threshold moves to time")
    ap.add_argument("--browser", action="store_true", help="also time page loads in Chromium (needs /usr/bin/chromium)")
    args = ap.parse_args()
    if args.browser:
        browser_loads()

    t_start = time.perf_counter()
    from streamlit.testing.v1 import AppTest

    models = discover_models(model_folders(shipped_models_dir(), trained_models_dir(ROOT / "runs" / "app")))
    if not models:
        sys.exit("No model found: put one in assets/models/ or point AEP_MODELS_DIR at a folder of checkpoints.")
    label = args.model or default_model(list(models))
    state = {"model": label}

    t0 = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    first_entry = time.perf_counter() - t0
    with_imports = time.perf_counter() - t_start
    assert not at.exception, [e.value for e in at.exception]

    t0 = time.perf_counter()
    at.switch_page("pages/thresholds.py")
    at.run()
    first_thresholds = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    n = at.metric[3].value

    times = []
    values = [round(0.30 + 0.05 * i, 2) for i in range(args.moves)]  # distinct values: no cache hits
    for v in values:
        slider = at.slider(key="thr_max_probability")
        t0 = time.perf_counter()
        slider.set_value(min(v, 0.99)).run()
        times.append(time.perf_counter() - t0)
        assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/deploy.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    deploy_times = []
    for v in [5 * (i + 1) for i in range(args.moves)]:  # the device -> edge link latency, ms
        slider = at.slider(key="dep_lat_3_0")
        t0 = time.perf_counter()
        slider.set_value(v).run()
        deploy_times.append(time.perf_counter() - t0)
        assert not at.exception, [e.value for e in at.exception]
    print(f"model: {label} ({models[label]}), {n} replayed samples")
    print(f"first load, entry page (Overview), fresh process: {1e3 * first_entry:7.0f} ms   (target < 3000 ms)")
    print(f"  the same, counting the imports (streamlit, torch): {1e3 * with_imports:7.0f} ms")
    print(f"first load, Thresholds page (sweep computed):      {1e3 * first_thresholds:7.0f} ms")
    print(
        f"threshold move on Thresholds, {len(times)} moves:  median {1e3 * statistics.median(times):.0f} ms, "
        f"max {1e3 * max(times):.0f} ms   (target < 300 ms)"
    )
    print(
        f"link-latency move on Deploy, {len(deploy_times)} moves: median "
        f"{1e3 * statistics.median(deploy_times):.0f} ms, max {1e3 * max(deploy_times):.0f} ms   "
        "(simulation and search over every split, target < 300 ms)"
    )


def browser_loads(chromium: str = CHROMIUM) -> None:
    """Start the app on a free port and time page loads in Chromium until the script is idle and a chart is drawn."""
    from playwright.sync_api import sync_playwright

    for warm, server in [(False, "streamlit run app.py"), (True, "python -m explorer")]:
        with serve_app(warm=warm) as url, sync_playwright() as p:
            b = launch_chromium(p, chromium)
            for label, path in [
                ("first visitor of a fresh server", "/"),
                ("next visitor", "/"),
                ("Thresholds page opened directly", "/thresholds"),
            ]:
                page = b.new_page(viewport={"width": 1280, "height": 900})
                t0 = time.perf_counter()
                page.goto(url + path)
                page.wait_for_selector("[data-testid='stVegaLiteChart']", timeout=60_000)
                page.wait_for_selector(IDLE, timeout=60_000)
                print(f"{f'browser ({server}), {label}:':70}{1e3 * (time.perf_counter() - t0):7.0f} ms")
            b.close()


if __name__ == "__main__":
    main()
