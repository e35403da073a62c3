"""Certified thresholds: the exact binomial tail, the guarantee's validity in simulation (where the plain
'cheapest that passes on validation' choice breaks it), and clear errors."""

import math

import numpy as np
import pytest

from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord
from aep_core.exits.certify import binomial_cdf, certification_grid, certify_max_drop
from aep_core.exits.rules import decide
from aep_core.exits.solvers import score_record


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.1), (3, 10, 0.3), (7, 20, 0.5), (2, 50, 0.01), (10, 10, 0.4)])
def test_binomial_cdf_is_exact(k, n, p):
    direct = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-15)


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


def _damage(rec: ExitRecord, t: float) -> float:
    _, score, correct = score_record(rec, "max_probability")
    idx = decide(score, np.full(rec.num_exits - 1, t))
    return float((correct[-1] & ~correct[idx, np.arange(rec.num_samples)]).mean())


def _subset(rec: ExitRecord, idx: np.ndarray) -> ExitRecord:
    return ExitRecord(rec.logits[:, idx], rec.labels[idx], rec.cum_macs, rec.full_macs)


def test_the_certified_bound_holds_in_simulation_and_the_plain_choice_breaks_it():
    pop = _population(200_000)
    rng = np.random.default_rng(1)
    eps, confidence, trials, n = 0.03, 0.8, 120, 1500
    grid = certification_grid(False)
    _, pop_score, pop_correct = score_record(pop, "max_probability")
    pop_damage = {}

    def true_damage(t: float) -> float:
        if t not in pop_damage:
            idx = decide(pop_score, np.full(2, t))
            pop_damage[t] = float((pop_correct[-1] & ~pop_correct[idx, np.arange(pop.num_samples)]).mean())
        return pop_damage[t]

    certified_bad = plain_bad = 0
    for _ in range(trials):
        val = _subset(pop, rng.integers(0, pop.num_samples, n))
        t = certify_max_drop(val, "max_probability", 100 * eps, confidence).settings["thresholds"][0]
        certified_bad += true_damage(t) > eps
        # the plain choice: the cheapest grid threshold whose damage on validation is within the bound
        plain = min((g for g in grid if _damage(val, g) <= eps), default=1.0)
        plain_bad += true_damage(plain) > eps
    allowed = (1 - confidence) * trials + 3 * math.sqrt(trials * confidence * (1 - confidence))
    assert certified_bad <= allowed, (certified_bad, allowed)
    assert plain_bad > allowed, (plain_bad, allowed)  # the test can tell a choice without the guarantee


def test_certified_setting_is_global_and_reported_on_both_splits():
    pop = _population(6000, seed=2)
    val, test = _subset(pop, np.arange(3000)), _subset(pop, np.arange(3000, 6000))
    sol = certify_max_drop(val, "entropy", 3.0, 0.9, test)
    t = sol.settings["thresholds"]
    assert len(t) == 2 and t[0] == t[1] and sol.test is not None and "certified" in sol.goal
    assert sol.val.macs_ratio < 1.0  # some samples leave early


@pytest.mark.parametrize(
    "args,msg",
    [
        (("patience", 0.5, 0.9), "threshold rule"),
        (("max_probability", 0.5, 1.0), "confidence"),
        (("max_probability", 0.0, 0.9), "drop"),
        (("max_probability", 0.01, 0.99), "smallest bound"),  # 300 samples cannot certify 0.01 points
    ],
)
def test_bad_requests_are_clear_errors(args, msg):
    with pytest.raises(AepError, match=msg):
        certify_max_drop(_subset(_population(300, seed=3), np.arange(300)), *args)
