"""The engine choice in the app, on the tiny test models: the Thresholds page measures its speed-up on the engine
picked, against the faster engine without exits, and names it; the Deploy page times compute from per-segment
latencies measured on an engine, which changes its figures, equals the simulator's on those times, and can be
measured again."""

import importlib.util
import json

import numpy as np
import pytest
from app_helpers import assert_no_exception, run_app, small_model_dir
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.deploy import simulator
from aep_core.deploy.simulator import SegmentTimes, feature_sizes, make_deployment, simulate
from aep_core.evaluation import load_evaluation
from aep_core.exits import runtime
from aep_core.exits.runtime import get_engine, list_engines

ENGINES = [
    "torch",
    pytest.param(
        "onnxruntime",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"
        ),
    ),
]


@pytest.fixture(scope="module")
def models():
    return small_model_dir()


@pytest.fixture
def env(models, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(models))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    return models


def _texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def _table_with(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


@pytest.mark.parametrize("engine", ENGINES)
def test_thresholds_measures_on_the_chosen_engine_against_the_faster_static_one(env, engine, monkeypatch):
    used = []
    measure = runtime.measure_speedup

    def recording(*args, **kwargs):
        used.append(kwargs.get("engine"))
        return measure(*args, **kwargs)

    monkeypatch.setattr(runtime, "measure_speedup", recording)
    at = run_app("thresholds", thr_max_probability=0.5, speed_engine=engine)
    at.button(key="measure_speed").click().run()
    assert_no_exception(at, errors_too=True)
    assert used == [engine, engine]  # batch 1 and batch 256
    table = _table_with(at, "faster without exits")
    labels = {name: get_engine(name).label for name in list_engines(available=True)}
    static = {name: table[f"without exits, {label} (images/s)"] for name, label in labels.items()}
    for row in range(2):
        best = max(v[row] for v in static.values())
        assert table["without exits (images/s)"][row] == best > 0
        named = next(name for name, label in labels.items() if label == table["faster without exits"][row])
        assert static[named][row] == best
        assert table["early exit (images/s)"][row] > 0
    texts = _texts(at)
    assert f"early exit on {labels[engine]}" in texts and "measure again" not in texts
    others = [name for name in labels if name != engine]
    if others:  # another engine picked: the measurement is kept and marked stale
        at.radio(key="speed_engine").set_value(others[0]).run()
        assert_no_exception(at)
        assert "measure again" in _texts(at) and f"early exit on {labels[engine]}" in _texts(at)


def _chart_mean_ms(at: AppTest) -> float:
    """The latency breakdown's total over all samples, in ms."""
    proto = at.get("vega_lite_chart")[0].proto
    json.loads(proto.spec)
    rows = [r for d in proto.datasets for r in convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")]
    return sum(r["ms"] for r in rows if r["group"] == "all samples")


@pytest.mark.parametrize("engine", ENGINES)
def test_deploy_measured_latencies_change_the_figures(env, engine):
    at = run_app("deploy", timeout=90, dep_tiers=1, thr_max_probability=0.9)
    assert_no_exception(at, errors_too=True)
    from_macs = _chart_mean_ms(at)
    at.radio(key="dep_compute").set_value(engine).run()
    at.button(key="dep_remeasure").click().run()  # measured now, whatever an earlier test left in the cache
    assert_no_exception(at, errors_too=True)
    segments = _table_with(at, "measured (ms)")
    assert list(segments["segment"]) == [f"to exit {k}" for k in range(len(segments))] and len(segments) > 1
    assert (segments["measured (ms)"] > 0).all() and (segments["MACs / this machine's speed (ms)"] > 0).all()
    measured = _chart_mean_ms(at)
    assert measured > 0 and measured != pytest.approx(from_macs, rel=1e-9)
    assert f"measured on {get_engine(engine).label}" in _texts(at)
    at.radio(key="dep_compute").set_value("macs").run()
    assert _chart_mean_ms(at) == pytest.approx(from_macs)


def test_deploy_figures_equal_the_simulator_on_the_measured_times(env, models, monkeypatch):
    fake = [0.001, 0.002, 0.0005, 0.004, 0.003]
    calls = []

    def timed(model, input_shape, engine="torch", threads=1, rounds=30, warmup=3):
        calls.append((engine, threads))
        return fake[: model.num_exits]

    monkeypatch.setattr(simulator, "measure_segment_latencies", timed)
    at = run_app("deploy", timeout=90, dep_compute="torch", thr_max_probability=0.9)
    at.button(key="dep_remeasure").click().run()  # drops the cached times: the page measures again
    assert_no_exception(at, errors_too=True)
    assert calls and calls[-1] == ("torch", 1)
    n_calls = len(calls)
    at.run()
    assert len(calls) == n_calls  # a constant of the machine: kept between runs

    model, meta = load_checkpoint(models / "tiny.pt")
    rec = load_evaluation(evaluation_path(models / "tiny.pt", "test"))
    sizes = feature_sizes(model, meta.dataset.input_shape)
    ss = at.session_state
    k = ss["dep_tiers"]
    dep = make_deployment(
        [ss[f"dep_speed_{k}_{t}"] * 1e9 for t in range(k)],
        [ss[f"dep_bw_{k}_{i}"] for i in range(k - 1)],
        [ss[f"dep_lat_{k}_{i}"] for i in range(k - 1)],
        [ss[f"dep_split_{k}_{i}"] for i in range(k - 1)],
        ss["dep_precision"],
    )
    # the device slider starts at this machine's speed, the reference the measured times are scaled from
    segments = SegmentTimes(tuple(fake[: model.num_exits]), ss[f"dep_speed_{k}_0"] * 1e9)
    r = simulate(rec, sizes, dep, "max_probability", segments, thresholds=0.9)
    metrics = {m.label: m.value for m in at.metric}
    stats = r.latency_stats()
    assert metrics["Mean latency"] == f"{1e3 * stats['mean']:.2f} ms"
    assert metrics["p95 latency"] == f"{1e3 * stats['p95']:.2f} ms"
    assert _chart_mean_ms(at) == pytest.approx(1e3 * stats["mean"], rel=1e-6)
    shown = _table_with(at, "measured (ms)")["measured (ms)"]
    np.testing.assert_allclose(shown, 1e3 * np.asarray(fake[: model.num_exits]))
