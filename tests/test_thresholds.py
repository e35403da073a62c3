"""Pareto sweep and the solver for a MACs budget or an accuracy floor."""

import numpy as np
import pytest

from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import ModelExits, get_rule, list_rules, replay_rule
from aep_core.exits.solvers import (
    MacsBudget,
    MinAccuracy,
    accuracy_floor,
    pareto_front,
    pareto_sweep,
    setting_grid,
    solve,
    threshold_grid,
)


def synthetic_record(n=2000, seed=0, conf=False):
    """4 exits getting more accurate with depth; a sample's margin (and so its confidence) is larger
    when the exit is right, as in a trained network."""
    rng = np.random.default_rng(seed)
    e, c = 4, 10
    labels = rng.integers(0, c, n)
    hardness = rng.uniform(0, 1, n)
    logits = rng.normal(0, 1, (e, n, c)).astype(np.float32)
    for k, skill in enumerate([0.35, 0.55, 0.75, 0.9]):
        right = hardness < skill + rng.normal(0, 0.05, n)
        target = np.where(right, labels, (labels + rng.integers(1, c, n)) % c)
        logits[k, np.arange(n), target] += np.where(right, 4.0, 1.5) * rng.uniform(0.5, 1.5, n)
    confidences = rng.uniform(0, 1, (e, n)).astype(np.float32) if conf else None
    return ExitRecord(
        logits, labels, np.array([20, 45, 75, 100]), 100, confidences, {"ensemble_weights": [0.1, 0.2, 0.3, 0.4]}
    )


def test_pareto_front_by_hand():
    macs = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 1.5])
    acc = np.array([0.5, 0.7, 0.6, 0.7, 0.9, 0.4])
    assert pareto_front(macs, acc).tolist() == [True, True, False, False, True, False]


