"""The runner that really stops gives the same exits and predictions as the replayed policy."""
import numpy as np
import pytest
import torch

from aep_core.data import load_dataset
from aep_core.errors import AepError
from aep_core.models import ModelSpec, build_model
from aep_core.exits.rules import make_rule
from aep_core.exits.runtime import EarlyExitRunner, record_outputs, run_without_exits

WEIGHTS = [0.1, 0.15, 0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def inputs():
    torch.set_num_threads(1)
    b = load_dataset("fashion-mnist-slice")
    x, y = b.test[list(range(120))]
    return x, y.numpy()


def _model(head):
    torch.manual_seed(0)
    m = build_model(ModelSpec(backbone_config={"widths": [8, 16, 32]}, head=head))
    # Non-trivial BatchNorm statistics so the exits disagree and are not all equally unsure.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.05, 0.3)
    return m.eval()


@pytest.fixture(scope="module", params=["aep", "eenet"])
def model(request):
    return _model(request.param)


def _rules(rec, model):
    """A setting of every runtime rule, placed at quantiles of the replay's own scores so exits are spread."""
    e = model.num_exits
    rules = {}
    for name, extra in [("max_probability", {}), ("entropy", {}), ("aep_ensemble", {"weights": WEIGHTS})]:
        neutral = make_rule(name, e, model.has_confidence, thresholds=0.5, **extra)
        score, _ = neutral.scores(rec.logits, rec.confidences)
        q = 0.4 if name != "entropy" else 0.3
        t = [float(np.quantile(score[k], 1 - q if name != "entropy" else q)) for k in range(e - 1)]
        rules[name] = make_rule(name, e, model.has_confidence, thresholds=t, **extra)
    rules["patience"] = make_rule("patience", e, t=2)
    rules["fixed_exit"] = make_rule("fixed_exit", e, k=2)
    if model.has_confidence:
        t = [float(np.quantile(rec.confidences[k], 0.6)) for k in range(e - 1)]
        rules["eenet_confidence"] = make_rule("eenet_confidence", e, True, thresholds=t)
    return rules


@pytest.mark.parametrize("optimize", [True, False], ids=["prepared", "as-is"])
@pytest.mark.parametrize("batch_size", [1, 16])
def test_runner_agrees_with_replay_for_every_rule(model, inputs, batch_size, optimize):
    x, y = inputs
    # Replay inputs computed at the runner's batch size and preparation, so both see the same numbers.
    rec = record_outputs(model, x, y, [1, 2, 3, 4, 5], 5, batch_size=batch_size, optimize=optimize)
    rules = _rules(rec, model)
    assert len(rules) == (6 if model.has_confidence else 5)
    for name, rule in rules.items():
        replay = rule.replay(rec)
        run = EarlyExitRunner(model, rule, optimize=optimize).run(x, batch_size)
        assert np.array_equal(run.exit_index, replay.exit_index), name
        assert np.array_equal(run.prediction, replay.prediction), name
        assert run.seconds > 0 and run.batch_size == batch_size
        if name in ("max_probability", "entropy", "aep_ensemble"):
            assert len(np.unique(replay.exit_index)) >= 3, name  # the test exercises removal from the batch


def test_runner_result_has_replay_metrics(inputs):
    x, y = inputs
    m = _model("aep")
    rule = make_rule("fixed_exit", m.num_exits, k=1)
    res = EarlyExitRunner(m, rule).run(x, 32).as_rule_result(y, [10, 20, 30, 40, 50], 50, 10)
    assert res.exit_distribution[1] == 1.0 and res.macs_ratio == pytest.approx(0.4)


def test_runner_really_skips_later_blocks(inputs):
    x, _ = inputs
    m = _model("aep")
    calls = [0] * len(m.backbone.blocks)
    for i, block in enumerate(m.backbone.blocks):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.__setitem__(i, calls[i] + len(inp[0])))
    EarlyExitRunner(m, make_rule("fixed_exit", m.num_exits, k=1)).run(x[:10], 4)
    assert calls[: m.exit_blocks[1] + 1] == [10] * (m.exit_blocks[1] + 1)
    assert sum(calls[m.exit_blocks[1] + 1:]) == 0


def test_network_without_exits_predicts_with_the_final_exit(inputs):
    x, y = inputs
    m = _model("aep")
    pred, seconds = run_without_exits(m, x, 32)
    rec = record_outputs(m, x, y, [1, 2, 3, 4, 5], 5, batch_size=32)
    assert np.array_equal(pred, rec.logits[-1].argmax(-1)) and seconds > 0


def test_bad_runner_inputs(inputs):
    x, _ = inputs
    m = _model("aep")
    with pytest.raises(AepError, match="Batch size"):
        EarlyExitRunner(m, make_rule("patience", m.num_exits, t=2)).run(x, 0)
    with pytest.raises(AepError, match="exits"):
        EarlyExitRunner(m, make_rule("patience", 3, t=2))
    with pytest.raises(AepError, match="confidence"):
        EarlyExitRunner(m, make_rule("eenet_confidence", m.num_exits, True))
    with pytest.raises(AepError, match="shape"):
        EarlyExitRunner(m, make_rule("patience", m.num_exits, t=2)).run(x[0], 1)


def test_runner_with_temperatures_agrees_with_replay_on_the_scaled_record(model, inputs):
    from aep_core.analysis.calibration import scale_record

    x, y = inputs
    temps = [0.5, 0.8, 1.3, 2.0, 1.0]
    rec = scale_record(record_outputs(model, x, y, [1, 2, 3, 4, 5], 5, batch_size=16), temps)
    for name, rule in _rules(rec, model).items():
        replay = rule.replay(rec)
        run = EarlyExitRunner(model, rule, temperatures=temps).run(x, 16)
        assert np.array_equal(run.exit_index, replay.exit_index), name
        assert np.array_equal(run.prediction, replay.prediction), name
    with pytest.raises(AepError, match="temperatures"):
        EarlyExitRunner(model, make_rule("patience", model.num_exits, t=2), temperatures=[1.0, 2.0])


def test_measure_speedup_times_both_on_the_same_inputs(inputs):
    from aep_core.exits.runtime import measure_speedup

    x, y = inputs
    m = _model("aep")
    rule = make_rule("fixed_exit", m.num_exits, k=1)
    r = measure_speedup(m, rule, x[:40], batch_size=8, rounds=1)
    rec = record_outputs(m, x[:40], y[:40], [1, 2, 3, 4, 5], 5, batch_size=8)
    assert r.samples == 40 and r.batch_size == 8 and r.early_exit_per_s > 0 and r.without_exits_per_s > 0
    assert (r.exit_index == 1).all() and np.array_equal(r.prediction, rec.logits[1].argmax(-1))
    assert np.array_equal(r.prediction_without_exits, rec.logits[-1].argmax(-1))
    assert r.speed_up == pytest.approx(r.early_exit_per_s / r.without_exits_per_s)
    with pytest.raises(AepError, match="rounds"):
        measure_speedup(m, rule, x[:8], 8, rounds=0)
    before = torch.get_num_threads()
    measure_speedup(m, rule, x[:8], 8, rounds=1, threads=1)
    assert torch.get_num_threads() == before  # the thread setting is the measurement's only
