"""The ONNX Runtime engine decides as the PyTorch engine and the replay do, for every deployable rule of the
registry, with and without temperatures, at batch 1 and in shrinking batches; its network without exits gives
PyTorch's logits; the engines registry, the export cache, the best static baseline and `run --engine`."""

import json
import re

import numpy as np
import pytest
import torch
from test_cli import ROOT
from test_runtime import CASES, CUM_MACS, FULL_MACS, HEADS, model_exits, spread_rule, untrained_model

from aep_core.analysis.calibration import scale_record
from aep_core.cli.main import main
from aep_core.errors import AepError, ConfigError
from aep_core.exits import onnx_runtime
from aep_core.exits.onnx_runtime import OnnxEarlyExitRunner, OnnxStaticRunner
from aep_core.exits.rules import ExitRule, get_rule, make_rule
from aep_core.exits.runtime import (
    ENGINES,
    EarlyExitRunner,
    best_static,
    get_engine,
    list_engines,
    measure_engines,
    record_outputs,
)
from aep_core.models import ModelSpec, build_model

pytest.importorskip("onnxruntime")

TEMPERATURES = [0.5, 0.8, 1.3, 2.0, 1.0]
ATOL = 1e-4  # outputs of the two engines differ by float rounding only
CKPT = ROOT / "assets" / "models" / "aep_hybrid.pt"


@pytest.fixture(scope="module")
def inputs():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 1, 28, 28, generator=g)
    return x, torch.randint(0, 10, (160,), generator=g).numpy()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def models():
    return {head: untrained_model(head) for head in HEADS}


@pytest.fixture(scope="module")
def records(models, inputs, cache):
    """(engine, head, batch size) -> every exit's outputs on the inputs, computed as that engine's runner does."""
    store = {}

    def get(engine: str, head: str, batch_size: int):
        key = (engine, head, batch_size)
        if key not in store:
            x, y = inputs
            if engine == "torch":
                store[key] = record_outputs(models[head], x, y, CUM_MACS, FULL_MACS, batch_size=batch_size)
            else:
                runner = OnnxEarlyExitRunner(models[head], _any_rule(models[head]), cache_dir=cache)
                store[key] = runner.record_outputs(x, y, CUM_MACS, FULL_MACS, batch_size=batch_size)
        return store[key]

    return get


def _any_rule(model) -> ExitRule:
    return make_rule("fixed_exit", model_exits(model), k=0)


def _scaled(rec, temperatures):
    return rec if temperatures is None else scale_record(rec, temperatures)


def _rounding_flip(rule: ExitRule, ref, other, i: int, upto: int) -> bool:
    """Whether sample i's decisions can differ between two records by float rounding alone: its outputs agree
    within ATOL, and at some exit <= `upto` its score lies within ATOL of the threshold or the rule's prediction
    flips (a tie between classes)."""
    if np.abs(ref.logits[:, i] - other.logits[:, i]).max() > ATOL:
        return False
    conf = None if ref.confidences is None else ref.confidences[:, i : i + 1]
    other_conf = None if other.confidences is None else other.confidences[:, i : i + 1]
    s_ref, p_ref = rule.scores(ref.logits[:, i : i + 1], conf)
    _, p_other = rule.scores(other.logits[:, i : i + 1], other_conf)
    last = min(upto, len(rule.thresholds) - 1)
    near = np.abs(s_ref[: last + 1, 0] - rule.thresholds[: last + 1]) <= ATOL
    return bool(near.any() or (p_ref[: upto + 1, 0] != p_other[: upto + 1, 0]).any())


def _disagreements(rule: ExitRule, a, b, rec_a, rec_b) -> int:
    """How many samples two outcomes stop at a different exit or predict differently; fails unless each is a
    rounding flip at a threshold."""
    differ = np.flatnonzero((a.exit_index != b.exit_index) | (a.prediction != b.prediction))
    for i in differ:
        upto = int(min(a.exit_index[i], b.exit_index[i]))
        assert _rounding_flip(rule, rec_a, rec_b, i, upto), f"sample {i} differs beyond float rounding"
    return len(differ)


