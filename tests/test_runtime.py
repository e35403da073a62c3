"""The runner that really stops gives the same exits and predictions as the replayed rule, for every
deployable rule of the registry."""

import numpy as np
import pytest
import torch

from aep_core.data import load_dataset
from aep_core.errors import AepError
from aep_core.exits.rules import ExitRule, ModelExits, RuleSpec, get_rule, list_rules, make_rule
from aep_core.exits.runtime import EarlyExitRunner, record_outputs, run_without_exits
from aep_core.models import ModelSpec, build_model

WEIGHTS = (0.1, 0.15, 0.2, 0.25, 0.3)  # trained ensemble weights of the test models, far from the default
HEADS = ("aep", "eenet")  # exits without and with a learned confidence branch
CUM_MACS, FULL_MACS = [1, 2, 3, 4, 5], 5


@pytest.fixture(scope="module")
def inputs():
    torch.set_num_threads(1)
    b = load_dataset("fashion-mnist-slice")
    x, y = b.test[list(range(120))]
    return x, y.numpy()


def untrained_model(head: str) -> torch.nn.Module:
    """A small untrained model whose exits disagree and are not all equally unsure."""
    torch.manual_seed(0)
    m = build_model(ModelSpec(backbone_config={"widths": [8, 16, 32]}, head=head))
    for mod in m.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.05, 0.3)
    return m.eval()


def model_exits(model) -> ModelExits:
    return ModelExits.of_model(model, WEIGHTS)


def _available(name: str, head: str) -> bool:
    return get_rule(name).available_for(ModelExits(len(WEIGHTS), has_confidence=head == "eenet"))


CASES = [
    pytest.param(name, head, id=f"{name}-{head}")
    for name in list_rules(deployable=True)
    for head in HEADS
    if _available(name, head)
]


@pytest.fixture(scope="module")
def models():
    return {head: untrained_model(head) for head in HEADS}


def test_every_deployable_rule_runs_on_some_model(models):
    assert {c.values[0] for c in CASES} == set(list_rules(deployable=True))
    assert all(models[head].has_confidence == (head == "eenet") for head in HEADS)  # as CASES assumes


@pytest.fixture(scope="module")
def recorded(models, inputs):
    """(head, batch size, optimize) -> the model's outputs on the inputs, computed as the runner computes them."""
    cache = {}

    def get(head: str, batch_size: int, optimize: bool):
        key = (head, batch_size, optimize)
        if key not in cache:
            x, y = inputs
            cache[key] = record_outputs(
                models[head], x, y, CUM_MACS, FULL_MACS, batch_size=batch_size, optimize=optimize
            )
        return cache[key]

    return get


