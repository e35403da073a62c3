"""Choosing a rule's settings: a Pareto sweep (accuracy against expected MACs over a grid) and a
solver for per-exit thresholds under a MACs budget or an accuracy floor.

Thresholds are chosen on one record (the validation split) and can be reported on another (test).
The solver is a coordinate search over per-exit quantile grids, started from the best global
threshold; scores are computed once, so each candidate costs one vectorised decision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import (
    ModelExits,
    RuleResult,
    decide,
    get_rule,
    make_rule,
    oracle,
    replay_rule,
    resolve_ensemble_weights,
)


def pareto_front(macs: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """(p,) bool: points no other point beats (no more MACs and no less accuracy, one of them strictly)."""
    macs, accuracy = np.asarray(macs, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    order = np.lexsort((-accuracy, macs))  # by cost, then best accuracy first
    front = np.zeros(len(macs), dtype=bool)
    best = -np.inf
    for i in order:  # p points, not samples
        if accuracy[i] > best:
            front[i] = True
            best = accuracy[i]
    return front


@dataclass
class Sweep:
    """Accuracy and MACs ratio of one rule over a grid of settings, with the Pareto points marked."""

    rule: str
    settings: list[dict[str, Any]]
    accuracy: np.ndarray  # (p,)
    macs_ratio: np.ndarray  # (p,)
    pareto: np.ndarray  # (p,) bool

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per point: its setting, accuracy, MACs ratio and whether it is on the front."""
        return [
            {**s, "accuracy": float(a), "macs_ratio": float(m), "pareto": bool(p)}
            for s, a, m, p in zip(self.settings, self.accuracy, self.macs_ratio, self.pareto, strict=True)
        ]


def rule_settings(rec: ExitRecord, name: str, weights: Sequence[float] | None) -> dict[str, Any]:
    """The rule's settings besides its thresholds: the resolved ensemble weights of a rule that uses them."""
    if get_rule(name).uses_ensemble_weights:
        return {"weights": resolve_ensemble_weights(weights, ModelExits.of_record(rec)).tolist()}
    return {}


def score_record(rec: ExitRecord, name: str, weights: Sequence[float] | None = None):
    """The rule at a neutral threshold, its (exits, n) scores and predictions, and (exits, n) correctness."""
    if rec.num_samples == 0:
        raise ConfigError("The evaluation record holds no samples: there is nothing to sweep.")
    if not get_rule(name).has_thresholds:
        raise ConfigError(f"{name} has no thresholds to score.")
    rule = make_rule(name, ModelExits.of_record(rec), thresholds=0.5, **rule_settings(rec, name, weights))
    score, pred = rule.scores(rec.logits, rec.confidences)
    return rule, score, pred == rec.labels[None]


def threshold_grid(score: np.ndarray, points: int) -> np.ndarray:
    """`points` thresholds in [0, 1] spread over the quantiles of the early exits' scores."""
    q = np.quantile(score[:-1].ravel(), np.linspace(0.0, 1.0, max(points - 2, 1)))
    return np.unique(np.clip(np.concatenate([[0.0, 1.0], q]), 0.0, 1.0))


