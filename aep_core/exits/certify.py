"""Thresholds with a guarantee: per-exit (or global) thresholds of a threshold rule whose accuracy drop
against a reference and whose compute are bounded with a chosen confidence, certified on the validation
split (Learn-then-Test, Angelopoulos et al. 2021, as used for early exits by CALM, Schuster et al. 2022).

What is bounded. The reference is the final exit's own prediction ("final") or the rule's own prediction
at full depth ("ensemble": for aep_ensemble the ensemble of every exit, for the other rules the final exit).
The damage rate D(θ) of a setting θ is the probability, on a new sample from the distribution the
validation samples were drawn from, that the reference is right and the rule with θ is wrong. The
expected accuracy drop against the reference is D(θ) minus the rate of samples the rule rescues, so
D(θ) <= eps bounds the expected drop by eps. The cost is the expected MACs ratio C(θ): the mean MACs a
sample spends, over the MACs of the network without exits.

The guarantee. Take the validation samples as an i.i.d. draw. With a drop goal of eps, with probability
at least `confidence` over that draw, the chosen setting has D <= eps (so an expected drop <= eps). With
probability at least `confidence` over the same draw, its expected MACs ratio is at most `macs_bound`,
whichever setting of the family was chosen (so also under a MACs budget). Each statement holds at that
level; both together with probability at least 1 - 2 (1 - confidence). They bound expectations: the drop
and cost measured on a finite test set scatter around them.

The families. A certificate walks a nested family of settings θ_0, θ_1, ..., from the most conservative
(every sample runs to the last exit) to the most aggressive, nested in that a sample's exit never moves
later along the walk. "global" is one shared threshold on a grid fixed in advance; it is certified on
every validation sample. "per_exit" gives each early exit its own threshold, shaped on the data: the
validation samples are split by a permutation fixed by `seed` into a shaping third and a testing two
thirds. On the shaping part, for each early exit k, a logistic curve fitted by maximum likelihood gives
the probability that a sample is damaged at exit k (reference right, the rule's exit-k prediction wrong)
from the log distance of its exit-k score to the confident end (1 - score, or the score for a rule where
lower is confident, such as entropy). For each target level alpha of a grid fixed in advance (0 to 0.5),
t_k(alpha) is the score at which that risk reaches alpha: a sample stops at exit k only where its
estimated risk of damage there is at most alpha, the same risk at every exit. The curve is monotone, so
t_k only becomes more permissive as alpha grows and the family is nested (an exit whose fitted risk does
not grow away from the confident end stays closed). The split depends on the seed only, so the testing
part is an i.i.d. draw independent of the shaping one: it alone certifies the family (n below is its size),
and the shaping can be as data-driven as it likes without touching the guarantee. (A smooth fit rather than the
raw damage rate of the shaping samples, because at the rates a half-point drop allows an exit sees a
handful of damaged shaping samples, and thresholds read off those alone are too noisy to save compute.)

The drop test (fixed-sequence testing). Given the family, each θ_j is tested by the exact binomial tail of
its damage count on the n certifying samples (every validation sample for "global", the testing part for
"per_exit"): it passes when P(Binomial(n, eps) <= count) <= delta, with
delta = 1 - confidence. The walk stops at the first failure and returns the last setting that passed. If
the returned setting had D > eps, the first setting of the walk with D > eps passed its test; its count is
Binomial(n, D), at most that count with probability at most delta. So the choice is valid although the data
chose it.

The cost bound (DKW). Along a nested family the indicator "the sample goes past exit k" only switches
off, so the fraction of samples going past exit k, over every setting of the family at once, is one
empirical survival function. The one-sided Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant,
taken over the K early exits, bounds every true fraction by the empirical one plus
eps_n = sqrt(ln(K / delta) / (2 n)) with probability at least 1 - delta, for every setting at once (Massart's
constant needs K / delta >= 2; ln 2 is used below that). Then
C(θ) <= c_0 / full + sum_k (c_{k+1} - c_k) / full * min(1, past_k(θ) + eps_n), with c the cumulative MACs
of the exits. Being uniform over the family, the bound holds for the setting a drop goal or a budget picks.

The solver in `solvers.py` picks the cheapest setting that meets a floor on validation; its drop on new
data scatters around the floor. This one pays some compute for bounds that hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import RuleResult, decide, get_rule, list_rules, replay_rule
from aep_core.exits.solvers import Solution, require_early_exits, rule_settings, score_record

REFERENCES = ("final", "ensemble")
FAMILIES = ("per_exit", "global")
SHAPING_FRACTION = 1 / 3  # of the validation samples, shapes the per-exit family; the rest certifies it
# Target levels of the per-exit family, fixed in advance: 0 .. 0.5, spaced quadratically so that the steps are
# fine near 0, where the settings a small drop can certify lie.
TARGET_LEVELS = 0.5 * np.linspace(0.0, 1.0, 201) ** 2
# what each reference is, in words, for every output that names it
REFERENCE_WORDS = {"final": "the final exit", "ensemble": "the rule's own full-depth prediction"}


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


def max_damage_count(n: int, eps: float, delta: float) -> int:
    """The largest count c with P(Binomial(n, eps) <= c) <= delta (the most damage out of n samples that still
    certifies a damage rate of at most eps), or -1 when even no damage does not."""
    j = np.arange(n)
    # log pmf(j + 1) - log pmf(j) = log((n - j) / (j + 1)) + log(eps / (1 - eps))
    steps = np.log((n - j) / (j + 1)) + math.log(eps) - math.log1p(-eps)
    log_pmf = n * math.log1p(-eps) + np.concatenate([[0.0], np.cumsum(steps)])
    log_cdf = np.logaddexp.accumulate(log_pmf)  # increasing in c
    return int(np.searchsorted(log_cdf, math.log(delta), side="right")) - 1


def damage_upper_bound(count: int, n: int, delta: float) -> float:
    """The smallest damage rate that `count` damaged samples out of n certify at level delta (the Clopper-Pearson
    upper limit): the least eps with P(Binomial(n, eps) <= count) <= delta."""
    if count >= n:
        return 1.0
    lo, hi = count / n, 1.0
    for _ in range(60):  # bisection: the tail falls as eps grows
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if binomial_cdf(count, n, mid) <= delta else (mid, hi)
    return hi


def certification_grid(lower_is_confident: bool) -> np.ndarray:
    """Global thresholds from the most conservative to the most aggressive, fixed in advance (not from the
    data, which the guarantee needs): a uniform grid plus fine steps next to the confident end."""
    fine = 1.0 - np.logspace(-5, -1, 41)  # 0.99999 ... 0.9
    grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, 201), fine]))
    return grid if lower_is_confident else grid[::-1]  # entropy: 0 is the most conservative


def _check_reference(reference: str) -> None:
    if reference not in REFERENCES:
        raise ConfigError(f"Unknown reference '{reference}': choose one of {', '.join(REFERENCES)}.")


def reference_correct(rec: ExitRecord, name: str, reference: str, weights: Sequence[float] | None = None) -> np.ndarray:
    """(n,) bool: whether the reference gets each sample right. "final": the final exit's own prediction;
    "ensemble": rule `name`'s own prediction at full depth (for aep_ensemble the ensemble of every exit, with
    `weights` or the trained ones; for the other rules the final exit)."""
    _check_reference(reference)
    get_rule(name)  # a clear error for an unknown rule
    if reference == "ensemble" and get_rule(name).has_thresholds:
        return score_record(rec, name, weights)[2][-1]
    return rec.logits[-1].argmax(-1) == rec.labels


def reference_floor(
    rec: ExitRecord, name: str, reference: str, max_drop_points: float, weights: Sequence[float] | None = None
) -> float:
    """The accuracy `max_drop_points` points below the reference's on `rec`: the floor an uncertified
    (optimistic) choice is held to."""
    return float(reference_correct(rec, name, reference, weights).mean()) - max_drop_points / 100.0


def drop_against(
    result: RuleResult, rec: ExitRecord, name: str, reference: str, weights: Sequence[float] | None = None
) -> float:
    """Accuracy drop in points of a replayed outcome of rule `name` on `rec` against the reference (negative
    when the rule is more accurate)."""
    return 100.0 * (float(reference_correct(rec, name, reference, weights).mean()) - result.accuracy)


@dataclass
class ScoredRecord:
    """What a certificate reads of a record, computed once: a threshold rule's scores and right answers at every
    exit, the reference's right answers, and the MACs ratio of stopping at each exit."""

    rule: str
    reference: str
    lower_is_confident: bool
    score: np.ndarray  # (exits, n)
    correct: np.ndarray  # (exits, n) bool: the rule's prediction at each exit is right
    reference_right: np.ndarray  # (n,) bool
    cost: np.ndarray  # (exits,) cum_macs / full_macs

    @classmethod
    def of(
        cls, rec: ExitRecord, name: str, reference: str = "final", weights: Sequence[float] | None = None
    ) -> ScoredRecord:
        """Score `rec` with threshold rule `name` (ensemble weights: `weights` or the trained ones)."""
        _check_reference(reference)
        rule, score, correct = score_record(rec, name, weights)
        ref = correct[-1] if reference == "ensemble" else rec.logits[-1].argmax(-1) == rec.labels
        cost = np.asarray(rec.cum_macs, dtype=np.float64) / rec.full_macs
        return cls(name, reference, rule.lower_is_confident, score, correct, ref, cost)

    @property
    def num_samples(self) -> int:
        return self.score.shape[1]

    def subset(self, idx: np.ndarray) -> ScoredRecord:
        """The same, for the samples `idx` only."""
        return replace(
            self, score=self.score[:, idx], correct=self.correct[:, idx], reference_right=self.reference_right[idx]
        )

    def outcome(self, thresholds: Sequence[float]) -> tuple[float, float]:
        """(accuracy drop in points against the reference, MACs ratio) of the rule at per-exit `thresholds`."""
        idx = decide(self.score, np.asarray(thresholds, dtype=np.float64), self.lower_is_confident)
        right = self.correct[idx, np.arange(self.num_samples)]
        return 100.0 * float(self.reference_right.mean() - right.mean()), float(self.cost[idx].mean())

    def key(self) -> tuple[float, np.ndarray]:
        """(sign, (exits, n) key): a sample passes threshold t at exit k when key[k] <= sign * t, whichever way
        the rule's score points."""
        sign = 1.0 if self.lower_is_confident else -1.0
        return sign, sign * self.score.astype(np.float64)


