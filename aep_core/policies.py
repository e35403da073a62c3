"""Exit policies replayed on saved per-exit outputs (an ExitRecord), vectorised over samples.

A policy decides, for each sample, the exit it stops at and its prediction there. Every
threshold rule is written in one decision form (an `ExitRule`): a score per exit computed from the
outputs of exits 0..k only (so a runtime that stops early computes the same numbers), and a
threshold per early exit. A sample stops at the first exit whose score passes its threshold; the
last exit answers whoever is left.

Rules: max_probability, entropy, eenet_confidence, aep_ensemble, patience, fixed_exit (scored
rules), and oracle (needs the labels: a reference, not a deployable rule).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .evaluation import ExitRecord

Thresholds = float | Sequence[float] | np.ndarray
# (exits, n, classes) logits, (exits, n) confidences or None -> (exits, n) score, (exits, n) prediction
ScoreFn = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


@dataclass
class PolicyResult:
    """Where each sample stopped and what it predicted, with the metrics of that outcome."""

    exit_index: np.ndarray  # (n,) int
    prediction: np.ndarray  # (n,) int
    labels: np.ndarray  # (n,)
    cum_macs: np.ndarray  # (exits,)
    full_macs: int
    num_classes: int
    policy: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_exits(self) -> int:
        return len(self.cum_macs)

    @property
    def correct(self) -> np.ndarray:
        """(n,) bool: whether each sample's prediction is right."""
        return self.prediction == self.labels

    @property
    def accuracy(self) -> float:
        """Fraction of samples predicted correctly."""
        return float(self.correct.mean())

    @property
    def expected_macs(self) -> float:
        """Mean MACs spent per sample."""
        return float(np.asarray(self.cum_macs, dtype=np.float64)[self.exit_index].mean())

    @property
    def macs_ratio(self) -> float:
        """Expected MACs divided by the MACs of the network without exits."""
        return self.expected_macs / self.full_macs

    @property
    def exit_distribution(self) -> np.ndarray:
        """(exits,) fraction of samples stopping at each exit."""
        return np.bincount(self.exit_index, minlength=self.num_exits) / len(self.exit_index)

    @property
    def per_exit_accuracy(self) -> np.ndarray:
        """(exits,) accuracy of the samples that stopped at each exit (nan where none stopped)."""
        n = np.bincount(self.exit_index, minlength=self.num_exits).astype(np.float64)
        right = np.bincount(self.exit_index, weights=self.correct.astype(np.float64), minlength=self.num_exits)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, right / n, np.nan)

    @property
    def per_class_mean_exit(self) -> np.ndarray:
        """(classes,) mean exit index of the samples of each true class (nan for absent classes)."""
        n = np.bincount(self.labels, minlength=self.num_classes).astype(np.float64)
        s = np.bincount(self.labels, weights=self.exit_index.astype(np.float64), minlength=self.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan)

    def summary(self) -> dict[str, Any]:
        """Plain-type metrics: accuracy, expected MACs, MACs ratio, exit distribution, per-exit accuracy."""
        return {"policy": self.policy, "settings": self.settings, "accuracy": self.accuracy,
                "expected_macs": self.expected_macs, "macs_ratio": self.macs_ratio,
                "exit_distribution": self.exit_distribution.tolist(),
                "per_exit_accuracy": [None if math.isnan(v) else v for v in self.per_exit_accuracy.tolist()],
                "per_class_mean_exit": [None if math.isnan(v) else v for v in self.per_class_mean_exit.tolist()]}


# ---- stepwise scoring: the runtime's form of a rule ----------------------------------------------

