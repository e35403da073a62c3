"""Certified thresholds: the exact binomial tail and its inverse, the guarantee's validity in simulation (where
the plain 'cheapest that passes on validation' choice breaks it), the reference the drop is measured against,
the certified MACs bound, budget goals, replayable settings for every threshold rule, and clear errors."""

import itertools
import json
import math
import time

import numpy as np
import pytest

from aep_core.errors import AepError, ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import (
    FAMILIES,
    REFERENCES,
    Certified,
    binomial_cdf,
    certification_grid,
    certify,
    certify_max_drop,
    damage_upper_bound,
    drop_against,
    max_damage_count,
    reference_correct,
)
from aep_core.exits.rules import decide, get_rule, list_rules, replay_rule
from aep_core.exits.solvers import score_record
from aep_core.paths import shipped_models_dir

AEP_MODEL = "aep_hybrid"  # the shipped model with five exits along one backbone and an AEP ensemble

THRESHOLD_RULES = list_rules(thresholds=True)


def _shipped(model: str) -> tuple[ExitRecord, ExitRecord]:
    return tuple(load_evaluation(shipped_models_dir() / f"{model}.{split}.npz") for split in ("val", "test"))


def _model_for(name: str) -> str:
    """A shipped model the rule can run on: an EENet for a rule that reads confidence branches."""
    return "eenet_l05" if get_rule(name).needs_confidence else AEP_MODEL


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.1), (3, 10, 0.3), (7, 20, 0.5), (2, 50, 0.01), (10, 10, 0.4)])
def test_binomial_cdf_is_exact(k, n, p):
    direct = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("n,eps,delta", [(3334, 0.005, 0.1), (5000, 0.005, 0.1), (500, 0.05, 0.05), (20000, 0.01, 0.2)])
def test_max_damage_count_is_the_largest_count_the_tail_certifies(n, eps, delta):
    c = max_damage_count(n, eps, delta)
    assert c >= 0
    assert binomial_cdf(c, n, eps) <= delta < binomial_cdf(c + 1, n, eps)


def test_no_count_certifies_a_bound_below_what_no_damage_certifies():
    assert max_damage_count(100, 0.001, 0.1) == -1  # 0.999 ** 100 > 0.1
    assert damage_upper_bound(0, 100, 0.1) == pytest.approx(1 - 0.1 ** (1 / 100))


@pytest.mark.parametrize("count,n,delta", [(0, 3000, 0.1), (12, 3334, 0.1), (70, 3334, 0.05)])
def test_damage_upper_bound_is_the_least_rate_the_count_certifies(count, n, delta):
    p = damage_upper_bound(count, n, delta)
    assert binomial_cdf(count, n, p) <= delta < binomial_cdf(count, n, p * (1 - 1e-3))
    assert max_damage_count(n, p * (1 + 1e-6), delta) >= count > max_damage_count(n, p * (1 - 1e-3), delta)


def test_grid_runs_from_the_conservative_end():
    assert certification_grid(False)[0] == 1.0 and certification_grid(False)[-1] == 0.0
    assert certification_grid(True)[0] == 0.0 and certification_grid(True)[-1] == 1.0