@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("temperatures", [None, TEMPERATURES], ids=["raw", "calibrated"])
@pytest.mark.parametrize("name,head", CASES)
def test_onnx_engine_decides_as_torch_and_the_replay(
    name, head, temperatures, batch_size, models, records, inputs, cache
):
    x, _ = inputs
    model = models[head]
    torch_rec = _scaled(records("torch", head, batch_size), temperatures)
    ort_rec = _scaled(records("onnxruntime", head, batch_size), temperatures)
    rule = spread_rule(name, torch_rec, model_exits(model))
    ort = OnnxEarlyExitRunner(model, rule, temperatures=temperatures, cache_dir=cache).run(x, batch_size)
    assert ort.engine == "onnxruntime" and ort.batch_size == batch_size and ort.seconds > 0
    # Same numbers, same decisions: the ONNX engine against the replay of its own outputs.
    assert _disagreements(rule, ort, rule.replay(ort_rec), ort_rec, ort_rec) == 0
    # Across engines the outputs differ by float rounding, which may flip a decision that sits on a threshold.
    torch_run = EarlyExitRunner(model, rule, temperatures=temperatures).run(x, batch_size)
    flips = _disagreements(rule, ort, torch_run, torch_rec, ort_rec)
    flips_replay = _disagreements(rule, ort, rule.replay(torch_rec), torch_rec, ort_rec)
    assert flips <= max(1, len(x) // 100) and flips_replay <= max(1, len(x) // 100)
    if get_rule(name).has_thresholds:
        assert len(np.unique(ort.exit_index)) >= 3  # samples really left the batch at several exits


def test_onnx_engine_really_skips_later_segments(models, inputs, cache):
    x, _ = inputs
    model = models["aep"]
    runner = OnnxEarlyExitRunner(model, make_rule("fixed_exit", model_exits(model), k=1), cache_dir=cache)
    runner.prepare(tuple(x.shape[1:]))
    calls = [0] * model.num_exits
    for k, session in enumerate(runner.sessions):
        runner.sessions[k] = _Counting(session, calls, k)
    res = runner.run(x[:10], 4)
    assert (res.exit_index == 1).all() and calls == [3, 3, 0, 0, 0]


class _Counting:
    def __init__(self, session, calls: list[int], k: int) -> None:
        self.session, self.calls, self.k = session, calls, k

    def run(self, *args, **kwargs):
        self.calls[self.k] += 1
        return self.session.run(*args, **kwargs)


def grid_pooled_model() -> torch.nn.Module:
    """A small untrained model whose heads pool to a 4 x 4 grid, as the shipped models' do (7 x 7 maps included)."""
    torch.manual_seed(1)
    return build_model(ModelSpec(backbone_config={"widths": [8, 16, 32]}, head="aep", head_pool=4)).eval()


@pytest.mark.parametrize("head", [*HEADS, "aep-grid-pooled"])
def test_static_onnx_model_gives_pytorchs_logits(head, models, inputs, cache):
    x, _ = inputs
    model = models[head] if head in models else grid_pooled_model()
    static = OnnxStaticRunner(model, threads=1, cache_dir=cache)
    static.prepare(tuple(x.shape[1:]))
    with torch.inference_mode():
        want = model.forward_final(x[:64]).numpy()
    np.testing.assert_allclose(static.logits(static.as_input(x[:64])), want, atol=ATOL, rtol=0)
    pred, seconds = static.run(x[:64], 32)
    assert seconds > 0 and np.array_equal(pred, want.argmax(1))


def test_export_cache_is_keyed_on_the_weights(models, cache, monkeypatch):
    model = models["aep"]
    first = onnx_runtime.exported_segments(model, (1, 28, 28), cache)
    assert [p.name for p in first] == [f"exit_{k}.onnx" for k in range(model.num_exits)]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    assert onnx_runtime.exported_segments(model, (1, 28, 28), cache) == first  # found, not exported
    changed = untrained_model("aep")
    with torch.no_grad():
        changed.heads[0].fc.bias += 1.0
    assert onnx_runtime.model_key(changed, (1, 28, 28)) != onnx_runtime.model_key(model, (1, 28, 28))
    assert onnx_runtime.model_key(model, (1, 12, 12)) != onnx_runtime.model_key(model, (1, 28, 28))
    with pytest.raises(AssertionError, match="exported again"):
        onnx_runtime.exported_segments(changed, (1, 28, 28), cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_engines_registry(monkeypatch):
    assert list(ENGINES) == ["torch", "onnxruntime"] and list_engines(available=True) == list(ENGINES)
    with pytest.raises(ConfigError, match="torch, onnxruntime"):
        get_engine("tensorrt")
    monkeypatch.setitem(ENGINES, "onnxruntime", _missing(ENGINES["onnxruntime"]))
    assert list_engines(available=True) == ["torch"]
    with pytest.raises(AepError, match="pip install"):
        get_engine("onnxruntime")


def _missing(spec):
    from dataclasses import replace

    return replace(spec, requires="a_package_that_is_not_installed")


def test_best_static_and_measured_speed_ups(models, inputs):
    x, _ = inputs
    model = models["eenet"]
    base = best_static(model, x[:48], 16, rounds=1, threads=1)
    assert set(base.samples_per_s) == {"torch", "onnxruntime"}
    assert base.best_per_s == max(base.samples_per_s.values()) and base.engine in base.describe()
    assert (base.predictions["torch"] == base.predictions["onnxruntime"]).mean() > 0.95
    rule = make_rule("eenet_confidence", model_exits(model), thresholds=0.5)
    m = measure_engines(model, rule, x[:48], 16, ("torch", "onnxruntime"), rounds=1)
    assert set(m) == {"torch", "onnxruntime"}
    for engine, r in m.items():
        assert r.engine == engine and r.static is m["torch"].static
        assert r.without_exits_per_s == max(r.static.samples_per_s.values())
        assert r.speed_up == pytest.approx(r.early_exit_per_s / r.without_exits_per_s)
        assert r.static_engine == r.static.engine
    with pytest.raises(ConfigError, match="Unknown inference engine"):
        measure_engines(model, rule, x[:8], 8, ("nope",), rounds=1)


def _run_slice(capsys, *args: str) -> str:
    """`run` of the shipped checkpoint on the first 96 images of the Fashion-MNIST slice, with `args` added: its
    standard output."""
    argv = ["run", str(CKPT), "--dataset", "fashion-mnist-slice", "--limit", "96", "--threads", "1"]
    assert main([*argv, "--thresholds", "0.9", "--batch-size", "32", *args]) == 0
    return capsys.readouterr().out


def test_cli_run_on_the_onnxruntime_engine_names_the_best_static_engine(capsys):
    on_ort = json.loads(_run_slice(capsys, "--engine", "onnxruntime", "--compare", "--json"))
    on_torch = json.loads(_run_slice(capsys, "--json"))
    assert on_ort["engine"] == "onnxruntime" and on_torch["engine"] == "torch"
    assert on_ort["samples"] == 96 and on_ort["samples_per_s"] > 0
    assert np.abs(np.subtract(on_ort["exit_distribution"], on_torch["exit_distribution"])).max() <= 1 / 96 + 1e-9
    w = on_ort["without_exits"]
    assert set(w["engines"]) == {"torch", "onnxruntime"}
    assert w["engine"] == max(w["engines"], key=lambda e: w["engines"][e]["samples_per_s"])
    assert w["samples_per_s"] == pytest.approx(w["engines"][w["engine"]]["samples_per_s"])
    assert on_ort["speed_up"] == pytest.approx(on_ort["samples_per_s"] / w["samples_per_s"])
    text = _run_slice(capsys, "--engine", "onnxruntime", "--compare")
    assert "engine onnxruntime" in text
    assert re.search(r"best static engine \((torch|onnxruntime)\)", text)
    assert re.search(r"speed-up [0-9.]+x over (torch|onnxruntime) without exits", text)


def test_sessions_are_set_for_latency(models, inputs, cache):
    import onnxruntime as ort

    x, _ = inputs
    model = models["aep"]
    runner = OnnxEarlyExitRunner(model, _any_rule(model), threads=2, cache_dir=cache)
    runner.prepare(tuple(x.shape[1:]))
    for session in runner.sessions:
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
        assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    torch.set_num_threads(3)
    try:
        assert OnnxStaticRunner(model, cache_dir=cache).threads == 3  # default: torch's count, as the torch engine
    finally:
        torch.set_num_threads(1)
    with pytest.raises(ConfigError, match="threads"):
        OnnxEarlyExitRunner(model, _any_rule(model), threads=0)