class StepScorer:
    """A rule's scores computed one exit at a time for the samples still running: `step` takes exit k's
    outputs and returns the (n,) scores and predictions that row k of the rule's `scores` gives on exits
    0..k; `keep` drops the samples that stopped."""

    def step(self, logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def keep(self, mask: np.ndarray) -> None:
        raise NotImplementedError


class HistoryScorer(StepScorer):
    """Any rule, stepwise: keeps the outputs of the exits visited so far (none for a local rule) and
    scores them with the rule's own vectorised score function."""

    def __init__(self, rule: ExitRule) -> None:
        self.rule = rule
        self.logits: list[np.ndarray] = []  # per visited exit: (n, classes)
        self.confidences: list[np.ndarray] = []

    def step(self, logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.rule.local:
            self.logits, self.confidences = [], []
        self.logits.append(logits)
        if confidences is not None:
            self.confidences.append(confidences)
        score, pred = self.rule.scores(np.stack(self.logits), np.stack(self.confidences) if self.confidences else None)
        return score[-1], pred[-1]

    def keep(self, mask: np.ndarray) -> None:
        self.logits = [a[mask] for a in self.logits]
        self.confidences = [a[mask] for a in self.confidences]


# ---- scores: each is causal (row k uses exits 0..k only) -------------------------------------------

def _top(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max and argmax over the last axis, (..., 1) and (...). (argmax + gather: numpy's max over a short
    last axis is several times slower.)"""
    idx = a.argmax(-1)
    return np.take_along_axis(a, idx[..., None], -1), idx


def _sum_classes(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis ((e, n, c) -> (e, n)); einsum's loop is several times faster than .sum(-1) here."""
    return np.einsum("...c->...", a)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(logits - _top(logits)[0])
    return e / _sum_classes(e)[..., None]


def _max_probability_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    m, pred = _top(logits)  # (e, n, 1), (e, n)
    return 1.0 / _sum_classes(np.exp(logits - m)), pred  # top probability = exp(0) / sum exp(z - max)


def _entropy_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    m, pred = _top(logits)
    z = logits - m
    e = np.exp(z)
    s = _sum_classes(e)  # (e, n)
    h = np.log(s) - np.einsum("...c,...c->...", e, z) / s  # H(p) = log s - sum p z, with p = e / s
    return np.clip(h / math.log(logits.shape[-1]), 0.0, 1.0), pred  # normalised to [0, 1]


def _eenet_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    assert confidences is not None
    return confidences, logits.argmax(-1)


class EnsembleScorer(StepScorer):
    """The AEP ensemble rule, stepwise: a running weighted sum of the exits' softmax outputs. The replayed
    score is this scorer run over every exit, so replay and runtime compute the same numbers."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights
        self.k = 0
        self.total: np.ndarray | None = None  # (n, classes) weighted sum of the softmax of exits 0..k-1

    def step(self, logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights[: self.k + 1].astype(logits.dtype)
        e = np.exp(logits - _top(logits)[0])  # (n, c) unnormalised softmax
        e *= (w[-1] / _sum_classes(e))[..., None]
        if self.total is not None:
            e += self.total
        self.total = e
        self.k += 1
        top, pred = _top(e)
        return top[..., 0] / np.cumsum(w)[-1], pred

    def keep(self, mask: np.ndarray) -> None:
        if self.total is not None:
            self.total = self.total[mask]


def _ensemble_score_fn(weights: np.ndarray) -> ScoreFn:
    def scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        scorer = EnsembleScorer(weights)  # exit by exit, as the runtime does: one definition of the numbers
        steps = [scorer.step(z, None) for z in logits]  # a loop over exits, vectorised over samples
        return np.stack([s for s, _ in steps]), np.stack([p for _, p in steps])

    return scores


def _patience_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred = logits.argmax(-1)  # (e, n)
    run = np.ones(pred.shape, dtype=np.float64)  # run[k]: exits k, k-1, ... in a row that agree with exit k
    for k in range(1, pred.shape[0]):  # a loop over exits, not samples
        run[k] = np.where(pred[k] == pred[k - 1], run[k - 1] + 1, 1)
    return run, pred


def _depth_scores(logits: np.ndarray, confidences: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    e, n = logits.shape[:2]
    return np.broadcast_to(np.arange(e, dtype=np.float64)[:, None], (e, n)), logits.argmax(-1)


@dataclass
class ExitRule:
    """A policy in decision form: a sample stops at the first exit k < last whose score passes
    thresholds[k] (score >= t, or score <= t when `lower_is_confident`), else at the last exit."""

    name: str
    thresholds: np.ndarray  # (exits - 1,)
    score_fn: ScoreFn
    lower_is_confident: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    local: bool = False  # the score at exit k depends on exit k's outputs only (no history needed)
    step_scorer: Callable[[], StepScorer] | None = None  # a faster one-exit-at-a-time form, if the rule has one

    def scorer(self) -> StepScorer:
        """A fresh scorer that takes the exits' outputs one at a time (for a runtime that stops early)."""
        return self.step_scorer() if self.step_scorer is not None else HistoryScorer(self)

    def scores(self, logits: np.ndarray, confidences: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(exits, n) scores and predictions of exits 0..e-1 given their outputs."""
        return self.score_fn(logits, confidences)

    def passes(self, score: np.ndarray, k: int) -> np.ndarray:
        """(n,) bool: whether scores at exit k let a sample stop there (always true at the last exit)."""
        if k >= len(self.thresholds):
            return np.ones(score.shape, dtype=bool)
        t = self.thresholds[k]
        return score <= t if self.lower_is_confident else score >= t

    def replay(self, rec: ExitRecord) -> PolicyResult:
        """Apply the rule to every sample of an evaluation record."""
        _check_record(rec)
        if len(self.thresholds) != rec.num_exits - 1:
            raise ConfigError(f"This rule was made for {len(self.thresholds) + 1} exits; the record has {rec.num_exits}.")
        score, pred = self.scores(rec.logits, rec.confidences)
        idx = decide(score, self.thresholds, self.lower_is_confident)
        return _result(rec, idx, pred[idx, np.arange(rec.num_samples)], self.name, self.settings)


def decide(score: np.ndarray, thresholds: np.ndarray, lower_is_confident: bool = False) -> np.ndarray:
    """(n,) exit index: the first exit whose score passes its threshold; the last exit otherwise.
    score: (exits, n); thresholds: (exits - 1,)."""
    t = np.asarray(thresholds)[:, None]
    early = score[:-1]
    mask = early <= t if lower_is_confident else early >= t  # (exits - 1, n)
    stop = np.concatenate([mask, np.ones((1, score.shape[1]), dtype=bool)])
    return stop.argmax(0)


def _result(rec: ExitRecord, idx: np.ndarray, pred: np.ndarray, name: str, settings: dict[str, Any]) -> PolicyResult:
    return PolicyResult(idx.astype(np.int64), pred.astype(np.int64), rec.labels, np.asarray(rec.cum_macs), int(rec.full_macs),
                        rec.logits.shape[-1], name, settings)


def _check_record(rec: ExitRecord) -> None:
    if rec.logits.ndim != 3 or rec.num_samples == 0 or rec.num_exits == 0:
        raise ConfigError("The evaluation record holds no samples: there is nothing to apply a policy to.")


def as_thresholds(thresholds: Thresholds, num_exits: int, lo: float, hi: float, what: str) -> np.ndarray:
    """One threshold per early exit, (exits - 1,), from a float or a sequence; range-checked."""
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1:
        raise ConfigError(f"{what}: give one threshold or a list of one per early exit.")
    if t.size == 1:
        t = np.full(num_exits - 1, t[0])
    elif t.size != num_exits - 1:
        raise ConfigError(f"{what}: got {t.size} thresholds; this model has {num_exits - 1} early exits "
                          f"(the last exit always answers), so give 1 or {num_exits - 1}.")
    if np.isnan(t).any() or (t < lo).any() or (t > hi).any():
        raise ConfigError(f"{what}: thresholds must lie in [{lo:g}, {hi:g}], got {t.tolist()}.")
    return t


def _weights(rec_or_n: ExitRecord | int, weights: Sequence[float] | np.ndarray | None) -> np.ndarray:
    n = rec_or_n if isinstance(rec_or_n, int) else rec_or_n.num_exits
    if weights is None:
        info = {} if isinstance(rec_or_n, int) else rec_or_n.info
        weights = info.get("ensemble_weights") or [1.0 / n] * n
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ConfigError(f"aep_ensemble: got {w.size} ensemble weights for {n} exits.")
    if np.isnan(w).any() or (w < 0).any() or w[0] <= 0:
        raise ConfigError(f"aep_ensemble: weights must be >= 0 with a positive first weight, got {w.tolist()}.")
    return w


# ---- rule builders: shared by replay (below) and the runtime -------------------------------------

def max_probability_rule(num_exits: int, thresholds: Thresholds) -> ExitRule:
    """Stop when the exit's top softmax probability is >= the threshold (in [0, 1])."""
    t = as_thresholds(thresholds, num_exits, 0.0, 1.0, "max_probability")
    return ExitRule("max_probability", t, _max_probability_scores, settings={"thresholds": t.tolist()}, local=True)


def entropy_rule(num_exits: int, thresholds: Thresholds) -> ExitRule:
    """Stop when the exit's normalised entropy H(p)/log(classes) is <= the threshold (in [0, 1])."""
    t = as_thresholds(thresholds, num_exits, 0.0, 1.0, "entropy")
    return ExitRule("entropy", t, _entropy_scores, lower_is_confident=True, settings={"thresholds": t.tolist()},
                    local=True)


def eenet_confidence_rule(num_exits: int, thresholds: Thresholds = 0.5, has_confidence: bool = True) -> ExitRule:
    """Stop when the EENet confidence branch output is >= the threshold (in [0, 1]; 0.5 by default)."""
    if not has_confidence:
        raise ConfigError("eenet_confidence needs exits with a learned confidence branch (a model trained with "
                          "--method eenet); this model has none. Use max_probability, entropy or aep_ensemble instead.")
    t = as_thresholds(thresholds, num_exits, 0.0, 1.0, "eenet_confidence")
    return ExitRule("eenet_confidence", t, _eenet_scores, settings={"thresholds": t.tolist()}, local=True)


def aep_ensemble_rule(num_exits: int, thresholds: Thresholds, weights: Sequence[float] | np.ndarray | None = None) -> ExitRule:
    """Stop at exit k when the weighted average of the softmax outputs of exits 0..k has a top probability
    >= the threshold; predict with that ensemble."""
    t = as_thresholds(thresholds, num_exits, 0.0, 1.0, "aep_ensemble")
    w = _weights(num_exits, weights)
    return ExitRule("aep_ensemble", t, _ensemble_score_fn(w), settings={"thresholds": t.tolist(), "weights": w.tolist()},
                    step_scorer=lambda: EnsembleScorer(w))


def patience_rule(num_exits: int, t: int) -> ExitRule:
    """Stop at the first exit where the last `t` exits (itself included) gave the same prediction."""
    if isinstance(t, bool) or not float(t).is_integer() or not 1 <= int(t) <= num_exits:
        raise ConfigError(f"patience: t must be a whole number of exits in 1..{num_exits}, got {t}.")
    return ExitRule("patience", np.full(num_exits - 1, float(t)), _patience_scores, settings={"t": int(t)})


def fixed_exit_rule(num_exits: int, k: int) -> ExitRule:
    """Every sample stops at exit k (0-based)."""
    if isinstance(k, bool) or not float(k).is_integer() or not 0 <= int(k) < num_exits:
        raise ConfigError(f"fixed_exit: k must be an exit index in 0..{num_exits - 1}, got {k}.")
    return ExitRule("fixed_exit", np.full(num_exits - 1, float(k)), _depth_scores, settings={"k": int(k)})


# ---- policies on a record -------------------------------------------------------------------------

def max_probability(rec: ExitRecord, thresholds: Thresholds) -> PolicyResult:
    """Max-probability rule: stop when the top softmax probability reaches the threshold."""
    return max_probability_rule(rec.num_exits, thresholds).replay(rec)


def entropy(rec: ExitRecord, thresholds: Thresholds) -> PolicyResult:
    """Entropy rule: stop when the normalised entropy is at most the threshold."""
    return entropy_rule(rec.num_exits, thresholds).replay(rec)


def eenet_confidence(rec: ExitRecord, thresholds: Thresholds = 0.5) -> PolicyResult:
    """EENet rule: stop when the learned confidence reaches the threshold."""
    return eenet_confidence_rule(rec.num_exits, thresholds, rec.confidences is not None).replay(rec)


def aep_ensemble(rec: ExitRecord, thresholds: Thresholds, weights: Sequence[float] | np.ndarray | None = None) -> PolicyResult:
    """AEP rule: stop when the weighted ensemble of exits 0..k is confident enough (weights default to
    the record's training weights)."""
    if weights is None:
        weights = _weights(rec, None)
    return aep_ensemble_rule(rec.num_exits, thresholds, weights).replay(rec)


def patience(rec: ExitRecord, t: int) -> PolicyResult:
    """Patience rule: stop once t consecutive exits agree."""
    return patience_rule(rec.num_exits, t).replay(rec)


def fixed_exit(rec: ExitRecord, k: int) -> PolicyResult:
    """Anytime view: everyone stops at exit k."""
    return fixed_exit_rule(rec.num_exits, k).replay(rec)


def oracle(rec: ExitRecord) -> PolicyResult:
    """Each sample stops at the first exit that is right; a sample no exit gets right goes to the last
    exit. A reference only: it reads the labels."""
    _check_record(rec)
    pred = rec.logits.argmax(-1)  # (e, n)
    right = pred == rec.labels[None]
    right[-1] = True
    idx = right.argmax(0)
    return _result(rec, idx, pred[idx, np.arange(rec.num_samples)], "oracle", {})


@dataclass(frozen=True)
class PolicyInfo:
    """What the app needs to offer a rule: its setting's name and range, and whether it is per exit
    (for patience and fixed_exit the range is further limited by the model's number of exits)."""

    label: str
    setting: str | None  # keyword of the setting, None for the oracle
    lo: float
    hi: float
    per_exit: bool
    default: float
    needs_confidence: bool = False


POLICIES: dict[str, Callable[..., PolicyResult]] = {
    "max_probability": max_probability, "entropy": entropy, "eenet_confidence": eenet_confidence,
    "aep_ensemble": aep_ensemble, "patience": patience, "fixed_exit": fixed_exit, "oracle": oracle,
}

POLICY_INFO: dict[str, PolicyInfo] = {
    "max_probability": PolicyInfo("Max probability >= t", "thresholds", 0.0, 1.0, True, 0.9),
    "entropy": PolicyInfo("Normalised entropy <= t", "thresholds", 0.0, 1.0, True, 0.3),
    "eenet_confidence": PolicyInfo("EENet confidence >= t", "thresholds", 0.0, 1.0, True, 0.5, needs_confidence=True),
    "aep_ensemble": PolicyInfo("AEP ensemble max probability >= t", "thresholds", 0.0, 1.0, True, 0.9),
    "patience": PolicyInfo("Patience: t exits agree", "t", 1, 10, False, 2),
    "fixed_exit": PolicyInfo("Fixed exit k", "k", 0, 10, False, 0),
    "oracle": PolicyInfo("Oracle (reads labels)", None, 0, 0, False, 0),
}


def apply_policy(rec: ExitRecord, name: str, **settings: Any) -> PolicyResult:
    """Apply the policy called `name` with its settings (e.g. thresholds=0.9, t=2, k=1, weights=[...])."""
    if name not in POLICIES:
        raise ConfigError(f"Unknown exit policy '{name}'. Choose one of: {', '.join(POLICIES)}.")
    try:
        return POLICIES[name](rec, **settings)
    except TypeError as e:
        raise ConfigError(f"Bad settings for policy '{name}': {e}.") from None


def make_rule(name: str, num_exits: int, has_confidence: bool = False, **settings: Any) -> ExitRule:
    """The decision form of a named scored policy (everything but the oracle), for replay or the runtime."""
    builders: dict[str, Callable[..., ExitRule]] = {
        "max_probability": max_probability_rule, "entropy": entropy_rule, "aep_ensemble": aep_ensemble_rule,
        "patience": patience_rule, "fixed_exit": fixed_exit_rule,
        "eenet_confidence": lambda n, thresholds=0.5: eenet_confidence_rule(n, thresholds, has_confidence),
    }
    if name == "oracle":
        raise ConfigError("The oracle reads the labels, so it cannot run on new inputs; it is a reference for replay only.")
    if name not in builders:
        raise ConfigError(f"Unknown exit policy '{name}'. Choose one of: {', '.join(POLICIES)}.")
    try:
        return builders[name](num_exits, **settings)
    except TypeError as e:
        raise ConfigError(f"Bad settings for policy '{name}': {e}.") from None
