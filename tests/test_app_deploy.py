"""The Deploy page through AppTest, on the shipped model: its figures equal the simulator's on the model's
own evaluation file, the widgets change them, the search's best configuration can be applied, and
impossible settings give messages. Expectations are computed from the shipped files, never written in."""

import json

import numpy as np
import pytest
from app_helpers import ROOT, assert_no_exception, run_app
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.deploy.simulator import decision_grid, feature_sizes, make_deployment, search, simulate
from aep_core.evaluation import load_evaluation

SHIPPED = ROOT / "assets" / "models" / "aep_hybrid.pt"
pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model is not present")


@pytest.fixture(scope="module")
def shipped():
    model, meta = load_checkpoint(SHIPPED)
    sizes = feature_sizes(model, meta.dataset.input_shape)
    return load_evaluation(evaluation_path(SHIPPED, "test")), sizes


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("AEP_MODELS_ONLY", raising=False)
    monkeypatch.delenv("AEP_MODELS_DIR", raising=False)
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))


def _page(**state) -> AppTest:
    return run_app("deploy", timeout=90, **{"model": SHIPPED.stem, **state})


def _ok(at: AppTest) -> None:
    assert_no_exception(at, errors_too=True)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _expected(at: AppTest, rec, sizes, rule="max_probability", **settings):
    """The simulator's result for the deployment the page's widgets describe."""
    ss = at.session_state
    k = ss["dep_tiers"]
    dep = make_deployment(
        [ss[f"dep_speed_{k}_{t}"] * 1e9 for t in range(k)],
        [ss[f"dep_bw_{k}_{i}"] for i in range(k - 1)],
        [ss[f"dep_lat_{k}_{i}"] for i in range(k - 1)],
        [ss[f"dep_split_{k}_{i}"] for i in range(k - 1)],
        ss["dep_precision"],
    )
    return dep, simulate(rec, sizes, dep, rule, **settings)


def _check_metrics(at: AppTest, r) -> None:
    st = r.latency_stats()
    m = _metrics(at)
    assert m["Accuracy"] == f"{100 * r.accuracy:.2f}%"
    assert m["Mean latency"] == f"{1e3 * st['mean']:.2f} ms"
    assert m["p95 latency"] == f"{1e3 * st['p95']:.2f} ms" and m["p99 latency"] == f"{1e3 * st['p99']:.2f} ms"
    assert m["Sent per sample"] == f"{r.bytes_sent.mean() / 1e3:.2f} kB"


def _chart_rows(at: AppTest, i: int) -> list[dict]:
    proto = at.get("vega_lite_chart")[i].proto
    json.loads(proto.spec)
    return [r for d in proto.datasets for r in convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")]


def test_page_matches_the_simulator_on_the_shipped_files(shipped):
    rec, sizes = shipped
    at = _page()
    _ok(at)
    assert at.title[0].value == "Deploy across tiers" and at.session_state["dep_tiers"] == 3
    _, r = _expected(at, rec, sizes, thresholds=0.9)
    _check_metrics(at, r)
    assert len(at.get("vega_lite_chart")) == 3
    share = {row["tier"]: row["share"] for row in _chart_rows(at, 1)}
    assert share == pytest.approx(dict(zip(["device", "edge", "cloud"], r.tier_share.tolist(), strict=True)))
    parts = [row for row in _chart_rows(at, 0) if row["group"] == "all samples"]
    assert sum(p["ms"] for p in parts) == pytest.approx(1e3 * r.latency_stats()["mean"], rel=1e-6)


def test_widgets_change_the_figures(shipped):
    rec, sizes = shipped
    at = _page()
    at.select_slider(key="dep_bw_3_0").set_value(1.0)
    at.select_slider(key="dep_speed_3_0").set_value(0.1)
    at.radio(key="dep_precision").set_value("int8")
    at.selectbox(key="dep_split_3_0").set_value(2)
    at.run()
    _ok(at)
    _, r = _expected(at, rec, sizes, thresholds=0.9)
    assert r.deployment.splits[0] == 2 and r.deployment.precision == "int8"
    _check_metrics(at, r)
    at.radio(key="dep_tiers").set_value(1).run()
    _ok(at)
    _, r1 = _expected(at, rec, sizes, thresholds=0.9)
    _check_metrics(at, r1)
    assert _metrics(at)["Sent per sample"] == "0.00 kB"
    at.sidebar.slider(key="thr_max_probability").set_value(0.5).run()
    _ok(at)
    _check_metrics(at, _expected(at, rec, sizes, thresholds=0.5)[1])


def test_energy_appears_with_a_power(shipped):
    rec, sizes = shipped
    at = _page()
    at.number_input(key="dep_power_3_0").set_value(2.0).run()
    _ok(at)
    _, r = _expected(at, rec, sizes, thresholds=0.9)
    device_s = r.timings.compute_s[r.exit_index, 0]
    assert _metrics(at)["Energy per sample"] == f"{1e3 * 2.0 * device_s.mean():.3f} mJ"


@pytest.mark.parametrize("stat", ["mean", "p95"])
def test_best_configuration_meets_the_deadline_and_applies(shipped, stat):
    rec, sizes = shipped
    at = _page(dep_deadline=20.0, dep_stat=stat, dep_speed_3_0=20.0)  # a fixed device speed: the deadline is reachable
    _ok(at)
    dep, _ = _expected(at, rec, sizes, thresholds=0.9)
    grid = decision_grid(rec, "max_probability", grid=np.round(np.linspace(0, 1, 101), 2))
    res = search(grid, rec.cum_macs, sizes, dep, 0.02, stat)
    best = res.point(res.best)
    assert f"{100 * best['accuracy']:.2f}%" in at.success[0].value
    at.button(key="dep_apply").click().run()
    _ok(at)
    assert [at.session_state[f"dep_split_3_{i}"] for i in range(2)] == best["splits"]
    assert at.session_state["thr_max_probability"] == pytest.approx(best["settings"]["thresholds"])
    _, r = _expected(at, rec, sizes, thresholds=best["settings"]["thresholds"])
    assert r.latency_stats()[stat] <= 0.02 and r.accuracy == pytest.approx(best["accuracy"])
    assert _metrics(at)["Accuracy"] == f"{100 * best['accuracy']:.2f}%"


def test_other_rules_and_messages(shipped):
    at = _page(rule="patience")
    _ok(at)
    at = _page(rule="aep_ensemble")
    _ok(at)
    at = _page(dep_deadline=0.01)
    _ok(at)
    assert "fastest reachable" in at.warning[0].value
    at = _page(dep_split_3_0=3, dep_split_3_1=1)
    assert not at.exception and "non-decreasing" in at.error[0].value