def checked_thresholds(grid: Sequence[float], what: str) -> np.ndarray:
    """A threshold grid given by the user as an array; ConfigError unless it is a non-empty list of numbers
    in [0, 1]."""
    ts = np.asarray(grid, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0 or np.isnan(ts).any() or (ts < 0).any() or (ts > 1).any():
        raise ConfigError(f"{what} thresholds must be a non-empty list of numbers in [0, 1].")
    return ts


def global_decisions(score: np.ndarray, thresholds: np.ndarray, lower_is_confident: bool) -> Iterator[np.ndarray]:
    """For each global threshold, the (n,) exit every sample stops at, given (exits, n) scores: one vectorised
    decision per threshold."""
    for t in thresholds:
        yield decide(score, np.full(score.shape[0] - 1, t), lower_is_confident)


def setting_grid(name: str, num_exits: int, grid: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """The settings a sweep of a rule without thresholds visits: every value of its setting for this model
    (or the `grid` given); one empty setting for a rule with none (the oracle)."""
    spec = get_rule(name)
    if spec.setting is None:
        return [{}]
    values = grid if grid is not None else spec.setting.values(num_exits)
    return [{spec.setting.keyword: int(v)} for v in values]


def require_early_exits(rec: ExitRecord) -> None:
    """ConfigError for a record of a single-exit model (nothing to choose)."""
    if rec.num_exits < 2:
        raise ConfigError(
            "This model has a single exit (its final classifier): every sample runs the whole network, "
            "so there are no thresholds to sweep or solve for."
        )


def pareto_sweep(
    rec: ExitRecord,
    name: str,
    grid: Sequence[Any] | None = None,
    points: int = 100,
    weights: Sequence[float] | None = None,
) -> Sweep:
    """Accuracy against MACs ratio for `name` over a grid: global thresholds (default: `points` quantiles
    of the scores) for threshold rules, every value of the setting for the others (`setting_grid`)."""
    spec = get_rule(name)
    require_early_exits(rec)
    if spec.has_thresholds:
        rule, score, correct = score_record(rec, name, weights)
        ts = threshold_grid(score, points) if grid is None else checked_thresholds(grid, f"{name}: sweep")
        cost = np.asarray(rec.cum_macs, dtype=np.float64) / rec.full_macs
        cols = np.arange(rec.num_samples)
        acc, macs = np.empty(len(ts)), np.empty(len(ts))
        for i, idx in enumerate(global_decisions(score, ts, rule.lower_is_confident)):
            acc[i], macs[i] = correct[idx, cols].mean(), cost[idx].mean()
        settings = [{"thresholds": float(t)} for t in ts]
    else:
        settings = setting_grid(spec.name, rec.num_exits, grid)
        results = [replay_rule(rec, name, **s) for s in settings]
        acc = np.array([r.accuracy for r in results])
        macs = np.array([r.macs_ratio for r in results])
    return Sweep(name, settings, acc, macs, pareto_front(macs, acc))


@dataclass
class Solution:
    """Per-exit settings chosen on one split, with the outcome there and (optionally) on another split."""

    rule: str
    settings: dict[str, Any]
    val: RuleResult
    test: RuleResult | None
    goal: str

    def summary(self) -> dict[str, Any]:
        """Plain-type view: settings, and accuracy / MACs ratio on each split."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "goal": self.goal,
            "settings": self.settings,
            "val": {"accuracy": self.val.accuracy, "macs_ratio": self.val.macs_ratio},
        }
        if self.test is not None:
            out["test"] = {"accuracy": self.test.accuracy, "macs_ratio": self.test.macs_ratio}
        return out


def _search(
    score: np.ndarray, correct: np.ndarray, cost: np.ndarray, lower: bool, key, grid_points: int, passes: int
) -> np.ndarray:
    """Per-exit thresholds maximising key(accuracy, cost): best global threshold, then coordinate passes."""
    e, n = score.shape
    cols = np.arange(n)

    def evaluate(t: np.ndarray) -> tuple:
        idx = decide(score, t, lower)
        return key(correct[idx, cols].mean(), cost[idx].mean())

    best_t, best = None, None
    for g in threshold_grid(score, grid_points):
        t = np.full(e - 1, g)
        k = evaluate(t)
        if best is None or k > best:
            best_t, best = t, k
    qs = np.linspace(0.0, 1.0, grid_points)
    cands = [
        np.unique(np.clip(np.concatenate([[0.0, 1.0], np.quantile(score[j], qs)]), 0.0, 1.0)) for j in range(e - 1)
    ]
    for _ in range(passes):
        improved = False
        for j in range(e - 1):
            for c in cands[j]:
                t = best_t.copy()
                t[j] = c
                k = evaluate(t)
                if k > best:
                    best_t, best, improved = t, k, True
        if not improved:
            break
    return best_t


class Goal(ABC):
    """What the solver asks of a rule's settings, judged on the accuracy and expected MACs ratio they reach."""

    @abstractmethod
    def describe(self) -> str:
        """The goal in a few words, e.g. "max MACs ratio 0.5"."""

    @abstractmethod
    def key(self, accuracy: float, macs_ratio: float) -> tuple:
        """Sort key of an outcome, larger is better; its first item is whether the outcome meets the goal, so
        every outcome that does ranks above every one that does not."""

    @abstractmethod
    def unmet(self, rec: ExitRecord, name: str, closest: RuleResult) -> str:
        """What to say when no setting of rule `name` meets the goal on `rec` (`closest`: the best one found)."""

    def met(self, result: RuleResult) -> bool:
        """Whether a replayed outcome meets the goal."""
        return bool(self.key(result.accuracy, result.macs_ratio)[0])


_TOLERANCE = 1e-12


@dataclass(frozen=True)
class MacsBudget(Goal):
    """The most accurate settings whose expected MACs are at most `max_macs_ratio` of the network without exits."""

    max_macs_ratio: float

    def __post_init__(self) -> None:
        if not self.max_macs_ratio > 0:
            raise ConfigError(
                f"The MACs budget must be a positive fraction of the full network, got {self.max_macs_ratio}."
            )

    def describe(self) -> str:
        return f"max MACs ratio {self.max_macs_ratio:g}"

    def key(self, accuracy: float, macs_ratio: float) -> tuple:
        if macs_ratio <= self.max_macs_ratio + _TOLERANCE:
            return (True, accuracy, -macs_ratio)
        return (False, -macs_ratio, accuracy)

    def unmet(self, rec: ExitRecord, name: str, closest: RuleResult) -> str:
        cheapest = float(np.min(rec.cum_macs)) / rec.full_macs
        return (
            f"No setting of {name} meets a budget of {100 * self.max_macs_ratio:.1f}% of the full network's MACs: "
            f"the cheapest reachable cost is {100 * cheapest:.1f}% (every sample stopping at exit 0)."
        )


@dataclass(frozen=True)
class MinAccuracy(Goal):
    """The cheapest settings (fewest expected MACs) whose accuracy is at least `min_accuracy`."""

    min_accuracy: float

    def __post_init__(self) -> None:
        if not 0 <= self.min_accuracy <= 1:
            raise ConfigError(f"The accuracy floor must be a fraction in [0, 1], got {self.min_accuracy}.")

    def describe(self) -> str:
        return f"min accuracy {self.min_accuracy:g}"

    def key(self, accuracy: float, macs_ratio: float) -> tuple:
        if accuracy >= self.min_accuracy - _TOLERANCE:
            return (True, -macs_ratio, accuracy)
        return (False, accuracy, -macs_ratio)

    def unmet(self, rec: ExitRecord, name: str, closest: RuleResult) -> str:
        return (
            f"No setting of {name} found reaches {100 * self.min_accuracy:.2f}% accuracy on this split: the best "
            f"found is {100 * closest.accuracy:.2f}% (final exit alone: {100 * float(rec.exit_accuracy()[-1]):.2f}%, "
            f"oracle: {100 * oracle(rec).accuracy:.2f}%)."
        )


def accuracy_floor(rec: ExitRecord, max_drop_points: float) -> float:
    """The accuracy `max_drop_points` percentage points below the final exit's accuracy on `rec`."""
    return float(rec.exit_accuracy()[-1]) - max_drop_points / 100.0


def solve(
    val: ExitRecord,
    name: str,
    goal: Goal,
    test: ExitRecord | None = None,
    weights: Sequence[float] | None = None,
    grid_points: int = 64,
    passes: int = 3,
) -> Solution:
    """The settings of rule `name` that best meet `goal` on `val` (per-exit thresholds for a threshold rule,
    else the best value of its setting); reported on `test` too when given. ConfigError, saying what is
    reachable, when no setting meets the goal."""
    if get_rule(name).reads_labels:
        raise ConfigError(f"The {name} has no settings to choose: it reads the labels.")
    require_early_exits(val)
    if get_rule(name).has_thresholds:
        rule, score, correct = score_record(val, name, weights)
        cost = np.asarray(val.cum_macs, dtype=np.float64) / val.full_macs
        t = _search(score, correct, cost, rule.lower_is_confident, goal.key, grid_points, passes)
        settings: dict[str, Any] = {"thresholds": [float(v) for v in t], **rule_settings(val, name, weights)}
    else:
        sweep = pareto_sweep(val, name)
        best = max(range(len(sweep.settings)), key=lambda i: goal.key(sweep.accuracy[i], sweep.macs_ratio[i]))
        settings = dict(sweep.settings[best])
    res_val = replay_rule(val, name, **settings)
    if not goal.met(res_val):
        raise ConfigError(goal.unmet(val, name, res_val))
    res_test = replay_rule(test, name, **settings) if test is not None else None
    return Solution(name, settings, res_val, res_test, goal.describe())
