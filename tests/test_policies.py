"""Exit policies against hand-worked examples, their metrics, and bad settings."""
import math

import numpy as np
import pytest

from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import (POLICIES, POLICY_INFO, aep_ensemble, replay_rule, eenet_confidence, entropy,
                               fixed_exit, make_rule, max_probability, oracle, patience)


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
    return ExitRecord(_logits_from_probs(probs), np.array([0, 1, 0, 2]), np.array([10, 30, 100]), 90,
                      conf if with_conf else None, {"ensemble_weights": [1.0, 1.0, 2.0], "class_names": ["a", "b", "c"]})


def test_max_probability_global_and_per_exit():
    rec = hand_record()
    r = max_probability(rec, 0.75)
    # sample 0: 0.90 at exit 0; 1: 0.70 < 0.75 at exit 1 -> final; 2: never -> final; 3: 0.85 at exit 1
    assert r.exit_index.tolist() == [0, 2, 2, 1]
    assert r.prediction.tolist() == [0, 1, 2, 1]
    r = max_probability(rec, [0.95, 0.55])
    assert r.exit_index.tolist() == [1, 1, 1, 1]
    assert r.prediction.tolist() == [0, 1, 0, 1]


def test_metrics_of_a_result():
    r = max_probability(hand_record(), 0.75)  # exits [0, 2, 2, 1], predictions [0, 1, 2, 1], labels [0, 1, 0, 2]
    assert r.accuracy == pytest.approx(0.5)
    assert r.expected_macs == pytest.approx((10 + 100 + 100 + 30) / 4)
    assert r.macs_ratio == pytest.approx(60 / 90)
    assert r.exit_distribution.tolist() == [0.25, 0.25, 0.5]
    acc = r.per_exit_accuracy
    assert acc[0] == 1.0 and acc[1] == 0.0 and acc[2] == 0.5
    assert r.per_class_mean_exit.tolist() == [1.0, 2.0, 1.0]  # class 0: exits 0 and 2; class 1: 2; class 2: 1
    s = r.summary()
    assert s["accuracy"] == pytest.approx(0.5) and s["per_exit_accuracy"][1] == 0.0


def test_per_exit_accuracy_is_nan_where_nobody_stops():
    r = fixed_exit(hand_record(), 1)
    assert math.isnan(r.per_exit_accuracy[0]) and math.isnan(r.per_exit_accuracy[2])
    assert r.exit_distribution.tolist() == [0.0, 1.0, 0.0]
    assert r.prediction.tolist() == [0, 1, 0, 1]


def test_entropy_is_normalised():
    rec = hand_record()
    h = lambda p: -sum(v * math.log(v) for v in p) / math.log(3)  # noqa: E731
    t = (h([0.90, 0.05, 0.05]) + h([0.80, 0.10, 0.10])) / 2  # between the two: only the first passes
    r = entropy(rec, t)
    assert r.exit_index[0] == 0
    assert entropy(rec, 1.0).exit_index.tolist() == [0, 0, 0, 0]  # entropy <= 1 always holds
    assert entropy(rec, 0.0).exit_index.tolist() == [2, 2, 2, 2]
    assert h([0.34, 0.33, 0.33]) > 0.99


def test_eenet_confidence():
    rec = hand_record()
    assert eenet_confidence(rec).exit_index.tolist() == [0, 1, 0, 2]  # default 0.5, >= 0.5 stops
    assert eenet_confidence(rec, [0.95, 0.6]).exit_index.tolist() == [2, 1, 2, 2]
    with pytest.raises(AepError, match="confidence branch"):
        eenet_confidence(hand_record(with_conf=False))


def test_aep_ensemble_uses_the_weighted_average_of_exits_so_far():
    rec = hand_record()  # weights 1, 1, 2
    # sample 1 at exit 1: (0.40+0.20)/2, (0.35+0.70)/2, ... = 0.30, 0.525, 0.175 -> predicts 1, confidence 0.525
    r = aep_ensemble(rec, 0.52)
    assert r.exit_index[1] == 1 and r.prediction[1] == 1
    # sample 2 at exit 2: (0.5+0.6+2*0.25)/4 = 0.4, (0.3+0.3+0.3)/4 = 0.225, (0.2+0.1+1.2)/4 = 0.375 -> class 0
    r = aep_ensemble(rec, 1.0)
    assert r.exit_index.tolist() == [2, 2, 2, 2]
    assert r.prediction[2] == 0  # the final exit alone would say 2
    # user weights that ignore all but exit 0 keep exit 0's prediction everywhere
    r = aep_ensemble(rec, 1.0, weights=[1.0, 0.0, 0.0])
    assert r.prediction.tolist() == [0, 0, 0, 0]


def test_patience():
    rec = hand_record()  # predictions per exit: s0 0,0,0  s1 0,1,1  s2 0,0,2  s3 0,1,2
    assert patience(rec, 2).exit_index.tolist() == [1, 2, 1, 2]
    assert patience(rec, 2).prediction.tolist() == [0, 1, 0, 2]
    assert patience(rec, 1).exit_index.tolist() == [0, 0, 0, 0]
    assert patience(rec, 3).exit_index.tolist() == [2, 2, 2, 2]


