"""The Streamlit app through AppTest: every page loads, its main widgets change what is shown, uploads
of good and bad files give the expected result or message, settings round-trip through the URL."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from app_helpers import APP, PAGES, assert_no_exception, png_bytes, run_app, small_model_dir
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.discovery import discover_models, model_folders, trained_models_dir
from aep_core.checkpoint.sidecars import resume_path
from aep_core.data import load_slice
from aep_core.exits import runtime
from aep_core.exits.rules import ModelExits, get_rule, list_rules, make_rule
from aep_core.paths import shipped_models_dir
from aep_core.preprocess import prepare_array


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return small_model_dir()


@pytest.fixture
def env(models, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(models))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    return models


_app = run_app
_ok = assert_no_exception


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [str(m.value) for m in at.metric] + [c.value for c in at.caption])


def _spec(at: AppTest, i: int = 0) -> dict:
    """The i-th chart's Vega-Lite spec, with its datasets (sent as Arrow) decoded to lists of rows."""
    proto = at.get("vega_lite_chart")[i].proto
    spec = json.loads(proto.spec)
    spec["datasets"] = {
        d.name: convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records") for d in proto.datasets
    }
    return spec


def test_entry_page_has_sidebar_and_strip(env):
    at = _app()
    _ok(at)
    assert at.sidebar.selectbox(key="model").value == "tiny"
    assert at.sidebar.selectbox(key="rule").value == "max_probability"
    spec = _spec(at)
    assert any(r.get("exit") == "exit 4" for d in spec["datasets"].values() for r in d)
    assert any("tiny" in h.value for h in at.subheader)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads_directly(env, page):
    at = _app(page)
    _ok(at)
    assert at.title, "each page has a title"
    assert not at.error, [e.value for e in at.error]


def test_no_model_gives_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "none"))
    for page in [None] + [p for p in PAGES if p not in ("overview", "learn", "train")]:
        at = _app(page)
        _ok(at)
        assert any("No model" in w.value for w in at.warning)


def test_threshold_moves_change_metrics_and_current_point(env):
    at = _app("thresholds", **{"thr_max_probability": 0.0})
    _ok(at)
    acc_low, macs_low = at.metric[0].value, at.metric[1].value
    point_low = next(d for d in _spec(at)["datasets"].values() if d and d[0].get("what") == "current setting")[0]
    at.slider(key="thr_max_probability").set_value(1.0).run()
    _ok(at)
    point_high = next(d for d in _spec(at)["datasets"].values() if d and d[0].get("what") == "current setting")[0]
    assert at.metric[1].value != macs_low
    assert point_high["macs"] > point_low["macs"]
    assert acc_low != at.metric[0].value or point_high["accuracy"] != point_low["accuracy"]


def test_rule_switch_and_per_exit_thresholds(env):
    at = _app("thresholds", rule="entropy")
    _ok(at)
    assert "entropy" in _texts(at)
    at.toggle(key="pe_toggle").set_value(True).run()
    _ok(at)
    sliders = [s for s in at.slider if s.key and s.key.startswith("pe_")]
    assert len(sliders) == 4
    sliders[0].set_value(0.0).run()
    _ok(at)
    assert "per-exit" in _texts(at)
    assert at.session_state["per_exit_thresholds"][0] == 0.0


def test_presets_apply_solver_thresholds(env):
    at = _app("thresholds")
    at.button(key="preset_budget").click().run()
    _ok(at)
    assert at.success or at.error  # a budget the tiny model cannot certify is explained, not a crash
    at.button(key="preset_optimistic").click().run()
    _ok(at)
    assert at.warning and "Preset applied" in at.warning[0].value, [e.value for e in at.error]
    message = at.warning[0].value
    assert "Optimistic" in message and "without a guarantee" in message and "against the final exit" in message
    assert at.session_state["per_exit_on"] is True
    assert len(at.session_state["per_exit_thresholds"]) == 4
    # the page then shows exactly the outcome the preset announced
    announced = message.split("Preset applied: ")[1].split("%")[0]
    assert at.metric[0].value == f"{announced}%"
    at.run()
    assert at.metric[0].value == f"{announced}%"
    at.button(key="preset_certified").click().run()
    _ok(at)
    assert at.success or at.error
    if at.success:
        assert "Certified" in at.success[0].value and "90% confidence" in at.success[0].value


