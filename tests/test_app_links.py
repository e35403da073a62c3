"""Hand-edited links through AppTest: every query parameter is checked, a bad value falls back to its default with
one warning naming it and why, never a traceback; good values still apply; every page, Overview included, is
served under its own URL path."""

import pytest
from app_helpers import APP, PAGES, assert_no_exception, small_model_dir
from streamlit.testing.v1 import AppTest

from explorer.state import default_value


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(small_model_dir()))  # tiny (AEP, 5 exits) and tiny_eenet
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))


def _open(**params: str) -> AppTest:
    """The app opened from a link with these query parameters."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(params)
    return at.run()


def _warnings(at: AppTest) -> str:
    return "\n".join(w.value for w in at.warning)


def _assert_ignored(at: AppTest, shown: str, why: str) -> None:
    assert_no_exception(at)
    text = _warnings(at)
    assert shown in text and why in text, text


@pytest.mark.parametrize(
    ("rule", "t", "why"),
    [
        ("patience", "nan", "not a finite number"),
        ("patience", "inf", "not a finite number"),
        ("patience", "1e309", "not a finite number"),
        ("patience", "abc", "not a finite number"),
        ("patience", "-1", "outside 1 to 5"),
        ("patience", "99", "outside 1 to 5"),
        ("patience", "2.5", "not a whole number"),
        ("fixed_exit", "5", "outside 0 to 4"),
        ("max_probability", "nan", "not a finite number"),
        ("max_probability", "-inf", "not a finite number"),
        ("max_probability", "1.5", "outside 0 to 1"),
        ("entropy", "-0.1", "outside 0 to 1"),
    ],
)
def test_bad_setting_falls_back_to_the_default_with_a_warning(rule, t, why):
    at = _open(rule=rule, t=t)
    _assert_ignored(at, f"t={t}", why)
    assert at.session_state["rule"] == rule
    assert at.session_state[f"thr_{rule}"] == default_value(rule)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("nope.pt", "no model of that name"),
        ("upload:x.pt", "uploaded file stays in the session that uploaded it"),
        ("uploaded: x.pt", "uploaded file stays in the session that uploaded it"),
    ],
)
def test_unknown_or_uploaded_model_falls_back_to_the_default_with_a_warning(model, why):
    at = _open(model=model, rule="entropy", t="0.3")
    _assert_ignored(at, f"model={model}", why)
    assert at.sidebar.selectbox(key="model").value == "tiny"
    assert at.session_state["thr_entropy"] == 0.3, "the link's good values still apply"


@pytest.mark.parametrize(
    ("rule", "why"), [("bogus", "not an exit rule"), ("eenet_confidence", "model tiny cannot use it")]
)
def test_unknown_or_unusable_rule_falls_back_and_drops_its_setting(rule, why):
    at = _open(rule=rule, t="0.5")
    _assert_ignored(at, f"rule={rule}", why)
    _assert_ignored(at, "t=0.5", "the setting of the ignored rule")
    assert at.sidebar.selectbox(key="rule").value == "max_probability"
    assert at.session_state["thr_max_probability"] == default_value("max_probability")


@pytest.mark.parametrize(
    ("rule", "pe", "why"),
    [
        ("max_probability", "0.1,nan,0.3,0.4", "'nan' is not a threshold in 0 to 1"),
        ("max_probability", "0.1,0.2,0.3,7", "'7' is not a threshold in 0 to 1"),
        ("max_probability", "0.1,0.2", "2 values for this model's 4 early exits"),
        ("patience", "0.1,0.2,0.3,0.4", "rule patience takes no per-exit thresholds"),
    ],
)
def test_bad_per_exit_thresholds_are_ignored_on_the_thresholds_page(rule, pe, why):
    at = _open(page="thresholds", rule=rule, pe=pe)
    _assert_ignored(at, f"pe={pe}", why)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Thresholds"
    assert "per_exit_thresholds" not in at.session_state
    assert "pe" not in at.query_params


def test_bad_calibrated_switch_and_page_are_ignored():
    at = _open(cal="yes", page="nope")
    _assert_ignored(at, "cal=yes", "1 (on) or 0 (off)")
    _assert_ignored(at, "page=nope", "no page of that name")
    assert not at.session_state["calibrated"]
    assert at.title[0].value == "Early-Exit Explorer"


def test_a_good_link_applies_without_a_warning():
    at = _open(page="thresholds", model="tiny_eenet", rule="eenet_confidence", t="0.4", pe="0.1,0.2,0.3,0.4", cal="0")
    assert_no_exception(at, errors_too=True)
    assert not at.warning, _warnings(at)
    assert at.title[0].value == "Thresholds"
    assert at.session_state["model"] == "tiny_eenet"
    assert at.session_state["thr_eenet_confidence"] == 0.4
    assert at.session_state["per_exit_thresholds"] == [0.1, 0.2, 0.3, 0.4]


def test_the_warning_is_shown_once_not_on_every_rerun():
    at = _open(rule="patience", t="nan")
    assert "t=nan" in _warnings(at)
    at.run()
    assert_no_exception(at)
    assert not at.warning, _warnings(at)


def test_long_values_are_shortened_in_the_warning():
    at = _open(model="x" * 500)
    _assert_ignored(at, "model=" + "x" * 37 + "...", "no model of that name")
    assert "x" * 41 not in _warnings(at)


def test_every_page_has_its_own_url_path_overview_included():
    at = _open()
    assert_no_exception(at)
    assert at.title[0].value == "Early-Exit Explorer", "the root URL opens the Overview page"
    assert str(at.query_params["page"]).strip("[]'") == "overview"
    # What st.navigation sent the browser: the URL path each page is served under. The default page is served at
    # the root only, so Overview must not be it, or /overview answers "Page not found".
    paths = {info["url_pathname"]: info["script_path"] for info in at._registered_pages.values()}
    for name in PAGES:
        assert paths.get(name, "").endswith(f"pages/{name}.py"), (name, paths)
