"""Thresholds with a guarantee: the most aggressive global threshold whose accuracy loss against the final
exit is certified on the validation split, with a chosen confidence (Learn-then-Test, Angelopoulos et al.
2021, as used for early exits by CALM, Schuster et al. 2022).

The loss of a setting is its damage rate: the share of samples the final exit gets right and the early
exit gets wrong. It bounds the accuracy drop from above (drop = damage - samples the early exit rescues).
For a data-independent sequence of thresholds, from the most conservative on, each is tested with the
exact binomial tail of its damage count on n validation samples, and the walk stops at the first that
fails (fixed-sequence testing). With probability at least `confidence` over the draw of the validation
set, the chosen setting's expected damage rate, and so its expected drop, on data from the same
distribution is at most the bound.

The solver in `solvers.py` picks the cheapest setting that meets the floor on validation; its drop on
new data scatters around the floor. This one pays some compute for a bound that holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import decide, get_rule, list_rules, replay_rule
from aep_core.exits.solvers import Solution, require_early_exits, rule_settings, score_record


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact (summed in log space)."""
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_comb = math.lgamma(n + 1)
    logs = [
        log_comb - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)
        for j in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def certification_grid(lower_is_confident: bool) -> np.ndarray:
    """Global thresholds from the most conservative to the most aggressive, fixed in advance (not from the
    data, which the guarantee needs): a uniform grid plus fine steps next to the confident end."""
    fine = 1.0 - np.logspace(-5, -1, 41)  # 0.99999 ... 0.9
    grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, 201), fine]))
    return grid if lower_is_confident else grid[::-1]  # entropy: 0 is the most conservative


def certify_max_drop(
    val: ExitRecord,
    name: str,
    max_drop_points: float,
    confidence: float = 0.9,
    test: ExitRecord | None = None,
    weights: Sequence[float] | None = None,
) -> Solution:
    """The cheapest global threshold of rule `name` whose damage rate (hence accuracy drop) against the final
    exit is at most `max_drop_points` with probability `confidence`, certified on `val`; reported on `test`
    too when given. Raises ConfigError when even the most conservative threshold cannot be certified."""
    if not get_rule(name).has_thresholds:
        raise ConfigError(
            f"Certified thresholds need a threshold rule ({', '.join(list_rules(thresholds=True))}); got {name}."
        )
    if not 0 < max_drop_points < 100:
        raise ConfigError(f"The allowed drop must be between 0 and 100 points, got {max_drop_points}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"The confidence must be a fraction strictly between 0 and 1, got {confidence}.")
    require_early_exits(val)
    rule, score, correct = score_record(val, name, weights)
    n, eps, delta = val.num_samples, max_drop_points / 100.0, 1.0 - confidence
    cols = np.arange(n)
    final_right = correct[-1]
    chosen = None
    for t in certification_grid(rule.lower_is_confident):
        idx = decide(score, np.full(val.num_exits - 1, t), rule.lower_is_confident)
        damage = int((final_right & ~correct[idx, cols]).sum())
        if binomial_cdf(damage, n, eps) > delta:
            break
        chosen = float(t)
    if chosen is None:
        smallest = 100 * (1 - delta ** (1 / n))  # the bound certified with no damage at all
        raise ConfigError(
            f"No threshold of {name} can be certified within {max_drop_points:g} points with "
            f"{100 * confidence:g}% confidence on {n} validation samples: the smallest bound any "
            f"setting could certify here is {smallest:.2f} points. Allow a larger drop, a lower "
            "confidence, or evaluate on more validation samples."
        )
    settings = {"thresholds": [chosen] * (val.num_exits - 1), **rule_settings(val, name, weights)}
    res_val = replay_rule(val, name, **settings)
    res_test = replay_rule(test, name, **settings) if test is not None else None
    goal = f"drop <= {max_drop_points:g} points with {100 * confidence:g}% confidence (certified)"
    return Solution(name, settings, res_val, res_test, goal)
