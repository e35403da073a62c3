"""The app with a per-exit outputs file and no model: uploaded in the sidebar (a .npz in MACs built from a shipped
model's evaluation files, a CSV with its JSON in milliseconds built here), every page runs; the pages that replay
outputs show numbers recomputed here from the file, in the file's unit, and the pages that run the network say in
one line why they cannot; a malformed upload gets one message and the model before it stays."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from app_helpers import APP, PAGES, assert_no_exception
from streamlit.testing.v1 import AppTest

from aep_core.evaluation import load_evaluation
from aep_core.paths import shipped_models_dir

NO_NETWORK = "This model is an outputs file: it has no network to run"
NETWORK_PAGES = ("try_image", "saliency", "pruning")
REPLAY_PAGES = ("overview", "thresholds", "calibration", "ensemble", "deploy")
MS_COSTS, MS_FULL = [1.25, 2.5, 4.75], 4.5


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No model on disk: the uploads are the only models."""
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))


@pytest.fixture(scope="module")
def hybrid() -> dict[str, np.ndarray]:
    """The arrays of an outputs file in MACs: the shipped AEP model's validation and test outputs (first 2000 of
    each), with its class names, ensemble weights and feature sizes."""
    parts = [load_evaluation(shipped_models_dir() / f"aep_hybrid.{split}.npz") for split in ("val", "test")]
    n = 2000
    val = parts[0]
    return {
        "logits": np.concatenate([p.logits[:, :n] for p in parts], 1),
        "labels": np.concatenate([p.labels[:n] for p in parts]),
        "split": np.array(["val"] * n + ["test"] * n),
        "cum_cost": val.cum_macs,
        "cost_unit": np.asarray("macs"),
        "full_cost": np.asarray(val.full_macs),
        "class_names": np.array(val.info["class_names"]),
        "ensemble_weights": np.asarray(val.info["ensemble_weights"], dtype=float),
        "feature_sizes": np.array([16 * 14 * 14, 32 * 7 * 7, 32 * 7 * 7, 64 * 4 * 4, 64 * 4 * 4]),
        "input_size": np.asarray(28 * 28),
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def ms_table(n_val: int = 300, n_test: int = 200, exits: int = 3, classes: int = 4) -> tuple[bytes, bytes, dict]:
    """A CSV outputs file with costs in milliseconds, its JSON, and the arrays it holds."""
    rng = np.random.default_rng(0)
    n = n_val + n_test
    labels = rng.integers(0, classes, n)
    signal = np.linspace(0.5, 3.0, exits)[:, None, None] * np.eye(classes)[labels][None]
    logits = (rng.normal(size=(exits, n, classes)) + signal).round(4)
    split = ["val"] * n_val + ["test"] * n_test
    header = ["split", "label", *(f"logit_{e}_{c}" for e in range(exits) for c in range(classes))]
    rows = [
        [split[i], str(labels[i]), *(f"{logits[e, i, c]:g}" for e in range(exits) for c in range(classes))]
        for i in range(n)
    ]
    csv = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    sidecar = {"cost_unit": "ms", "cum_cost": MS_COSTS, "full_cost": MS_FULL, "class_names": list("abcd")}
    arrays = {"logits": logits, "labels": labels, "split": np.array(split)}
    return csv.encode(), json.dumps(sidecar).encode(), arrays


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    """Upload files with the sidebar's outputs uploader, as a user would."""
    return (
        at.file_uploader(key="outputs_upload").set_value([(n, d, "application/octet-stream") for n, d in files]).run()
    )


def opened(env_files: tuple[tuple[str, bytes], ...], **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for k, v in state.items():
        at.session_state[k] = v
    return upload(at.run(), *env_files)


def on_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert_no_exception(at)
    assert not at.main.error, (page, [e.value for e in at.main.error])
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def replayed_accuracy(arrays: dict, split: str, t: float) -> float:
    """Accuracy of max_probability >= t on the split's samples: each stops at the first early exit whose top
    softmax probability reaches t, else at the last exit."""
    rows = arrays["split"] == split
    logits, labels = np.asarray(arrays["logits"], dtype=np.float32)[:, rows], arrays["labels"][rows]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    confident = p.max(-1)[:-1] >= t  # (early exits, n)
    stop = np.where(confident.any(0), confident.argmax(0), len(logits) - 1)
    predicted = logits.argmax(-1)[stop, np.arange(len(labels))]
    return float((predicted == labels).mean())


def final_exit_accuracy(arrays: dict, split: str) -> float:
    rows = arrays["split"] == split
    return float((np.asarray(arrays["logits"])[-1, rows].argmax(-1) == arrays["labels"][rows]).mean())


def test_every_page_works_from_an_npz_outputs_file(env, hybrid):
    at = opened((("hybrid.npz", npz_bytes(hybrid)),))
    assert_no_exception(at, errors_too=True)
    assert at.sidebar.selectbox(key="model").value == "uploaded outputs: hybrid.npz"
    accuracy = f"{100 * replayed_accuracy(hybrid, 'test', 0.9):.2f}%"
    for page in PAGES:
        on_page(at, page)
        infos = [i.value for i in at.info]
        if page in NETWORK_PAGES:
            assert any(i.startswith(NO_NETWORK) for i in infos), (page, infos)
        if page in REPLAY_PAGES:
            assert at.dataframe or at.get("vega_lite_chart"), page
        if page == "overview":
            assert metric(at, "Final exit accuracy (test)") == f"{100 * final_exit_accuracy(hybrid, 'test'):.2f}%"
            assert metric(at, "Full network cost") == f"{int(hybrid['full_cost']) / 1e6:.3f} M MACs"
        if page in ("thresholds", "deploy"):
            assert metric(at, "Accuracy") == accuracy, page
        if page == "ensemble":
            final = f"**{100 * final_exit_accuracy(hybrid, 'test'):.2f}%** for the final exit alone"
            assert any(final in m.value for m in at.markdown)
        if page == "deploy":  # the file's feature sizes allow a split over tiers
            assert at.radio(key="dep_tiers").value == 3
    at.session_state["calibrated"] = True
    on_page(at, "thresholds")
    assert any("fitted now on the outputs file's validation samples" in c.value for c in at.caption)


def test_a_csv_with_its_json_in_milliseconds_reports_time(env):
    csv, sidecar, arrays = ms_table()
    at = opened((("mine.csv", csv), ("mine.json", sidecar)))
    assert_no_exception(at, errors_too=True)
    assert at.sidebar.selectbox(key="model").value == "uploaded outputs: mine.csv"
    on_page(at, "overview")
    assert metric(at, "Full network cost") == "4.500 ms"
    assert metric(at, "Final exit accuracy (test)") == f"{100 * final_exit_accuracy(arrays, 'test'):.2f}%"
    on_page(at, "thresholds")
    assert metric(at, "Accuracy") == f"{100 * replayed_accuracy(arrays, 'test', 0.9):.2f}%"
    assert metric(at, "Expected time").endswith(" ms")
    on_page(at, "deploy")  # no feature sizes in the file: one tier, its speed a multiple of the measuring machine's
    assert "dep_tiers" not in [r.key for r in at.radio]
    assert any("no feature_sizes and input_size" in c.value for c in at.caption)
    mean = metric(at, "Mean latency")
    at.select_slider(key="dep_speedup_1_0").set_value(2.0).run()
    assert float(metric(at, "Mean latency").split()[0]) == pytest.approx(float(mean.split()[0]) / 2, abs=0.01)


@pytest.mark.parametrize(
    "files,message",
    [
        (
            lambda good: {
                "nan.npz": npz_bytes({**good, "logits": np.where(good["logits"] > 5, np.nan, good["logits"])})
            },
            "NaN or infinite values",
        ),
        (lambda good: {"short.npz": npz_bytes({**good, "labels": good["labels"][:-1]})}, "labels has shape"),
        (lambda good: {"alone.json": b"{}"}, "alone.json alone is not a per-exit outputs file"),
    ],
)
def test_a_malformed_upload_gets_one_message_and_the_model_before_stays(env, hybrid, files, message):
    at = opened((("hybrid.npz", npz_bytes(hybrid)),))
    upload(at, *files(hybrid).items())
    assert_no_exception(at)
    assert len(at.sidebar.error) == 1 and message in at.sidebar.error[0].value, [e.value for e in at.sidebar.error]
    assert at.sidebar.selectbox(key="model").options == ["uploaded outputs: hybrid.npz"]
    assert at.sidebar.selectbox(key="model").value == "uploaded outputs: hybrid.npz"
    on_page(at, "thresholds")
    assert metric(at, "Accuracy") == f"{100 * replayed_accuracy(hybrid, 'test', 0.9):.2f}%"


def test_files_added_to_the_uploader_open_as_one_more_model(env, hybrid):
    csv, sidecar, _ = ms_table()
    at = opened((("hybrid.npz", npz_bytes(hybrid)),))
    uploader = at.file_uploader(key="outputs_upload")
    uploader._files = uploader._get_files_to_register()  # keep hybrid.npz in the uploader, as the browser does
    uploader.upload("mine.csv", csv).run()  # its .json is not there yet
    assert "needs mine.json beside it" in at.sidebar.error[0].value
    assert at.sidebar.selectbox(key="model").value == "uploaded outputs: hybrid.npz"
    uploader = at.file_uploader(key="outputs_upload")
    uploader._files = uploader._get_files_to_register()
    uploader.upload("mine.json", sidecar).run()
    assert_no_exception(at, errors_too=True)
    picker = at.sidebar.selectbox(key="model")
    assert picker.value == "uploaded outputs: mine.csv"
    assert picker.options == ["uploaded outputs: hybrid.npz", "uploaded outputs: mine.csv"]


def test_outputs_files_in_the_model_folders_are_listed(env, hybrid, monkeypatch, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    csv, sidecar, arrays = ms_table()
    (folder / "timed.csv").write_bytes(csv)
    (folder / "timed.json").write_bytes(sidecar)
    (folder / "lonely.csv").write_bytes(csv)  # no .json beside it: not an outputs file it can read
    (folder / "hybrid.npz").write_bytes(npz_bytes(hybrid))
    (folder / "m.val.npz").write_bytes((shipped_models_dir() / "aep_hybrid.val.npz").read_bytes())  # evaluation
    monkeypatch.setenv("AEP_MODELS_DIR", str(folder))
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["model"] = "timed.csv"
    at.run()
    assert at.sidebar.selectbox(key="model").options == ["hybrid.npz", "timed.csv"]
    on_page(at, "overview")
    assert metric(at, "Full network cost") == "4.500 ms"
    assert metric(at, "Final exit accuracy (test)") == f"{100 * final_exit_accuracy(arrays, 'test'):.2f}%"
