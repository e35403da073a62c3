"""The app's calibration features through AppTest: the Calibration page's table and charts match
aep_core on the model's files, the sidebar's "Calibrated outputs" switch changes what the Thresholds page
reports (and goes into the URL), and Try an image flags a noise image as unlike the training data.
Expected values are computed from the shipped model's files, copied into a temporary folder."""

import io
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from app_helpers import APP, ROOT, assert_no_exception, run_app
from PIL import Image
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from aep_core.analysis import ood
from aep_core.analysis.calibration import (
    calibrate_checkpoint,
    exit_calibration,
    fit_temperatures,
    resolve_temperatures,
    scale_record,
)
from aep_core.checkpoint import load_checkpoint, read_checkpoint, rewrite_meta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.data import load_slice
from aep_core.evaluation import load_evaluation
from aep_core.exits.rules import replay_rule
from aep_core.preprocess import prepare_array, prepare_image

SHIPPED = ROOT / "assets" / "models" / "aep_hybrid.pt"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """`plain.pt`: the shipped model without stored temperatures; `stored.pt`: the same with temperatures stored."""
    d = tmp_path_factory.mktemp("cal_models")
    plain = replace(read_checkpoint(SHIPPED).meta, calibration=None)
    for name in ("plain", "stored"):
        shutil.copy(SHIPPED, d / f"{name}.pt")
        rewrite_meta(d / f"{name}.pt", plain)
        for split in ("val", "test"):
            shutil.copy(evaluation_path(SHIPPED, split), evaluation_path(d / f"{name}.pt", split))
    calibrate_checkpoint(d / "stored.pt")
    return d


@pytest.fixture
def env(models, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(models))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    torch.set_num_threads(1)
    return models


_app = run_app


def _ok(at: AppTest) -> None:
    assert_no_exception(at, errors_too=True)


def _texts(at: AppTest) -> str:
    return "\n".join(
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [i.value for i in at.info]
        + [w.value for w in at.warning]
        + [s.value for s in at.success]
    )


def _chart_rows(at: AppTest, i: int) -> list[dict]:
    proto = at.get("vega_lite_chart")[i].proto
    return [r for d in proto.datasets for r in convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")]


def _table(at: AppTest):
    return at.dataframe[0].value


@pytest.mark.parametrize(
    "name,source", [("plain", "fitted now on the validation split"), ("stored", "stored in the checkpoint")]
)
def test_calibration_page_matches_aep_core(env, name, source):
    at = _app("calibration", model=name)
    _ok(at)
    assert at.title[0].value == "Calibration"
    assert source in _texts(at)
    test = load_evaluation(evaluation_path(env / f"{name}.pt", "test"))
    temps = fit_temperatures(load_evaluation(evaluation_path(env / f"{name}.pt", "val")))
    for bins in (15, 4):
        if bins != 15:
            at.number_input(key="cal_bins").set_value(bins).run()
            _ok(at)
        before, after = exit_calibration(test, bins), exit_calibration(scale_record(test, temps), bins)
        df = _table(at)
        assert len(df) == test.num_exits
        assert df["ECE %"].tolist() == pytest.approx([round(100 * m.ece, 2) for m in before])
        assert df["ECE % scaled"].tolist() == pytest.approx([round(100 * m.ece, 2) for m in after])
        assert df["NLL scaled"].tolist() == pytest.approx([round(m.nll, 4) for m in after])
        assert df["temperature"].tolist() == pytest.approx([round(t, 3) for t in temps], abs=1e-3)
        ece_rows = _chart_rows(at, 0)
        expected_ece = sorted([m.ece for m in before] + [m.ece for m in after])
        assert sorted(r["ECE"] for r in ece_rows) == pytest.approx(expected_ece)
        # the reliability grid: one point per non-empty bin, per exit, before and after
        points = [r for r in _chart_rows(at, 1) if "count" in r]
        expected = sum(int((m.bins.count > 0).sum()) for m in before + after)
        assert len(points) == expected
        assert sum(r["count"] for r in points) == 2 * test.num_exits * test.num_samples


def _thresholds_numbers(at: AppTest) -> tuple[str, str]:
    return at.metric[0].value, at.metric[1].value


def test_calibrated_switch_changes_the_thresholds_page(env):
    at = _app("thresholds", model="stored", thr_max_probability=0.9)
    _ok(at)
    test = load_evaluation(evaluation_path(env / "stored.pt", "test"))
    temps = read_checkpoint(env / "stored.pt").meta.calibration.temperatures
    raw = replay_rule(test, "max_probability", thresholds=0.9)
    cal = replay_rule(scale_record(test, temps), "max_probability", thresholds=0.9)
    assert (raw.accuracy, raw.expected_macs) != (cal.accuracy, cal.expected_macs), "scaling should move this rule"
    assert _thresholds_numbers(at) == (f"{100 * raw.accuracy:.2f}%", f"{raw.expected_macs / 1e6:.2f} M")
    at.sidebar.toggle(key="calibrated").set_value(True).run()
    _ok(at)
    assert at.title[0].value == "Thresholds"
    assert _thresholds_numbers(at) == (f"{100 * cal.accuracy:.2f}%", f"{cal.expected_macs / 1e6:.2f} M")
    assert "Calibrated outputs: each exit's logits divided by its temperature" in _texts(at)
    assert "calibrated outputs" in _texts(at)  # the rule's description says so
    assert str(at.query_params["cal"]).strip("[]'") == "1"
    at.sidebar.toggle(key="calibrated").set_value(False).run()
    assert _thresholds_numbers(at) == (f"{100 * raw.accuracy:.2f}%", f"{raw.expected_macs / 1e6:.2f} M")


def test_calibrated_switch_restores_from_the_url(env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"page": "thresholds", "model": "plain", "cal": "1"})
    at.run()
    _ok(at)
    assert at.session_state["calibrated"] is True
    assert "fitted now on the validation split" in _texts(at)