def test_preset_labels_say_which_are_guaranteed(env):
    at = _app("thresholds")
    _ok(at)
    labels = {b.key: b.label for b in at.button if b.key and b.key.startswith("preset_")}
    assert labels["preset_certified"] == "Guaranteed within 0.5 points (90% confidence)"
    assert labels["preset_budget"] == "Guaranteed at most 50% of the compute (90%)"
    assert labels["preset_optimistic"] == "Optimistic: cheapest within 0.5 points on validation (no guarantee)"
    assert at.selectbox(key="preset_reference").value == "final"


@pytest.mark.parametrize(
    ("model", "rule", "reference"),
    [
        ("aep_hybrid", "aep_ensemble", "final"),
        ("aep_hybrid", "aep_ensemble", "ensemble"),
        ("", "max_probability", "final"),
    ],
)
def test_certified_preset_on_shipped_models(model, rule, reference, monkeypatch, tmp_path):
    """The certified preset works on the shipped default model ("") and on the AEP model's ensemble rule, and
    announces the reference, the confidence and the certified bounds that `certify` gives for the same request."""
    from aep_core.checkpoint.discovery import DEFAULT_MODEL
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.certify import certify

    monkeypatch.delenv("AEP_MODELS_ONLY", raising=False)
    monkeypatch.delenv("AEP_MODELS_DIR", raising=False)
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "none"))
    model = model or DEFAULT_MODEL
    at = run_app("thresholds", model=model, rule=rule)
    _ok(at)
    at.selectbox(key="preset_reference").set_value(reference).run()
    at.button(key="preset_certified").click().run()
    _ok(at, errors_too=True)
    message = at.success[0].value
    ckpt = shipped_models_dir() / f"{model}.pt"
    val, test = (load_evaluation(evaluation_path(ckpt, split)) for split in ("val", "test"))
    expected = certify(val, rule, max_drop_points=0.5, reference=reference, test=test)
    words = "the final exit" if reference == "final" else "the rule's own full-depth prediction"
    assert f"a drop of {expected.drop_points('test'):.2f} points against {words}" in message
    assert "Certified on the validation split with 90% confidence" in message
    assert f"expected drop at most 0.5 points against {words}" in message
    assert f"expected MACs at most {100 * expected.macs_bound:.1f}% of the full network" in message
    assert at.session_state["per_exit_thresholds"] == pytest.approx(expected.settings["thresholds"])


def test_thresholds_page_measures_the_real_speed_up(env):
    at = _app("thresholds", **{"thr_max_probability": 0.5})
    at.button(key="measure_speed").click().run()
    _ok(at)
    table = at.dataframe[-1].value
    assert list(table["batch size"]) == [1, 256] and list(table["images"]) == [200, 1000]
    assert table["threads"][0] == 1 and table["threads"][1] >= 1  # batch 1 on one thread, batch 256 on all
    assert (table["early exit (images/s)"] > 0).all() and (table["without exits (images/s)"] > 0).all()
    assert all(v.endswith("x") for v in table["measured speed-up"])
    assert "Measured for max_probability, t = 0.50" in _texts(at) and "measure again" not in _texts(at)
    at.slider(key="thr_max_probability").set_value(0.9).run()  # the old measurement is kept, marked stale
    assert "measure again" in _texts(at)


def test_try_image_sample_and_threshold(env):
    at = _app("try_image", thr_max_probability=0.0)
    _ok(at)
    assert "stops at **exit 0**" in _texts(at)
    at2 = _app("try_image", thr_max_probability=1.0)
    assert "stops at **exit 4**" in _texts(at2)
    at.slider(key="img_sample").set_value(5).run()
    _ok(at)
    assert at.dataframe, "per-exit table shown"


