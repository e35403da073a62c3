"""Exit rules: the registry's specs checked for every rule, each rule against hand-worked examples, their
metrics, bad settings, the stepwise scorers against the vectorised scores, and a rule registered from
outside picked up by the CLI, the replay and the runtime with no other edit."""

import json
import math

import numpy as np
import pytest
import torch

from aep_core.errors import AepError, ConfigError
from aep_core.evaluation import ExitRecord, save_evaluation
from aep_core.exits.rules import (
    RULES,
    THRESHOLD,
    ExitRule,
    ModelExits,
    RuleSpec,
    as_thresholds,
    get_rule,
    list_rules,
    make_rule,
    oracle,
    register_rule,
    replay_rule,
    resolve_ensemble_weights,
    softmax,
)


def _logits_from_probs(p):
    return np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


def hand_record(with_conf=True):
    """3 exits, 4 samples, 3 classes; probabilities chosen so each rule's outcome can be worked by hand."""
    probs = [
        # exit 0
        [[0.90, 0.05, 0.05], [0.40, 0.35, 0.25], [0.50, 0.30, 0.20], [0.34, 0.33, 0.33]],
        # exit 1
        [[0.80, 0.10, 0.10], [0.20, 0.70, 0.10], [0.60, 0.30, 0.10], [0.10, 0.85, 0.05]],
        # exit 2 (final)
        [[0.70, 0.20, 0.10], [0.10, 0.80, 0.10], [0.25, 0.15, 0.60], [0.05, 0.05, 0.90]],
    ]
    conf = np.array([[0.9, 0.2, 0.6, 0.1], [0.5, 0.7, 0.3, 0.2], [0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    info = {"ensemble_weights": [1.0, 1.0, 2.0], "class_names": ["a", "b", "c"]}
    return ExitRecord(
        _logits_from_probs(probs),
        np.array([0, 1, 0, 2]),
        np.array([10, 30, 100]),
        90,
        conf if with_conf else None,
        info,
    )


def random_record(exits=4, n=200, seed=1, weights=(0.1, 0.3, 0.2, 0.4)):
    """Random logits and confidences of `exits` exits on n samples, with trained ensemble weights."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(exits, n, 10)) * 3).astype(np.float32)
    conf = rng.uniform(size=(exits, n)).astype(np.float32)
    return ExitRecord(
        logits, rng.integers(0, 10, n), np.arange(1, exits + 1), exits, conf, {"ensemble_weights": list(weights)}
    )


# ---- the registry: every spec is coherent -------------------------------------------------------------


@pytest.mark.parametrize("name", list_rules())
def test_every_spec_is_coherent(name):
    spec = get_rule(name)
    assert spec.name == name and spec.label and spec.help and spec.score_name
    assert spec.deployable == (not spec.reads_labels)
    if spec.setting is not None:
        s = spec.setting
        assert s.keyword and s.label and s.help
        for exits in (2, 3, 5):
            lo, hi = s.bounds(exits)
            assert lo <= s.default <= hi, (exits, lo, s.default, hi)
            if s.integer:
                assert float(s.default).is_integer() and s.values(exits)[0] == lo and s.values(exits)[-1] == hi
    if spec.has_thresholds:
        assert spec.setting is not None and spec.setting.per_exit


@pytest.mark.parametrize("name", list_rules(deployable=True))
def test_make_rule_with_only_the_default_works(name):
    spec = get_rule(name)
    model = ModelExits(4, has_confidence=True, ensemble_weights=(0.1, 0.2, 0.3, 0.4))
    rule = make_rule(name, model)
    assert rule.name == name and rule.lower_is_confident == spec.lower_is_confident
    assert len(rule.thresholds) == model.num_exits - 1
    if spec.setting is not None:
        assert rule.settings[spec.setting.keyword] in (spec.setting.default, [spec.setting.default] * 3)
    if spec.uses_ensemble_weights:
        assert rule.settings["weights"] == [0.1, 0.2, 0.3, 0.4]  # the model's trained weights
    r = replay_rule(random_record(), name)
    assert r.rule == name and r.exit_index.shape == (200,)


@pytest.mark.parametrize("name", [n for n in list_rules(deployable=True) if get_rule(n).needs_confidence])
def test_a_confidence_rule_is_refused_for_a_model_without_confidence_branches(name):
    without = ModelExits(4, has_confidence=False)
    assert name not in list_rules(model=without) and name in list_rules(model=ModelExits(4, True))
    with pytest.raises(ConfigError, match="confidence branch"):
        make_rule(name, without)
    with pytest.raises(ConfigError, match="confidence branch"):
        replay_rule(hand_record(with_conf=False), name)


@pytest.mark.parametrize("name", [n for n in list_rules() if get_rule(n).reads_labels])
def test_a_rule_that_reads_labels_is_refused_by_make_rule_and_replays_as_the_reference(name):
    assert name not in list_rules(deployable=True)
    with pytest.raises(ConfigError, match="labels"):
        make_rule(name, ModelExits(3))
    r = replay_rule(hand_record(), name)
    assert r.rule == name and np.array_equal(r.exit_index, oracle(hand_record()).exit_index)


def test_list_rules_filters():
    assert list_rules() == list(RULES)
    assert all(get_rule(n).has_thresholds for n in list_rules(thresholds=True))
    assert set(list_rules(thresholds=True)) < set(list_rules(deployable=True)) < set(list_rules())
    with pytest.raises(ConfigError, match="Choose one of"):
        get_rule("nonsense")


def test_ensemble_weights_are_the_given_ones_else_the_models_else_uniform():
    trained = ModelExits(3, ensemble_weights=(1.0, 1.0, 2.0))
    assert resolve_ensemble_weights([1, 0, 0], trained).tolist() == [1.0, 0.0, 0.0]
    assert resolve_ensemble_weights(None, trained).tolist() == [1.0, 1.0, 2.0]
    assert resolve_ensemble_weights(None, ModelExits(4)).tolist() == [0.25] * 4
    assert ModelExits.of_record(hand_record()).ensemble_weights == (1.0, 1.0, 2.0)
    with pytest.raises(ConfigError, match="3 exits"):
        resolve_ensemble_weights([1, 1], trained)
    with pytest.raises(ConfigError, match="positive first"):
        resolve_ensemble_weights([0, 1, 1], trained)


# ---- each rule, by hand -------------------------------------------------------------------------------


def test_max_probability_global_and_per_exit():
    rec = hand_record()
    r = replay_rule(rec, "max_probability", thresholds=0.75)
    # sample 0: 0.90 at exit 0; 1: 0.70 < 0.75 at exit 1 -> final; 2: never -> final; 3: 0.85 at exit 1
    assert r.exit_index.tolist() == [0, 2, 2, 1]
    assert r.prediction.tolist() == [0, 1, 2, 1]
    r = replay_rule(rec, "max_probability", thresholds=[0.95, 0.55])
    assert r.exit_index.tolist() == [1, 1, 1, 1]
    assert r.prediction.tolist() == [0, 1, 0, 1]


def test_metrics_of_a_result():
    r = replay_rule(hand_record(), "max_probability", thresholds=0.75)
    # exits [0, 2, 2, 1], predictions [0, 1, 2, 1], labels [0, 1, 0, 2]
    assert r.accuracy == pytest.approx(0.5)
    assert r.expected_macs == pytest.approx((10 + 100 + 100 + 30) / 4)
    assert r.macs_ratio == pytest.approx(60 / 90)
    assert r.exit_distribution.tolist() == [0.25, 0.25, 0.5]
    acc = r.per_exit_accuracy
    assert acc[0] == 1.0 and acc[1] == 0.0 and acc[2] == 0.5
    assert r.per_class_mean_exit.tolist() == [1.0, 2.0, 1.0]  # class 0: exits 0 and 2; class 1: 2; class 2: 1
    s = r.summary()
    assert s["accuracy"] == pytest.approx(0.5) and s["per_exit_accuracy"][1] == 0.0
    assert s["rule"] == "max_probability" and s["settings"] == {"thresholds": [0.75, 0.75]}


def test_per_exit_accuracy_is_nan_where_nobody_stops():
    r = replay_rule(hand_record(), "fixed_exit", k=1)
    assert math.isnan(r.per_exit_accuracy[0]) and math.isnan(r.per_exit_accuracy[2])
    assert r.exit_distribution.tolist() == [0.0, 1.0, 0.0]
    assert r.prediction.tolist() == [0, 1, 0, 1]


def test_entropy_is_normalised():
    rec = hand_record()
    h = lambda p: -sum(v * math.log(v) for v in p) / math.log(3)  # noqa: E731
    t = (h([0.90, 0.05, 0.05]) + h([0.80, 0.10, 0.10])) / 2  # between the two: only the first passes
    assert replay_rule(rec, "entropy", thresholds=t).exit_index[0] == 0
    assert replay_rule(rec, "entropy", thresholds=1.0).exit_index.tolist() == [0, 0, 0, 0]  # entropy <= 1 holds
    assert replay_rule(rec, "entropy", thresholds=0.0).exit_index.tolist() == [2, 2, 2, 2]
    assert h([0.34, 0.33, 0.33]) > 0.99


def test_eenet_confidence():
    rec = hand_record()
    assert replay_rule(rec, "eenet_confidence").exit_index.tolist() == [0, 1, 0, 2]  # default 0.5, >= 0.5 stops
    assert replay_rule(rec, "eenet_confidence", thresholds=[0.95, 0.6]).exit_index.tolist() == [2, 1, 2, 2]
    with pytest.raises(AepError, match="confidence branch"):
        replay_rule(hand_record(with_conf=False), "eenet_confidence")


def test_aep_ensemble_uses_the_weighted_average_of_exits_so_far():
    rec = hand_record()  # weights 1, 1, 2
    # sample 1 at exit 1: (0.40+0.20)/2, (0.35+0.70)/2, ... = 0.30, 0.525, 0.175 -> predicts 1, confidence 0.525
    r = replay_rule(rec, "aep_ensemble", thresholds=0.52)
    assert r.exit_index[1] == 1 and r.prediction[1] == 1
    # sample 2 at exit 2: (0.5+0.6+2*0.25)/4 = 0.4, (0.3+0.3+0.3)/4 = 0.225, (0.2+0.1+1.2)/4 = 0.375 -> class 0
    r = replay_rule(rec, "aep_ensemble", thresholds=1.0)
    assert r.exit_index.tolist() == [2, 2, 2, 2]
    assert r.prediction[2] == 0  # the final exit alone would say 2
    # user weights that ignore all but exit 0 keep exit 0's prediction everywhere
    r = replay_rule(rec, "aep_ensemble", thresholds=1.0, weights=[1.0, 0.0, 0.0])
    assert r.prediction.tolist() == [0, 0, 0, 0]


def test_patience():
    rec = hand_record()  # predictions per exit: s0 0,0,0  s1 0,1,1  s2 0,0,2  s3 0,1,2
    assert replay_rule(rec, "patience", t=2).exit_index.tolist() == [1, 2, 1, 2]
    assert replay_rule(rec, "patience", t=2).prediction.tolist() == [0, 1, 0, 2]
    assert replay_rule(rec, "patience", t=1).exit_index.tolist() == [0, 0, 0, 0]
    assert replay_rule(rec, "patience", t=3).exit_index.tolist() == [2, 2, 2, 2]


def test_oracle_stops_at_the_first_right_exit():
    rec = hand_record()  # right at: s0 exit 0; s1 exit 1; s2 exit 0; s3 exit 2
    r = oracle(rec)
    assert r.exit_index.tolist() == [0, 1, 0, 2]
    assert r.accuracy == 1.0
    rec.labels = np.array([1, 1, 1, 1])  # s0 and s2 are never right: they go to the last exit
    assert oracle(rec).exit_index.tolist() == [2, 1, 2, 1]


@pytest.mark.parametrize(
    "name,settings,match",
    [
        ("max_probability", {"thresholds": 1.5}, r"\[0, 1\]"),
        ("entropy", {"thresholds": -0.1}, r"\[0, 1\]"),
        ("max_probability", {"thresholds": [0.5, 0.5, 0.5]}, "2 early exits"),
        ("max_probability", {"thresholds": float("nan")}, r"\[0, 1\]"),
        ("patience", {"t": 0}, "1..3"),
        ("fixed_exit", {"k": 3}, "0..2"),
        ("aep_ensemble", {"thresholds": 0.5, "weights": [1, 1]}, "3 exits"),
        ("nonsense", {}, "Choose one of"),
        ("max_probability", {"tresholds": 0.5}, "Bad settings"),
        ("oracle", {"thresholds": 0.5}, "no settings"),
    ],
)
def test_bad_settings_are_clear_errors(name, settings, match):
    with pytest.raises(AepError, match=match):
        replay_rule(hand_record(), name, **settings)


@pytest.mark.parametrize("name", list_rules())
def test_empty_record_is_a_clear_error(name):
    rec = hand_record()
    empty = ExitRecord(rec.logits[:, :0], rec.labels[:0], rec.cum_macs, rec.full_macs, rec.confidences[:, :0], rec.info)
    with pytest.raises(AepError, match="no samples"):
        replay_rule(empty, name)


def test_replay_matches_a_per_sample_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 300, 10)).astype(np.float32) * 3
    rec = ExitRecord(
        logits, rng.integers(0, 10, 300), np.array([1, 2, 3, 4]), 4, info={"ensemble_weights": [1, 2, 3, 4]}
    )
    probs = rec.probs()
    t = [0.6, 0.5, 0.4]
    r = replay_rule(rec, "max_probability", thresholds=t)
    for i in range(300):
        k = next((k for k in range(3) if probs[k, i].max() >= t[k]), 3)
        assert r.exit_index[i] == k and r.prediction[i] == probs[k, i].argmax()
    r = replay_rule(rec, "aep_ensemble", thresholds=0.5)
    w = np.array([1, 2, 3, 4], dtype=np.float64)
    for i in range(300):
        for k in range(4):
            ens = (w[: k + 1, None] * probs[: k + 1, i]).sum(0) / w[: k + 1].sum()
            if k == 3 or ens.max() >= 0.5:
                break
        assert r.exit_index[i] == k and r.prediction[i] == ens.argmax()


# ---- the runtime's forms of every deployable rule --------------------------------------------------------


@pytest.mark.parametrize("name", list_rules(deployable=True))
def test_stepwise_scorer_gives_the_vectorised_scores_bit_for_bit(name):
    """The runtime's exit-by-exit scores, with samples dropped along the way, equal the replay's."""
    rec = random_record()
    rule = make_rule(name, ModelExits.of_record(rec))
    score, pred = rule.scores(rec.logits, rec.confidences)
    rng = np.random.default_rng(2)
    scorer = rule.scorer()
    alive = np.arange(rec.num_samples)
    for k in range(rec.num_exits):
        s, p = scorer.step(rec.logits[k, alive], rec.confidences[k, alive])
        assert np.array_equal(s, score[k, alive]) and np.array_equal(p, pred[k, alive]), (name, k)
        keep = rng.uniform(size=len(alive)) < 0.7  # drop about 30% of the samples at every exit
        alive = alive[keep]
        scorer.keep(keep)


@pytest.mark.parametrize("name", list_rules(deployable=True))
def test_decide_single_agrees_with_the_replay(name):
    rec = random_record(n=40)
    rule = make_rule(name, ModelExits.of_record(rec))
    replay = rule.replay(rec)
    score, _ = rule.scores(rec.logits, rec.confidences)
    for i in range(rec.num_samples):
        k, scores = rule.decide_single(rec.logits[:, i], rec.confidences[:, i])
        assert k == replay.exit_index[i] and np.array_equal(scores, score[:, i]), (name, i)


# ---- a rule registered from outside --------------------------------------------------------------------


def _margin_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    top2 = np.sort(softmax(logits), -1)[..., -2:]  # (e, n, 2)
    return top2[..., 1] - top2[..., 0], logits.argmax(-1)


@pytest.fixture
def margin_rule():
    """A throw-away threshold rule (top-two probability margin >= t), removed from the registry afterwards."""
    name = "test_margin"
    spec = RuleSpec(
        name,
        "Top-two margin >= t",
        "Stop when the two most likely classes are at least t apart.",
        "top-two probability margin",
        False,
        THRESHOLD,
    )

    @register_rule(spec)
    def _build(model: ModelExits, thresholds: float) -> ExitRule:
        t = as_thresholds(thresholds, model.num_exits, 0.0, 1.0, name)
        return ExitRule(name, t, _margin_scores, settings={"thresholds": t.tolist()}, local=True)

    try:
        yield name
    finally:
        RULES.pop(name, None)


def test_a_registered_rule_is_picked_up_with_no_other_edit(margin_rule, tmp_path, capsys):
    from aep_core.cli.main import build_parser, main
    from aep_core.exits.runtime import EarlyExitRunner, record_outputs
    from aep_core.exits.solvers import pareto_sweep
    from aep_core.models import ModelSpec, build_model

    assert margin_rule in list_rules(deployable=True, thresholds=True)
    parser = build_parser()
    for command in ("policy", "sweep", "solve", "run", "deploy"):  # --rule's choices come from the registry
        assert parser.parse_args([command, "model.pt", "--rule", margin_rule]).rule == margin_rule
    with pytest.raises(SystemExit):  # the flag refuses a name the registry does not hold
        parser.parse_args(["policy", "model.pt", "--rule", margin_rule + "_unregistered"])

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone_config={"widths": [8, 16, 32]})).eval()
    x = torch.randn(40, 1, 28, 28)
    rec = record_outputs(
        model, x, np.zeros(40, dtype=np.int64), list(range(1, model.num_exits + 1)), model.num_exits, batch_size=8
    )
    score, _ = make_rule(margin_rule, ModelExits.of_record(rec)).scores(rec.logits)
    t = [float(np.quantile(score[k], 0.6)) for k in range(rec.num_exits - 1)]
    replay = replay_rule(rec, margin_rule, thresholds=t)
    assert replay.rule == margin_rule and len(np.unique(replay.exit_index)) >= 3
    run = EarlyExitRunner(model, make_rule(margin_rule, ModelExits.of_record(rec), thresholds=t)).run(x, 8)
    assert np.array_equal(run.exit_index, replay.exit_index) and np.array_equal(run.prediction, replay.prediction)
    assert pareto_sweep(rec, margin_rule, points=10).pareto.any()

    path = tmp_path / "outputs.npz"
    save_evaluation(path, rec)
    capsys.readouterr()
    assert main(["policy", str(path), "--rule", margin_rule, "--thresholds", ",".join(map(str, t)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rule"] == margin_rule and out["exit_distribution"] == replay.exit_distribution.tolist()