def spread_rule(name: str, rec, exits: ModelExits, leave: float = 0.35) -> ExitRule:
    """The rule at a setting that spreads the samples over the exits: thresholds at the quantile of the replay's
    own scores that lets about `leave` of the samples still running stop at each exit; the middle value of a
    whole-number setting."""
    spec: RuleSpec = get_rule(name)
    if spec.has_thresholds:
        score, _ = make_rule(name, exits).scores(rec.logits, rec.confidences)
        q = leave if spec.lower_is_confident else 1 - leave
        return make_rule(name, exits, thresholds=[float(np.quantile(score[k], q)) for k in range(exits.num_exits - 1)])
    if spec.setting is None:
        return make_rule(name, exits)
    values = spec.setting.values(exits.num_exits)
    return make_rule(name, exits, **{spec.setting.keyword: values[len(values) // 2]})


@pytest.mark.parametrize("optimize", [True, False], ids=["prepared", "as-is"])
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("name,head", CASES)
def test_runner_agrees_with_replay_for_every_rule(name, head, models, recorded, inputs, batch_size, optimize):
    x, _ = inputs
    model = models[head]
    # Replay inputs computed at the runner's batch size and preparation, so both see the same numbers.
    rec = recorded(head, batch_size, optimize)
    rule = spread_rule(name, rec, model_exits(model))
    replay = rule.replay(rec)
    run = EarlyExitRunner(model, rule, optimize=optimize).run(x, batch_size)
    assert np.array_equal(run.exit_index, replay.exit_index)
    assert np.array_equal(run.prediction, replay.prediction)
    assert run.seconds > 0 and run.batch_size == batch_size
    if get_rule(name).has_thresholds:
        assert len(np.unique(replay.exit_index)) >= 3  # the test exercises removal from the batch


def test_runner_uses_the_models_trained_ensemble_weights(models, recorded, inputs):
    """An ensemble rule made for the model without weights given runs with its trained weights, which here
    decide differently from uniform ones."""
    x, _ = inputs
    model, rec = models["aep"], recorded("aep", 16, True)
    for name in [n for n in list_rules(deployable=True) if get_rule(n).uses_ensemble_weights]:
        rule = spread_rule(name, rec, model_exits(model))
        assert rule.settings["weights"] == list(WEIGHTS)
        uniform = make_rule(name, ModelExits.of_model(model, None), thresholds=rule.thresholds)
        run = EarlyExitRunner(model, rule).run(x, 16)
        assert np.array_equal(run.exit_index, rule.replay(rec).exit_index)
        assert not np.array_equal(run.exit_index, uniform.replay(rec).exit_index)


def test_runner_result_has_replay_metrics(inputs):
    x, y = inputs
    m = untrained_model("aep")
    rule = make_rule("fixed_exit", model_exits(m), k=1)
    res = EarlyExitRunner(m, rule).run(x, 32).as_rule_result(y, [10, 20, 30, 40, 50], 50, 10, rule.name)
    assert res.exit_distribution[1] == 1.0 and res.macs_ratio == pytest.approx(0.4) and res.rule == rule.name


def test_runner_really_skips_later_blocks(inputs):
    x, _ = inputs
    m = untrained_model("aep")
    calls = [0] * len(m.backbone.blocks)
    for i, block in enumerate(m.backbone.blocks):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.__setitem__(i, calls[i] + len(inp[0])))
    EarlyExitRunner(m, make_rule("fixed_exit", model_exits(m), k=1)).run(x[:10], 4)
    assert calls[: m.exit_blocks[1] + 1] == [10] * (m.exit_blocks[1] + 1)
    assert sum(calls[m.exit_blocks[1] + 1 :]) == 0


def test_network_without_exits_predicts_with_the_final_exit(inputs):
    x, y = inputs
    m = untrained_model("aep")
    pred, seconds = run_without_exits(m, x, 32)
    rec = record_outputs(m, x, y, [1, 2, 3, 4, 5], 5, batch_size=32)
    assert np.array_equal(pred, rec.logits[-1].argmax(-1)) and seconds > 0


def test_bad_runner_inputs(inputs):
    x, _ = inputs
    m = untrained_model("aep")
    with pytest.raises(AepError, match="Batch size"):
        EarlyExitRunner(m, make_rule("patience", model_exits(m), t=2)).run(x, 0)
    with pytest.raises(AepError, match="exits"):
        EarlyExitRunner(m, make_rule("patience", ModelExits(3), t=2))
    for name in [n for n in list_rules(deployable=True) if get_rule(n).needs_confidence]:
        with pytest.raises(AepError, match="confidence"):
            EarlyExitRunner(m, make_rule(name, ModelExits(m.num_exits, has_confidence=True)))
    with pytest.raises(AepError, match="shape"):
        EarlyExitRunner(m, make_rule("patience", model_exits(m), t=2)).run(x[0], 1)


@pytest.mark.parametrize("name,head", CASES)
def test_runner_with_temperatures_agrees_with_replay_on_the_scaled_record(name, head, models, recorded, inputs):
    from aep_core.analysis.calibration import scale_record

    x, _ = inputs
    model = models[head]
    temps = [0.5, 0.8, 1.3, 2.0, 1.0]
    rec = scale_record(recorded(head, 16, True), temps)
    rule = spread_rule(name, rec, model_exits(model))
    replay = rule.replay(rec)
    run = EarlyExitRunner(model, rule, temperatures=temps).run(x, 16)
    assert np.array_equal(run.exit_index, replay.exit_index)
    assert np.array_equal(run.prediction, replay.prediction)
    with pytest.raises(AepError, match="temperatures"):
        EarlyExitRunner(model, rule, temperatures=[1.0, 2.0])


def test_measure_speedup_times_both_on_the_same_inputs(inputs):
    from aep_core.exits.runtime import measure_speedup

    x, y = inputs
    m = untrained_model("aep")
    rule = make_rule("fixed_exit", model_exits(m), k=1)
    r = measure_speedup(m, rule, x[:40], batch_size=8, rounds=1)
    rec = record_outputs(m, x[:40], y[:40], [1, 2, 3, 4, 5], 5, batch_size=8)
    assert r.samples == 40 and r.batch_size == 8 and r.early_exit_per_s > 0 and r.without_exits_per_s > 0
    assert (r.exit_index == 1).all() and np.array_equal(r.prediction, rec.logits[1].argmax(-1))
    assert np.array_equal(r.prediction_without_exits, rec.logits[-1].argmax(-1))
    assert r.speed_up == pytest.approx(r.early_exit_per_s / r.without_exits_per_s)
    with pytest.raises(AepError, match="rounds"):
        measure_speedup(m, rule, x[:8], 8, rounds=0)
    from aep_core.threads import default_threads

    measure_speedup(m, rule, x[:8], 8, rounds=1, threads=1)
    assert torch.get_num_threads() == default_threads()  # the thread setting is the measurement's only