@pytest.mark.parametrize(
    "name,data,mime,ok",
    ids=["png", "cmyk-jpeg", "text", "empty", "truncated"],
    argvalues=[
        ("shirt.png", png_bytes(size=(300, 200)), "image/png", True),
        ("photo.jpg", png_bytes(fmt="JPEG", mode="CMYK"), "image/jpeg", True),
        ("notes.png", b"not an image at all", "image/png", False),
        ("empty.png", b"", "image/png", False),
        ("cut.png", png_bytes(size=(300, 300))[:100], "image/png", False),
    ],
)
def test_try_image_uploads(env, name, data, mime, ok):
    at = _app("try_image", img_source="Upload")
    _ok(at)
    at.file_uploader(key="img_upload").set_value((name, data, mime)).run()
    _ok(at)
    if ok:
        assert not at.error and "this image stops at" in _texts(at)
        assert any("inverted" in c.value for c in at.caption)
    else:
        assert at.error and name in at.error[0].value


def test_checkpoint_upload_good_and_bad(env, models, tmp_path):
    at = _app()
    good = (models / "tiny.pt").read_bytes()
    at.file_uploader(key="ckpt_upload").set_value(("mine.pt", good, "application/octet-stream")).run()
    _ok(at)
    assert at.sidebar.selectbox(key="model").value == "uploaded: mine.pt"
    assert "uploaded: mine.pt" in at.sidebar.selectbox(key="model").options

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"format": "aep-core-checkpoint", "payload": Evil()}, buf)
    future, classes = (torch.load(models / "tiny.pt", weights_only=True) for _ in range(2))
    future["version"] = 99
    classes["meta"]["dataset"]["class_names"] = classes["meta"]["dataset"]["class_names"][:3]
    for name, data, words in [
        ("evil.pt", buf.getvalue(), "pickled code"),
        ("junk.pt", b"\x00garbage" * 10, "not a readable"),
        ("other.pt", _torch_bytes({"weights": torch.zeros(2)}), "not an aep_core checkpoint"),
        ("future.pt", _torch_bytes(future), "checkpoint version 99"),
        ("classes.pt", _torch_bytes(classes), "names 3 classes but the model predicts 10"),
    ]:
        at = _app()
        at.file_uploader(key="ckpt_upload").set_value((name, data, "application/octet-stream")).run()
        _ok(at)
        assert any(words in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_ensemble_presets_change_sliders_and_chart(env):
    at = _app("ensemble")
    _ok(at)
    at.button(key="preset_uniform").click().run()
    _ok(at)
    assert [at.slider(key=f"w_{k}").value for k in range(5)] == [1.0] * 5
    before = [r["accuracy"] for d in _spec(at, 1)["datasets"].values() for r in d]
    at.button(key="preset_geometric").click().run()
    _ok(at)
    assert at.slider(key="w_0").value < at.slider(key="w_4").value
    after = [r["accuracy"] for d in _spec(at, 1)["datasets"].values() for r in d]
    assert len(before) == len(after) == 10


def test_pruning_page_highlights_cut_and_offers_download(env):
    at = _app("pruning")
    _ok(at)
    rows = [r for d in _spec(at)["datasets"].values() for r in d]
    assert sum(r["chosen"] for r in rows) == 1
    assert len(rows) == 5
    assert at.get("download_button")
    at.selectbox(key=at.selectbox[0].key).set_value(0).run()
    _ok(at)
    rows = [r for d in _spec(at)["datasets"].values() for r in d]
    assert rows[0]["chosen"]


def test_saliency_methods_and_targets(env):
    at = _app("saliency")
    _ok(at)
    captions = [c.caption for img in at.get("image") for c in img.proto.imgs]
    assert len(captions) == 6 and captions[1].startswith("exit 0: ")
    at.selectbox(key="sal_method").set_value("grad_cam").run()
    _ok(at)
    at.selectbox(key="sal_target").set_value("Trouser").run()
    _ok(at)
    assert any("explaining Trouser" in c.value for c in at.caption)


def test_url_query_params_restore_and_record_settings(env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["rule"] = "entropy"
    at.query_params["t"] = "0.42"
    at.run()
    _ok(at)
    assert at.session_state["rule"] == "entropy"
    assert abs(at.session_state["thr_entropy"] - 0.42) < 1e-9
    qp = at.query_params
    assert qp["model"] == ["tiny"] or qp["model"] == "tiny"
    assert "entropy" in str(qp["rule"])


@pytest.mark.parametrize("page", ["try_image", "thresholds", "ensemble", "pruning"])
def test_eenet_model_offers_its_confidence_rule(env, page):
    at = _app(page, model="tiny_eenet", rule="eenet_confidence")
    _ok(at)
    assert "EENet confidence >= t" in at.sidebar.selectbox(key="rule").options
    assert at.sidebar.selectbox(key="rule").value == "eenet_confidence"
    assert not at.error, [e.value for e in at.error]
    if page == "pruning":
        assert any("EENet heads" in i.value for i in at.info)


def test_aep_model_hides_eenet_rule(env):
    at = _app(None, model="tiny", rule="eenet_confidence")
    _ok(at)
    assert "EENet confidence >= t" not in at.sidebar.selectbox(key="rule").options
    assert at.sidebar.selectbox(key="rule").value == "max_probability"


def test_two_sessions_keep_their_own_settings(env):
    a = _app("thresholds", thr_max_probability=0.0)
    b = _app("thresholds", thr_max_probability=1.0)
    a_macs, b_macs = a.metric[1].value, b.metric[1].value
    assert a_macs != b_macs
    a.run()
    b.slider(key="thr_max_probability").set_value(0.99).run()
    assert a.metric[1].value == a_macs
    assert a.session_state["thr_max_probability"] == 0.0


def test_url_with_page_opens_that_page_with_its_settings(env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"page": "thresholds", "rule": "max_probability", "t": "0.5", "pe": "0.1,0.2,0.3,0.4"})
    at.run()
    _ok(at)
    assert at.title[0].value == "Thresholds"
    assert at.session_state["per_exit_thresholds"] == [0.1, 0.2, 0.3, 0.4]
    assert "per-exit t = 0.100, 0.200, 0.300, 0.400" in _texts(at)
    assert str(at.query_params["page"]).strip("[]'") == "thresholds"


def _model_for(rule: str) -> str:
    """A test model that can use the rule (a confidence rule needs the EENet one)."""
    return "tiny_eenet" if get_rule(rule).needs_confidence else "tiny"


@pytest.mark.parametrize("rule", list_rules(deployable=True))
@pytest.mark.parametrize("page", ["try_image", "thresholds"])
def test_every_rule_on_image_and_thresholds_pages(env, rule, page):
    at = _app(page, rule=rule, model=_model_for(rule))
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["rule"] == rule
    assert rule in _texts(at)
    if page == "try_image":  # the rule's score per exit, named as the registry names it
        assert get_rule(rule).score_name in at.dataframe[0].value.columns


@pytest.mark.parametrize("model,has_confidence", [("tiny", False), ("tiny_eenet", True)])
def test_sidebar_offers_the_registry_rules_the_model_can_use(env, model, has_confidence):
    at = _app(None, model=model)
    _ok(at)
    offered = list_rules(deployable=True, model=ModelExits(5, has_confidence))
    assert at.sidebar.selectbox(key="rule").options == [get_rule(r).label for r in offered]


@pytest.mark.parametrize("rule", [r for r in list_rules(deployable=True) if get_rule(r).setting is not None])
def test_sidebar_setting_follows_the_rule_registry(env, rule):
    at = _app(None, rule=rule, model=_model_for(rule))
    _ok(at)
    spec = get_rule(rule)
    slider = at.sidebar.slider(key=f"thr_{rule}")
    assert slider.label == spec.setting.label
    assert (slider.min, slider.max) == spec.setting.bounds(5)
    assert slider.step == (1 if spec.setting.integer else 0.01)
    assert slider.value == spec.setting.default
    assert spec.help in [c.value for c in at.sidebar.caption]


def test_model_picker_lists_model_files_only(env, models, tmp_path, monkeypatch):
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(models / "tiny.pt", more / "tiny.pt")  # the same stem in a later folder
    shutil.copy(models / "tiny.pt", resume_path(more / "other.pt"))  # a training state, not a model
    monkeypatch.setenv("AEP_MODELS_DIR", f"{models}{os.pathsep}{more}")
    at = _app()
    _ok(at)
    assert at.sidebar.selectbox(key="model").options == ["tiny", "tiny_eenet", "more/tiny"]


def test_model_folders_follow_the_environment(tmp_path):
    shipped, trained, extra = tmp_path / "shipped", tmp_path / "trained", [tmp_path / "a", tmp_path / "b"]
    assert model_folders(shipped, trained, env={}) == [shipped, trained]
    env = {"AEP_MODELS_DIR": os.pathsep.join(map(str, extra)), "AEP_MODELS_ONLY": "1"}
    assert model_folders(shipped, trained, env=env) == [trained, *extra]
    assert trained_models_dir(trained, env={}) == trained
    assert trained_models_dir(trained, env={"AEP_APP_RUNS_DIR": str(tmp_path / "runs")}) == tmp_path / "runs"


def _trained_ensemble(models) -> tuple:
    """The tiny model, its metadata, and its aep_ensemble rule with its trained weights (checked not uniform)."""
    model, meta = load_checkpoint(models / "tiny.pt")
    exits = ModelExits.of_model(model, meta.ensemble_weights)
    trained = make_rule("aep_ensemble", exits, thresholds=0.9)
    uniform = make_rule("aep_ensemble", ModelExits(model.num_exits), thresholds=0.9)
    assert trained.settings["weights"] != pytest.approx(uniform.settings["weights"]), "needs non-uniform weights"
    return model, meta, trained


def test_try_image_ensemble_scores_use_the_trained_weights(env, models):
    model, meta, trained = _trained_ensemble(models)
    d = meta.dataset
    with torch.inference_mode():
        logits = torch.stack(model(prepare_array(load_slice()["images"][3], d.mean, d.std)).logits)[:, 0].numpy()
    at = _app("try_image", rule="aep_ensemble", thr_aep_ensemble=0.9, img_sample=3)
    _ok(at)
    shown = at.dataframe[0].value[get_rule("aep_ensemble").score_name].tolist()
    assert shown == pytest.approx(np.round(trained.decide_single(logits)[1], 3).tolist())


def test_measured_speed_up_uses_the_trained_ensemble_weights(env, models, monkeypatch):
    _, _, trained = _trained_ensemble(models)
    used = []
    measure = runtime.measure_speedup

    def recording(model, rule, *args, **kwargs):
        used.append(rule.settings["weights"])
        return measure(model, rule, *args, **kwargs)

    monkeypatch.setattr(runtime, "measure_speedup", recording)
    at = _app("thresholds", rule="aep_ensemble", thr_aep_ensemble=0.9)
    at.button(key="measure_speed").click().run()
    _ok(at)
    assert used and all(w == pytest.approx(trained.settings["weights"]) for w in used)


def test_saliency_upload_good_and_bad(env):
    at = _app("saliency", sal_source="Upload")
    _ok(at)
    shoe = png_bytes(fmt="WEBP", size=(120, 80))
    at.file_uploader(key="sal_upload").set_value(("shoe.webp", shoe, "image/webp")).run()
    _ok(at)
    assert not at.error and len(at.get("image")) == 6  # the input and one map per exit
    at.file_uploader(key="sal_upload").set_value(("huge.png", _huge_png(), "image/png")).run()
    _ok(at)
    assert at.error and "huge.png" in at.error[0].value and "pixels" in at.error[0].value


def _huge_png() -> bytes:
    from app_helpers import png_header

    return png_header(30000, 30000)


SHIPPED = sorted(discover_models([shipped_models_dir()]))


@pytest.mark.parametrize("model", SHIPPED)
def test_every_page_works_with_every_shipped_model(model, monkeypatch, tmp_path):
    monkeypatch.delenv("AEP_MODELS_ONLY", raising=False)
    monkeypatch.delenv("AEP_MODELS_DIR", raising=False)
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "none"))
    for page in PAGES:
        at = run_app(page, model=model)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.session_state["model"] == model