def _noise_png(seed: int) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, "PNG")
    return buf.getvalue()


def _score(flag, model, x: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = torch.stack(model(x).logits).numpy()  # (exits, 1, classes)
    return float(flag.scores(logits)[0])


def test_try_image_flags_a_noise_image_and_not_a_test_image(env):
    model, meta = load_checkpoint(env / "plain.pt")
    d = meta.dataset
    flag = ood.flag_threshold(load_evaluation(evaluation_path(env / "plain.pt", "val")), None)
    noise = [prepare_image(_noise_png(seed), 28, 1, d.mean, d.std).tensor for seed in range(20)]
    flagged = [seed for seed, x in enumerate(noise) if _score(flag, model, x) > flag.value]
    assert flagged, "some noise image should score above the validation threshold"
    images = load_slice()["images"]
    familiar = next(
        i for i, image in enumerate(images) if _score(flag, model, prepare_array(image, d.mean, d.std)) <= flag.value
    )

    at = _app("try_image", model="plain", img_source="Upload")
    at.file_uploader(key="img_upload").set_value(("noise.png", _noise_png(flagged[0]), "image/png")).run()
    _ok(at)
    assert any("does not look like anything the model was trained on" in w.value for w in at.warning)
    assert f"threshold {flag.format(flag.value)}" in " ".join(str(m.delta) for m in at.metric)

    at = _app("try_image", model="plain", img_source="Shipped sample", img_sample=familiar)
    _ok(at)
    assert not any("does not look like anything" in w.value for w in at.warning)
    assert any("looks like the images the model was trained on" in s.value for s in at.success)


@pytest.mark.parametrize("page", ["overview", "try_image", "thresholds", "calibration", "ensemble", "pruning"])
def test_every_replay_page_works_with_calibrated_outputs(env, page):
    at = _app(page, model="plain", calibrated=True)
    _ok(at)
    assert at.sidebar.toggle(key="calibrated").value is True
    if page not in ("calibration", "overview"):
        assert "Calibrated outputs: each exit's logits divided by its temperature" in _texts(at)


@pytest.mark.parametrize(
    "name,with_val,expected,words",
    [
        ("stored", True, "stored", "stored in the checkpoint"),
        ("stored", False, "stored", "stored in the checkpoint"),
        ("plain", True, "fitted", "fitted now on the validation split"),
        ("plain", False, None, "no stored temperatures and no validation outputs"),
    ],
)
def test_temperatures_come_from_the_checkpoint_else_validation_else_none(env, name, with_val, expected, words):
    path = env / f"{name}.pt"
    meta = read_checkpoint(path).meta
    val = load_evaluation(evaluation_path(path, "val"))
    source = resolve_temperatures(meta, val if with_val else None, path)
    assert words in source.description
    if expected == "stored":
        assert source.temperatures == pytest.approx(meta.calibration.temperatures)
    elif expected == "fitted":
        assert source.temperatures == pytest.approx(fit_temperatures(val).tolist())
        assert str(path) in source.description  # the command that stores them names the checkpoint
    else:
        assert source.temperatures is None


def test_flag_threshold_prefers_the_validation_outputs(env):
    val = load_evaluation(evaluation_path(env / "plain.pt", "val"))
    test = load_evaluation(evaluation_path(env / "plain.pt", "test"))
    from_val, from_test = ood.flag_threshold(val, test), ood.flag_threshold(None, test)
    fit, held = ood.fit_split(val.num_samples)
    gaussians = ood.fit_class_gaussians(val.logits[:, fit], val.labels[fit])
    assert from_val.value == pytest.approx(ood.ood_threshold(gaussians.distance(val.logits[:, held])))
    assert from_val.value != pytest.approx(from_test.value)
    assert f"{len(fit):,} validation images" in from_val.description
    assert f"{test.num_samples // 2:,} evaluation images" in from_test.description
    assert ood.flag_threshold(None, None) is None