@pytest.mark.parametrize("name", list_rules())
def test_sweep_points_match_single_replays(name):
    rec = synthetic_record(conf=True)
    s = pareto_sweep(rec, name, points=30)
    if not get_rule(name).has_thresholds:
        assert s.settings == setting_grid(name, rec.num_exits)  # every value of its setting
    assert len(s.settings) == len(s.accuracy) == len(s.macs_ratio) == len(s.pareto) and s.pareto.any()
    for i in (0, len(s.settings) // 2, len(s.settings) - 1):
        r = replay_rule(rec, name, **s.settings[i])
        assert r.accuracy == pytest.approx(s.accuracy[i]) and r.macs_ratio == pytest.approx(s.macs_ratio[i])
    # no point off the front beats a point on it
    for i in np.flatnonzero(s.pareto):
        assert not np.any((s.macs_ratio <= s.macs_ratio[i]) & (s.accuracy > s.accuracy[i]))


def test_threshold_grid_is_sorted_and_in_range():
    rec = synthetic_record()
    score = rec.probs().max(-1)
    g = threshold_grid(score, 100)
    assert g[0] == 0.0 and g[-1] == 1.0 and np.all(np.diff(g) > 0) and len(g) <= 100


THRESHOLD_RULES = list_rules(thresholds=True, model=ModelExits(4, has_confidence=False))


@pytest.mark.parametrize("name", THRESHOLD_RULES)
@pytest.mark.parametrize("budget", [0.4, 0.6])
def test_budget_solver_meets_its_budget_and_beats_global_thresholds(name, budget):
    val, test = synthetic_record(seed=1), synthetic_record(seed=2)
    sol = solve(val, name, MacsBudget(budget), test)
    assert sol.val.macs_ratio <= budget + 1e-9
    assert len(sol.settings["thresholds"]) == val.num_exits - 1
    sweep = pareto_sweep(val, name, points=64)
    best_global = sweep.accuracy[sweep.macs_ratio <= budget].max()
    assert sol.val.accuracy >= best_global - 1e-12
    assert sol.val.accuracy > val.exit_accuracy()[0]  # better than stopping everyone at the first exit
    again = replay_rule(test, name, **sol.settings)  # the test figures are the same settings replayed on test
    assert sol.test is not None and again.accuracy == sol.test.accuracy and again.macs_ratio == sol.test.macs_ratio


def test_accuracy_floor_solver_minimises_cost_above_the_floor():
    val, test = synthetic_record(seed=3), synthetic_record(seed=4)
    floor = accuracy_floor(val, 0.5)
    assert floor == pytest.approx(val.exit_accuracy()[-1] - 0.005)
    sol = solve(val, "max_probability", MinAccuracy(floor), test)
    assert sol.val.accuracy >= floor - 1e-12
    assert sol.val.macs_ratio < 1.0
    sweep = pareto_sweep(val, "max_probability", points=64)
    ok = sweep.accuracy >= floor
    if ok.any():
        assert sol.val.macs_ratio <= sweep.macs_ratio[ok].min() + 1e-12


def test_non_threshold_rules_are_solved_by_enumeration():
    val = synthetic_record(seed=5)
    sol = solve(val, "fixed_exit", MacsBudget(0.5))
    assert sol.settings == {"k": 1}  # exits cost 20%, 45%, 75%, 100%: exit 1 is the deepest within 50%
    sol = solve(val, "patience", MacsBudget(0.99))
    assert sol.val.macs_ratio <= 0.99


def test_impossible_goals_say_what_is_reachable():
    val = synthetic_record(seed=6)
    with pytest.raises(AepError, match=r"cheapest reachable cost is 20\.0%"):
        solve(val, "max_probability", MacsBudget(0.1))
    with pytest.raises(AepError, match="best found"):
        solve(val, "entropy", MinAccuracy(0.999))
    with pytest.raises(AepError, match="positive"):
        solve(val, "max_probability", MacsBudget(-1))
    with pytest.raises(AepError, match=r"\[0, 1\]"):
        pareto_sweep(val, "entropy", grid=[0.5, 2.0])


@pytest.mark.parametrize("name", [n for n in list_rules() if get_rule(n).reads_labels])
def test_a_rule_that_reads_labels_has_nothing_to_solve(name):
    with pytest.raises(AepError, match="no settings"):
        solve(synthetic_record(seed=6), name, MacsBudget(0.5))


CONFIDENCE_RULES = [n for n in list_rules(deployable=True) if get_rule(n).needs_confidence]


@pytest.mark.parametrize("name", CONFIDENCE_RULES)
def test_a_confidence_rule_is_swept_and_solved_only_with_confidences(name):
    with pytest.raises(AepError, match="confidence branch"):
        solve(synthetic_record(seed=6), name, MacsBudget(0.5))
    val = synthetic_record(seed=7, conf=True)
    s = pareto_sweep(val, name, points=20)
    assert s.pareto.any()
    sol = solve(val, name, MacsBudget(0.5))
    assert sol.val.macs_ratio <= 0.5


def test_solver_is_fast_enough_for_a_button():
    import time

    val = synthetic_record(n=5000, seed=8)
    t0 = time.perf_counter()
    solve(val, "aep_ensemble", MacsBudget(0.5))
    assert time.perf_counter() - t0 < 5.0  # generous: the target is well under a few seconds on 5000 x 4 exits


def test_solution_thresholds_replay_to_the_same_result():
    val = synthetic_record(seed=9)
    sol = solve(val, "max_probability", MacsBudget(0.5))
    r = replay_rule(val, "max_probability", thresholds=sol.settings["thresholds"])
    assert np.array_equal(r.exit_index, sol.val.exit_index)


def test_a_single_exit_model_has_nothing_to_sweep_or_solve():
    import numpy as np

    from aep_core.errors import ConfigError
    from aep_core.evaluation import ExitRecord
    from aep_core.exits.solvers import MacsBudget, MinAccuracy, pareto_sweep, solve

    rec = ExitRecord(np.zeros((1, 4, 3), dtype=np.float32), np.zeros(4, dtype=np.int64), np.array([10]), 10)
    for call in (
        lambda: pareto_sweep(rec, "max_probability"),
        lambda: solve(rec, "entropy", MacsBudget(0.5)),
        lambda: solve(rec, "max_probability", MinAccuracy(0.5)),
    ):
        with pytest.raises(ConfigError, match="single exit"):
            call()