def test_oracle_stops_at_the_first_right_exit():
    rec = hand_record()  # right at: s0 exit 0; s1 exit 1; s2 exit 0; s3 exit 2
    r = oracle(rec)
    assert r.exit_index.tolist() == [0, 1, 0, 2]
    assert r.accuracy == 1.0
    rec.labels = np.array([1, 1, 1, 1])  # s0 and s2 are never right: they go to the last exit
    assert oracle(rec).exit_index.tolist() == [2, 1, 2, 1]


def test_registry_and_apply_policy():
    rec = hand_record()
    assert set(POLICIES) == set(POLICY_INFO)
    assert replay_rule(rec, "max_probability", thresholds=0.75).exit_index.tolist() == [0, 2, 2, 1]
    assert replay_rule(rec, "fixed_exit", k=2).exit_index.tolist() == [2, 2, 2, 2]
    for name, info in POLICY_INFO.items():
        settings = {} if info.setting is None else {info.setting: info.default}
        r = replay_rule(rec, name, **settings)
        assert r.exit_index.shape == (4,) and r.policy == name


@pytest.mark.parametrize("name,settings,match", [
    ("max_probability", {"thresholds": 1.5}, r"\[0, 1\]"),
    ("entropy", {"thresholds": -0.1}, r"\[0, 1\]"),
    ("max_probability", {"thresholds": [0.5, 0.5, 0.5]}, "2 early exits"),
    ("max_probability", {"thresholds": float("nan")}, r"\[0, 1\]"),
    ("patience", {"t": 0}, "1..3"),
    ("fixed_exit", {"k": 3}, "0..2"),
    ("aep_ensemble", {"thresholds": 0.5, "weights": [1, 1]}, "3 exits"),
    ("nonsense", {}, "Choose one of"),
    ("max_probability", {"tresholds": 0.5}, "Bad settings"),
])
def test_bad_settings_are_clear_errors(name, settings, match):
    with pytest.raises(AepError, match=match):
        replay_rule(hand_record(), name, **settings)


def test_empty_record_is_a_clear_error():
    rec = hand_record()
    empty = ExitRecord(rec.logits[:, :0], rec.labels[:0], rec.cum_macs, rec.full_macs)
    with pytest.raises(AepError, match="no samples"):
        max_probability(empty, 0.5)


def test_replay_matches_a_per_sample_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 300, 10)).astype(np.float32) * 3
    rec = ExitRecord(logits, rng.integers(0, 10, 300), np.array([1, 2, 3, 4]), 4, info={"ensemble_weights": [1, 2, 3, 4]})
    probs = rec.probs()
    t = [0.6, 0.5, 0.4]
    r = max_probability(rec, t)
    for i in range(300):
        k = next((k for k in range(3) if probs[k, i].max() >= t[k]), 3)
        assert r.exit_index[i] == k and r.prediction[i] == probs[k, i].argmax()
    r = aep_ensemble(rec, 0.5)
    w = np.array([1, 2, 3, 4], dtype=np.float64)
    for i in range(300):
        for k in range(4):
            ens = (w[: k + 1, None] * probs[: k + 1, i]).sum(0) / w[: k + 1].sum()
            if k == 3 or ens.max() >= 0.5:
                break
        assert r.exit_index[i] == k and r.prediction[i] == ens.argmax()


def test_make_rule_refuses_the_oracle():
    with pytest.raises(AepError, match="labels"):
        make_rule("oracle", 3)


@pytest.mark.parametrize("name,settings", [
    ("max_probability", {"thresholds": 0.5}), ("entropy", {"thresholds": 0.4}),
    ("aep_ensemble", {"thresholds": 0.5, "weights": [0.1, 0.3, 0.2, 0.4]}), ("patience", {"t": 2}),
    ("fixed_exit", {"k": 1}), ("eenet_confidence", {"thresholds": 0.5}),
])
def test_stepwise_scorer_gives_the_vectorised_scores_bit_for_bit(name, settings):
    """The runtime's exit-by-exit scores, with samples dropped along the way, equal the replay's."""
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(4, 200, 10)) * 3).astype(np.float32)
    conf = rng.uniform(size=(4, 200)).astype(np.float32)
    rule = make_rule(name, 4, has_confidence=True, **settings)
    score, pred = rule.scores(logits, conf)
    scorer = rule.scorer()
    alive = np.arange(200)
    for k in range(4):
        s, p = scorer.step(logits[k, alive], conf[k, alive])
        assert np.array_equal(s, score[k, alive]) and np.array_equal(p, pred[k, alive]), (name, k)
        keep = rng.uniform(size=len(alive)) < 0.7  # drop about 30% of the samples at every exit
        alive = alive[keep]
        scorer.keep(keep)