def _population(n: int, seed: int = 0) -> ExitRecord:
    """3 exits, 4 classes; each sample has a difficulty, and later exits see more of its class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    ease = rng.uniform(0.0, 1.0, n)
    logits = np.empty((3, n, 4), dtype=np.float32)
    for k, strength in enumerate([1.2, 2.2, 3.5]):
        z = rng.normal(size=(n, 4))
        z[np.arange(n), y] += strength * (0.3 + ease)
        logits[k] = z
    return ExitRecord(logits, y, np.array([30, 60, 100]), 100)


def _subset(rec: ExitRecord, idx: np.ndarray) -> ExitRecord:
    return ExitRecord(rec.logits[:, idx], rec.labels[idx], rec.cum_macs, rec.full_macs)


class _Damage:
    """The damage rate (final exit right, the rule wrong) of max_probability thresholds on a record."""

    def __init__(self, rec: ExitRecord) -> None:
        _, self.score, correct = score_record(rec, "max_probability")
        self.damage = correct[-1][None] & ~correct  # (exits, n)
        self.cols = np.arange(rec.num_samples)

    def __call__(self, thresholds) -> float:
        idx = decide(self.score, np.broadcast_to(thresholds, (self.score.shape[0] - 1,)))
        return float(self.damage[idx, self.cols].mean())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_certified_bound_holds_in_simulation_and_the_plain_choice_breaks_it(family):
    pop = _population(200_000)
    rng = np.random.default_rng(1)
    eps, confidence, trials, n = 0.03, 0.8, 120, 1500
    true_damage = _Damage(pop)
    grid = certification_grid(False)
    certified_bad = plain_bad = 0
    for _ in range(trials):
        val = _subset(pop, rng.integers(0, pop.num_samples, n))
        sol = certify(val, "max_probability", max_drop_points=100 * eps, confidence=confidence, family=family)
        certified_bad += true_damage(sol.settings["thresholds"]) > eps
        # the plain choice: the cheapest grid threshold whose damage on validation is within the bound
        on_val = _Damage(val)
        plain = min((g for g in grid if on_val(g) <= eps), default=1.0)
        plain_bad += true_damage(plain) > eps
    allowed = (1 - confidence) * trials + 3 * math.sqrt(trials * confidence * (1 - confidence))
    assert certified_bad <= allowed, (certified_bad, allowed)
    assert plain_bad > allowed, (plain_bad, allowed)  # the test can tell a choice without the guarantee


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", THRESHOLD_RULES)
def test_every_threshold_rule_certifies_replayable_settings(name, family):
    val, test = _shipped(_model_for(name))
    sol = certify(val, name, max_drop_points=0.5, family=family, test=test)
    assert isinstance(sol, Certified) and sol.rule == name and "certified" in sol.goal
    t = sol.settings["thresholds"]
    assert len(t) == val.num_exits - 1 and all(0.0 <= v <= 1.0 for v in t)
    if family == "global":
        assert len(set(t)) == 1
    for rec, result in ((val, sol.val), (test, sol.test)):
        again = replay_rule(rec, name, **sol.settings)
        assert np.array_equal(again.exit_index, result.exit_index)
        assert np.array_equal(again.prediction, result.prediction)
    shaping = 0 if family == "global" else int(val.num_samples / 3)
    assert sol.calibration_samples == val.num_samples - shaping
    assert sol.drop_bound_points == 0.5 and sol.reference == "final" and sol.family == family
    assert sol.macs_bound >= sol.val.macs_ratio
    for split, rec, result in (("val", val, sol.val), ("test", test, sol.test)):
        assert sol.drop_points(split) == pytest.approx(drop_against(result, rec, name, "final"))
        assert sol.drop_points(split) <= 0.5  # the shipped splits keep the promise
    summary = json.loads(json.dumps(sol.summary()))  # plain types only
    assert summary["certified"] is True and summary["macs_bound"] == sol.macs_bound
    assert summary["family"] == family and summary["drop_bound_points"] == 0.5 and summary["confidence"] == 0.9
    assert summary["test"]["drop_points"] == pytest.approx(sol.drop_points("test"))


@pytest.mark.parametrize("name", ["max_probability", "entropy"])
def test_the_global_certificate_is_the_last_grid_threshold_before_the_first_failure(name):
    val, _ = _shipped(AEP_MODEL)
    rule, score, correct = score_record(val, name)
    final = val.logits[-1].argmax(-1) == val.labels
    cols, chosen = np.arange(val.num_samples), None
    for t in certification_grid(rule.lower_is_confident):  # threshold by threshold, as written in the docstring
        idx = decide(score, np.full(val.num_exits - 1, t), rule.lower_is_confident)
        if binomial_cdf(int((final & ~correct[idx, cols]).sum()), val.num_samples, 0.005) > 0.1:
            break
        chosen = float(t)
    sol = certify(val, name, max_drop_points=0.5, family="global")
    assert sol.settings["thresholds"] == [chosen] * (val.num_exits - 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_per_exit_choice_passes_the_binomial_test_on_the_samples_kept_for_testing(seed):
    val, _ = _shipped(AEP_MODEL)
    n = val.num_samples
    testing = np.random.default_rng(seed).permutation(n)[int(n / 3) :]
    sol = certify(val, "max_probability", max_drop_points=0.5, seed=seed)
    damaged = (val.logits[-1].argmax(-1) == val.labels) & ~sol.val.correct
    assert 0 < damaged[testing].sum() <= max_damage_count(len(testing), 0.005, 0.1)
    assert sol.calibration_samples == len(testing)
    other = certify(val, "max_probability", max_drop_points=0.5, seed=1 - seed)
    assert other.settings != sol.settings  # the seed picks the split, and so the shaped thresholds


def test_a_certification_is_fast():
    val, _ = _shipped(AEP_MODEL)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        certify(val, "max_probability", max_drop_points=0.5)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.2, times


def test_the_drop_is_bounded_against_the_final_exit():
    val, test = _shipped("aep_uniform")
    for name in ("max_probability", "entropy"):
        sol = certify(val, name, max_drop_points=0.5, test=test)
        assert drop_against(sol.test, test, name, "final") <= 0.5
    # aep_ensemble's full-depth prediction (the ensemble of every exit) is itself more than half a point below
    # the final exit here, so no setting of it can promise 0.5 points against the final exit
    full_depth = replay_rule(val, "aep_ensemble", thresholds=1.0)
    assert np.all(full_depth.exit_index == val.num_exits - 1)
    assert drop_against(full_depth, val, "aep_ensemble", "final") > 0.5
    with pytest.raises(ConfigError, match=r"against the final exit.*reference='ensemble'"):
        certify(val, "aep_ensemble", max_drop_points=0.5, test=test)
    # against its own full depth it certifies, and that promise is no bound against the final exit
    own = certify(val, "aep_ensemble", max_drop_points=0.5, reference="ensemble", test=test)
    assert own.drop_points("test") <= 0.5 < drop_against(own.test, test, "aep_ensemble", "final")


def test_the_reference_is_the_final_exit_or_the_rules_own_full_depth():
    val, _ = _shipped("aep_uniform")
    final = val.logits[-1].argmax(-1) == val.labels
    for name in THRESHOLD_RULES:
        if not get_rule(name).needs_confidence:
            assert np.array_equal(reference_correct(val, name, "final"), final)
    assert np.array_equal(reference_correct(val, "max_probability", "ensemble"), final)
    ensemble = reference_correct(val, "aep_ensemble", "ensemble")
    assert ensemble.mean() == pytest.approx(val.ensemble_accuracy(val.info["ensemble_weights"])[-1])
    assert not np.array_equal(ensemble, final)
    uniform = reference_correct(val, "aep_ensemble", "ensemble", weights=[1.0] + [0.0] * (val.num_exits - 1))
    assert np.array_equal(uniform, val.logits[0].argmax(-1) == val.labels)  # the weights given are used


@pytest.mark.parametrize("name", ["max_probability", "entropy", "aep_ensemble"])
def test_per_exit_thresholds_cost_no_more_than_a_global_one_on_the_aep_model(name):
    val, test = _shipped(AEP_MODEL)
    per_exit, shared = (certify(val, name, max_drop_points=0.5, family=f, test=test) for f in FAMILIES)
    assert per_exit.val.macs_ratio <= shared.val.macs_ratio
    assert per_exit.test.macs_ratio <= shared.test.macs_ratio


@pytest.mark.parametrize("goal", [{"max_drop_points": 0.5}, {"max_macs_ratio": 0.55}])
def test_the_global_macs_bound_is_the_dkw_bound_of_the_chosen_setting(goal):
    val, _ = _shipped(AEP_MODEL)
    sol = certify(val, "max_probability", family="global", confidence=0.8, **goal)
    cost = val.cum_macs / val.full_macs
    past = np.array([(sol.val.exit_index > k).mean() for k in range(val.num_exits - 1)])
    eps_n = math.sqrt(math.log((val.num_exits - 1) / 0.2) / (2 * val.num_samples))
    expected = cost[0] + np.sum(np.diff(cost) * np.minimum(1.0, past + eps_n))
    assert sol.macs_bound == pytest.approx(expected, rel=1e-12)
    assert sol.macs_bound > sol.val.macs_ratio


@pytest.mark.parametrize("family", FAMILIES)
def test_a_budget_picks_the_least_aggressive_setting_it_certifies(family):
    val, test = _shipped(AEP_MODEL)
    budgets = [0.8, 0.6, 0.5, 0.45]
    sols = [certify(val, "entropy", max_macs_ratio=b, family=family, test=test) for b in budgets]
    for b, sol in zip(budgets, sols, strict=True):
        assert sol.macs_bound <= b and sol.drop_bound_points is None and "MACs ratio" in sol.goal
        assert sol.macs_bound >= sol.val.macs_ratio
    # nested: a smaller budget only moves samples to earlier exits
    for looser, tighter in itertools.pairwise(sols):
        assert np.all(tighter.val.exit_index <= looser.val.exit_index)
        assert tighter.macs_bound <= looser.macs_bound
    # the first that fits: the bound sits just under the budget, not far below it
    assert sols[1].macs_bound > 0.55
    # a budget equal to a drop certificate's bound picks that setting or a less aggressive one
    drop_goal = certify(val, "entropy", max_drop_points=0.5, family=family)
    same = certify(val, "entropy", max_macs_ratio=drop_goal.macs_bound, family=family)
    assert np.all(same.val.exit_index >= drop_goal.val.exit_index) and same.macs_bound <= drop_goal.macs_bound


def test_an_unreachable_budget_names_the_cheapest_certifiable_bound():
    val, _ = _shipped(AEP_MODEL)
    with pytest.raises(ConfigError, match=r"cheapest bound this family certifies is 0\.\d+"):
        certify(val, "max_probability", max_macs_ratio=0.2)  # exit 0 alone costs 0.26 of the network


def test_certify_max_drop_is_certify_with_a_drop_goal():
    val, test = _shipped(AEP_MODEL)
    old = certify_max_drop(val, "aep_ensemble", 0.5, 0.9, test)
    new = certify(val, "aep_ensemble", max_drop_points=0.5, test=test)
    assert isinstance(old, Certified) and old.settings == new.settings and old.macs_bound == new.macs_bound


def _single_exit() -> ExitRecord:
    rec = _population(300, seed=3)
    return ExitRecord(rec.logits[-1:], rec.labels, rec.cum_macs[-1:], rec.full_macs)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"name": "patience", "max_drop_points": 0.5}, "threshold rule.*max_probability"),
        ({"name": "max_probability", "max_drop_points": 0.5, "confidence": 1.0}, "confidence"),
        ({"name": "max_probability", "max_drop_points": 0.0}, "between 0 and 100"),
        ({"name": "max_probability", "max_drop_points": 100.0}, "between 0 and 100"),
        ({"name": "max_probability", "max_macs_ratio": 0.0}, "positive fraction"),
        ({"name": "max_probability"}, "exactly one goal"),
        ({"name": "max_probability", "max_drop_points": 0.5, "max_macs_ratio": 0.5}, "exactly one goal"),
        ({"name": "max_probability", "max_drop_points": 0.5, "reference": "oracle"}, "final, ensemble"),
        ({"name": "max_probability", "max_drop_points": 0.5, "family": "layered"}, "per_exit, global"),
        ({"name": "max_probability", "max_drop_points": 0.5, "seed": -1}, "seed"),
        ({"name": "eenet_confidence", "max_drop_points": 0.5}, "confidence branch"),
        ({"name": "no_such_rule", "max_drop_points": 0.5}, "max_probability"),
        # 300 samples cannot certify 0.01 points: the message says what they can
        ({"name": "max_probability", "max_drop_points": 0.01}, r"smallest.*\d\.\d\d points.*more validation samples"),
        ({"name": "max_probability", "max_macs_ratio": 0.35}, "cheapest bound"),
    ],
)
def test_bad_requests_are_clear_errors(kwargs, msg):
    with pytest.raises(AepError, match=msg):
        certify(_subset(_population(300, seed=3), np.arange(300)), **kwargs)


def test_a_single_exit_model_has_nothing_to_certify():
    with pytest.raises(ConfigError, match="single exit"):
        certify(_single_exit(), "max_probability", max_drop_points=5.0)


def test_reference_choices_are_checked_everywhere():
    val, _ = _shipped(AEP_MODEL)
    assert REFERENCES == ("final", "ensemble")
    with pytest.raises(ConfigError, match="final, ensemble"):
        reference_correct(val, "max_probability", "teacher")


def test_a_split_without_an_outcome_is_a_clear_error():
    val, _ = _shipped(AEP_MODEL)
    sol = certify(val, "max_probability", max_drop_points=0.5)
    assert "test" not in sol.summary()
    with pytest.raises(ConfigError, match="has one on val"):
        sol.drop_points("test")