@dataclass
class Choice:
    """The setting a certificate picked: per-exit thresholds and the certified bound on its MACs ratio."""

    thresholds: list[float]
    macs_bound: float
    calibration_samples: int  # the samples that certified it


def _damage_curve(z: np.ndarray, damaged: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic curve P(damage) = sigmoid(a + b z) fitted by maximum likelihood (Newton steps) to
    (m,) features and damage indicators, with one damaged pseudo-sample at the largest z and one undamaged at
    the smallest, so that the fit stays finite when an exit damages none (or every one) of the samples."""
    z = np.concatenate([z, [z.max(), z.min()]])
    y = np.concatenate([damaged.astype(np.float64), [1.0, 0.0]])
    x = np.stack([np.ones_like(z), z], 1)  # (m + 2, 2)
    w = np.array([math.log(y.mean() / (1 - y.mean())), 0.0])
    for _ in range(iterations):
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, x.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def _per_exit_family(shaping: ScoredRecord) -> np.ndarray:
    """(levels, early exits) thresholds of the per-exit family in key space, one setting per target level (the
    first, level 0, the most conservative), each column non-decreasing."""
    _, key = shaping.key()
    exits, m = key.shape
    offset = 0.0 if shaping.lower_is_confident else 1.0
    family = np.full((len(TARGET_LEVELS), exits - 1), -offset)  # key of the conservative end (t = 1, or 0)
    if m == 0:
        return family
    gap = key + offset  # (exits, m) distance of the score from the confident end, in [0, 1]
    z = np.log(np.maximum(gap, 1e-7))
    damaged = shaping.reference_right[None] & ~shaping.correct  # (exits, m)
    with np.errstate(divide="ignore"):
        log_odds = np.log(TARGET_LEVELS) - np.log1p(-TARGET_LEVELS)  # -inf at level 0
    for k in range(exits - 1):  # a loop over exits, vectorised over samples and levels
        a, b = _damage_curve(z[k], damaged[k])
        if b > 0:  # the risk grows away from the confident end; else exit k stays closed
            with np.errstate(over="ignore"):
                gap_at_level = np.minimum(np.exp((log_odds - a) / b), 1.0)  # the gap where the risk is alpha
            family[:, k] = gap_at_level - offset
    return family


def _global_family(scored: ScoredRecord) -> np.ndarray:
    """(levels, early exits) thresholds of the global family in key space: the fixed grid, shared by every exit."""
    sign, _ = scored.key()
    return np.repeat(sign * certification_grid(scored.lower_is_confident)[:, None], scored.score.shape[0] - 1, 1)


def _walk(scored: ScoredRecord, family: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along a nested family ((levels, early exits) thresholds in key space): the (levels,) damage count and the
    (early exits, levels) count of samples going past each early exit, in one pass over the samples."""
    _, key = scored.key()
    exits, n = key.shape
    levels = family.shape[0]
    # the first level at which each sample passes exit k, then at which it stops at exit k or before
    first = np.stack([np.searchsorted(family[:, k], key[k], side="left") for k in range(exits - 1)])
    stop_by = np.minimum.accumulate(first, axis=0)  # (early exits, n), non-increasing in k
    # a sample stops at exit k for the levels in [start[k], end[k])
    start = np.concatenate([stop_by, np.zeros((1, n), dtype=stop_by.dtype)])
    end = np.concatenate([np.full((1, n), levels, dtype=stop_by.dtype), stop_by])
    damage = (scored.reference_right[None] & ~scored.correct).ravel().astype(np.float64)
    change = np.bincount(start.ravel(), damage, levels + 1) - np.bincount(end.ravel(), damage, levels + 1)
    damage_count = np.rint(np.cumsum(change)[:levels]).astype(np.int64)
    stopped = np.cumsum([np.bincount(s, minlength=levels + 1)[:levels] for s in stop_by], axis=1)
    return damage_count, n - stopped


def _cost_bounds(scored: ScoredRecord, past: np.ndarray, delta: float) -> np.ndarray:
    """(levels,) certified upper bound on the expected MACs ratio of every setting of a nested family at once,
    given the (early exits, levels) count of certifying samples going past each early exit."""
    early, n = past.shape[0], scored.num_samples
    eps_n = math.sqrt(math.log(max(early / delta, 2.0)) / (2 * n))
    step = np.diff(scored.cost)[:, None]  # (early exits, 1): the MACs ratio added by going past exit k
    return scored.cost[0] + (step * np.minimum(1.0, past / n + eps_n)).sum(0)


def certify_scored(
    scored: ScoredRecord,
    *,
    max_drop_points: float | None = None,
    max_macs_ratio: float | None = None,
    confidence: float = 0.9,
    family: str = "per_exit",
    seed: int = 0,
) -> Choice:
    """The certified choice on an already scored validation record (`certify` checks the request, scores the
    record, and replays the choice): the most aggressive setting of the family whose damage rate against the
    reference is certified within `max_drop_points`, or, given `max_macs_ratio` instead, the least aggressive
    whose certified MACs ratio is within it. ConfigError when no setting can be certified."""
    delta, n = 1.0 - confidence, scored.num_samples
    sign, _ = scored.key()
    if family == "per_exit":
        perm = np.random.default_rng(seed).permutation(n)
        m = int(n * SHAPING_FRACTION)
        levels, certifying = _per_exit_family(scored.subset(perm[:m])), scored.subset(perm[m:])
        where = f"the {n - m} validation samples kept for testing (of {n}; the others shaped the per-exit thresholds)"
    else:
        levels, certifying, where = _global_family(scored), scored, f"{n} validation samples"
    levels = sign * np.clip(sign * levels, 0.0, 1.0)  # the range a rule accepts: the walk counts what a replay does
    damage, past = _walk(certifying, levels)
    bounds = _cost_bounds(certifying, past, delta)
    if max_drop_points is not None:
        passes = damage <= max_damage_count(certifying.num_samples, max_drop_points / 100.0, delta)
        if not passes[0]:
            raise ConfigError(
                _uncertifiable(scored, max_drop_points, confidence, int(damage[0]), certifying.num_samples, where)
            )
        chosen = len(passes) - 1 if passes.all() else int(np.argmin(passes)) - 1  # the last before the first failure
    else:
        fits = np.flatnonzero(bounds <= max_macs_ratio)
        if not fits.size:
            raise ConfigError(
                f"No setting of {scored.rule} has a certified MACs ratio within {max_macs_ratio:g} with "
                f"{100 * confidence:g}% confidence on {where}: the cheapest bound this family certifies is "
                f"{bounds.min():.3f} (stopping every sample at exit 0 costs {scored.cost[0]:.3f}). Allow a larger "
                "budget, a lower confidence, or evaluate on more validation samples."
            )
        chosen = int(fits[0])
    return Choice([float(sign * v) for v in levels[chosen]], float(bounds[chosen]), certifying.num_samples)


def _uncertifiable(scored: ScoredRecord, max_drop: float, confidence: float, damage: int, n: int, where: str) -> str:
    """The message for a drop no setting can certify (`damage` of the `n` certifying samples at the most
    conservative setting): the smallest bound these samples certify, and what to do."""
    smallest = 100 * damage_upper_bound(damage, n, 1.0 - confidence)
    reference = REFERENCE_WORDS[scored.reference]
    if damage == 0:
        why = "even with no damage at all"
    else:
        why = f"as its most conservative setting already damages {damage} of them ({reference} right, rule wrong)"
    hint = ""
    if damage and scored.reference == "final" and get_rule(scored.rule).uses_ensemble_weights:
        hint = (
            " Its full-depth prediction is not the final exit's: reference='ensemble' bounds the drop against "
            "the rule's own full-depth prediction instead."
        )
    return (
        f"No setting of {scored.rule} can be certified within {max_drop:g} points against {reference} with "
        f"{100 * confidence:g}% confidence on {where}: the smallest bound certifiable here is {smallest:.2f} points, "
        f"{why}. Allow a larger drop, a lower confidence, or evaluate on more validation samples.{hint}"
    )


@dataclass
class Certified(Solution):
    """Certified settings: a Solution with the guarantee that came with them (see the module docstring)."""

    reference: str
    confidence: float
    family: str
    drop_bound_points: float | None  # the certified bound on the expected drop; None under a MACs budget
    macs_bound: float  # the certified bound on the expected MACs ratio
    calibration_samples: int  # the validation samples that certified the choice
    reference_accuracy: dict[str, float]  # accuracy of the reference on "val" and, if given, "test"

    def drop_points(self, split: str) -> float:
        """Accuracy drop in points of the chosen setting against the reference on "val" or "test"."""
        result = {"val": self.val, "test": self.test}.get(split)
        if split not in self.reference_accuracy or result is None:
            have = ", ".join(self.reference_accuracy)
            raise ConfigError(f"No outcome on split '{split}': this certificate has one on {have}.")
        return 100.0 * (self.reference_accuracy[split] - result.accuracy)

    def summary(self) -> dict[str, Any]:
        """Solution.summary() with the guarantee: reference, confidence, family, both bounds, the certifying
        samples, and the drop against the reference on each split."""
        out = super().summary()
        out.update(
            certified=True,
            reference=self.reference,
            confidence=self.confidence,
            family=self.family,
            drop_bound_points=self.drop_bound_points,
            macs_bound=self.macs_bound,
            calibration_samples=self.calibration_samples,
        )
        for split in self.reference_accuracy:
            out[split]["drop_points"] = self.drop_points(split)
        return out


def _check_request(
    val: ExitRecord,
    name: str,
    max_drop_points: float | None,
    max_macs_ratio: float | None,
    confidence: float,
    reference: str,
    family: str,
    seed: int,
) -> None:
    if not get_rule(name).has_thresholds:
        raise ConfigError(
            f"Certified thresholds need a threshold rule ({', '.join(list_rules(thresholds=True))}); got {name}."
        )
    _check_reference(reference)
    if family not in FAMILIES:
        raise ConfigError(f"Unknown family '{family}': choose one of {', '.join(FAMILIES)}.")
    if (max_drop_points is None) == (max_macs_ratio is None):
        raise ConfigError("Give exactly one goal to certify: an allowed drop (max_drop_points) or a MACs budget.")
    if max_drop_points is not None and not 0 < max_drop_points < 100:
        raise ConfigError(f"The allowed drop must be between 0 and 100 points, got {max_drop_points}.")
    if max_macs_ratio is not None and not max_macs_ratio > 0:
        raise ConfigError(f"The MACs budget must be a positive fraction of the full network, got {max_macs_ratio}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"The confidence must be a fraction strictly between 0 and 1, got {confidence}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"The seed must be a whole number >= 0, got {seed}.")
    require_early_exits(val)


def certify(
    val: ExitRecord,
    name: str,
    *,
    max_drop_points: float | None = None,
    max_macs_ratio: float | None = None,
    confidence: float = 0.9,
    reference: str = "final",
    family: str = "per_exit",
    test: ExitRecord | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
) -> Certified:
    """Thresholds of rule `name` certified on `val` with probability `confidence` (see the module docstring):
    given `max_drop_points`, the most aggressive setting of the family certified to lose at most that many
    points of expected accuracy against `reference`; given `max_macs_ratio` instead, the least aggressive (most
    accurate) one whose certified expected MACs ratio is within it. Either way with a certified bound on the
    expected MACs ratio, and reported on `test` too when given. `family`: "per_exit" (thresholds shaped on a
    third of `val`, split by `seed`) or "global" (one shared threshold). ConfigError for a bad request or when
    no setting can be certified."""
    _check_request(val, name, max_drop_points, max_macs_ratio, confidence, reference, family, seed)
    scored = ScoredRecord.of(val, name, reference, weights)
    choice = certify_scored(
        scored,
        max_drop_points=max_drop_points,
        max_macs_ratio=max_macs_ratio,
        confidence=confidence,
        family=family,
        seed=int(seed),
    )
    settings = {"thresholds": choice.thresholds, **rule_settings(val, name, weights)}
    res_val = replay_rule(val, name, **settings)
    res_test = replay_rule(test, name, **settings) if test is not None else None
    accuracy = {"val": float(scored.reference_right.mean())}
    if test is not None:
        accuracy["test"] = float(reference_correct(test, name, reference, weights).mean())
    pct = f"{100 * confidence:g}% confidence"
    if max_drop_points is not None:
        goal = f"drop <= {max_drop_points:g} points against {REFERENCE_WORDS[reference]} with {pct} (certified)"
    else:
        goal = f"MACs ratio <= {max_macs_ratio:g} with {pct} (certified)"
    return Certified(
        name,
        settings,
        res_val,
        res_test,
        goal,
        reference,
        confidence,
        family,
        max_drop_points,
        choice.macs_bound,
        choice.calibration_samples,
        accuracy,
    )


def certify_max_drop(
    val: ExitRecord,
    name: str,
    max_drop_points: float,
    confidence: float = 0.9,
    test: ExitRecord | None = None,
    weights: Sequence[float] | None = None,
) -> Certified:
    """`certify` with a drop goal and its defaults (against the final exit, per-exit thresholds)."""
    return certify(val, name, max_drop_points=max_drop_points, confidence=confidence, test=test, weights=weights)
