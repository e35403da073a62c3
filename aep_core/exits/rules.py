"""Exit rules: the one registry every consumer reads (CLI, app, solvers, runtime, tests), and their replay
on saved per-exit outputs (an ExitRecord), vectorised over samples.

A rule decides, for each sample, the exit it stops at and its prediction there. Every deployable rule
is written in one decision form (an `ExitRule`): a score per exit computed from the outputs of exits
0..k only (so a runtime that stops early computes the same numbers), and a threshold per early exit.
A sample stops at the first exit whose score passes its threshold; the last exit answers whoever is
left. The oracle reads the labels: a reference for replay, never a deployable rule.

Adding a rule is one `@register_rule(RuleSpec(...))` entry on its builder; a rule that thresholds each exit's
own score is one `register_threshold_rule(RuleSpec(...), score_fn)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.registry import Registry

Thresholds = float | Sequence[float] | np.ndarray
# (exits, n, classes) logits, (exits, n) confidences or None -> (exits, n) score, (exits, n) prediction
ScoreFn = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def group_means(groups: np.ndarray, values: np.ndarray, num_groups: int) -> np.ndarray:
    """(num_groups,) mean of `values` (n,) over the samples of each group, `groups` (n,) int (nan for a group
    with no samples)."""
    n = np.bincount(groups, minlength=num_groups).astype(np.float64)
    total = np.bincount(groups, weights=np.asarray(values, dtype=np.float64), minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


@dataclass
class RuleResult:
    """Where each sample stopped and what it predicted, with the metrics of that outcome."""

    exit_index: np.ndarray  # (n,) int
    prediction: np.ndarray  # (n,) int
    labels: np.ndarray  # (n,)
    cum_macs: np.ndarray  # (exits,)
    full_macs: int
    num_classes: int
    rule: str = ""
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
        return group_means(self.exit_index, self.correct, self.num_exits)

    @property
    def per_class_mean_exit(self) -> np.ndarray:
        """(classes,) mean exit index of the samples of each true class (nan for absent classes)."""
        return group_means(self.labels, self.exit_index, self.num_classes)

    def summary(self) -> dict[str, Any]:
        """Plain-type metrics: accuracy, expected MACs, MACs ratio, exit distribution, per-exit accuracy."""
        return {
            "rule": self.rule,
            "settings": self.settings,
            "accuracy": self.accuracy,
            "expected_macs": self.expected_macs,
            "macs_ratio": self.macs_ratio,
            "exit_distribution": self.exit_distribution.tolist(),
            "per_exit_accuracy": [None if math.isnan(v) else v for v in self.per_exit_accuracy.tolist()],
            "per_class_mean_exit": [None if math.isnan(v) else v for v in self.per_class_mean_exit.tolist()],
        }


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
    """A rule in decision form: a sample stops at the first exit k < last whose score passes
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

    def decide_single(self, logits: np.ndarray, confidences: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """Where one input stops, from its per-exit logits (exits, classes) and confidences (exits,) or None:
        (exit index, the rule's score at every exit)."""
        conf = None if confidences is None else confidences[:, None]
        score, _ = self.scores(logits[:, None, :], conf)
        return int(decide(score, self.thresholds, self.lower_is_confident)[0]), score[:, 0]

    def replay(self, rec: ExitRecord) -> RuleResult:
        """Apply the rule to every sample of an evaluation record."""
        _check_record(rec)
        if len(self.thresholds) != rec.num_exits - 1:
            raise ConfigError(
                f"This rule was made for {len(self.thresholds) + 1} exits; the record has {rec.num_exits}."
            )
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


def _result(rec: ExitRecord, idx: np.ndarray, pred: np.ndarray, name: str, settings: dict[str, Any]) -> RuleResult:
    return RuleResult(
        idx.astype(np.int64),
        pred.astype(np.int64),
        rec.labels,
        np.asarray(rec.cum_macs),
        rec.full_macs,
        rec.logits.shape[-1],
        name,
        settings,
    )


def _check_record(rec: ExitRecord) -> None:
    if rec.logits.ndim != 3 or rec.num_samples == 0 or rec.num_exits == 0:
        raise ConfigError("The evaluation record holds no samples: there is nothing to apply an exit rule to.")


def as_thresholds(thresholds: Thresholds, num_exits: int, lo: float, hi: float, what: str) -> np.ndarray:
    """One threshold per early exit, (exits - 1,), from a float or a sequence; range-checked."""
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if t.ndim != 1:
        raise ConfigError(f"{what}: give one threshold or a list of one per early exit.")
    if t.size == 1:
        t = np.full(num_exits - 1, t[0])
    elif t.size != num_exits - 1:
        raise ConfigError(
            f"{what}: got {t.size} thresholds; this model has {num_exits - 1} early exits "
            f"(the last exit always answers), so give 1 or {num_exits - 1}."
        )
    if np.isnan(t).any() or (t < lo).any() or (t > hi).any():
        raise ConfigError(f"{what}: thresholds must lie in [{lo:g}, {hi:g}], got {t.tolist()}.")
    return t


def resolve_ensemble_weights(weights: Sequence[float] | np.ndarray | None, model: ModelExits) -> np.ndarray:
    """The AEP ensemble weights a rule uses: the ones given, else the model's trained weights, else uniform
    (a model trained without ensemble weights). Checked: one per exit, >= 0, the first one positive."""
    n = model.num_exits
    if weights is None:
        weights = model.ensemble_weights if model.ensemble_weights is not None else [1.0 / n] * n
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ConfigError(f"Got {w.size} ensemble weights for {n} exits: give one per exit.")
    if np.isnan(w).any() or (w < 0).any() or w[0] <= 0:
        raise ConfigError(f"Ensemble weights must be >= 0 with a positive first weight, got {w.tolist()}.")
    return w


# ---- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelExits:
    """What a rule needs to know of a model: its exits, whether they have a confidence branch, and its
    trained ensemble weights (None: trained without)."""

    num_exits: int
    has_confidence: bool = False
    ensemble_weights: tuple[float, ...] | None = None

    @classmethod
    def of_record(cls, rec: ExitRecord) -> ModelExits:
        """The facts of the model whose outputs a record holds."""
        w = rec.info.get("ensemble_weights")
        return cls(rec.num_exits, rec.confidences is not None, tuple(float(v) for v in w) if w else None)

    @classmethod
    def of_model(cls, model: Any, ensemble_weights: Sequence[float] | None) -> ModelExits:
        """The facts of an EarlyExitNet and its trained ensemble weights (from its checkpoint)."""
        w = tuple(float(v) for v in ensemble_weights) if ensemble_weights else None
        return cls(model.num_exits, bool(model.has_confidence), w)


@dataclass(frozen=True)
class RuleSetting:
    """The one knob of a rule: its keyword, label, range and default. `hi=None` means bounded by the model
    (patience: up to the number of exits; fixed exit: up to the last exit index)."""

    keyword: str  # "thresholds", "t" or "k": the keyword of make_rule / replay_rule and the CLI flag
    label: str
    help: str
    lo: float
    hi: float | None
    default: float
    per_exit: bool = False  # one value per early exit may be given
    integer: bool = False

    def bounds(self, num_exits: int) -> tuple[float, float]:
        """(lo, hi) for a model with `num_exits` exits."""
        if self.hi is not None:
            return self.lo, self.hi
        return self.lo, float(num_exits if self.keyword == "t" else num_exits - 1)

    def values(self, num_exits: int) -> list[int]:
        """Every value of an integer setting for this model (the sweep of patience or fixed exit)."""
        lo, hi = self.bounds(num_exits)
        return list(range(int(lo), int(hi) + 1))


THRESHOLD = RuleSetting(
    "thresholds", "Threshold t", "one threshold, or one per early exit (comma-separated)", 0.0, 1.0, 0.9, per_exit=True
)


@dataclass(frozen=True)
class RuleSpec:
    """Everything the tool knows of one exit rule: names and help for people, the score and its direction,
    the setting, what the rule needs of the model, and its builder."""

    name: str
    label: str  # short, for pickers: "Max probability >= t"
    help: str  # one sentence: when a sample stops
    score_name: str  # what the score per exit is, e.g. "top probability"
    lower_is_confident: bool  # a sample stops when its score is <= the threshold (else >=)
    setting: RuleSetting | None  # None: the rule has no setting (the oracle)
    needs_confidence: bool = False  # needs exits with a learned confidence branch (EENet heads)
    uses_ensemble_weights: bool = False  # takes `weights`, resolved by resolve_ensemble_weights
    reads_labels: bool = False  # a reference for replay only, never deployable
    build: Callable[..., ExitRule] | None = None  # (model: ModelExits, value, weights) -> ExitRule

    @property
    def deployable(self) -> bool:
        """Whether the rule can run on new inputs (it does not read the labels)."""
        return not self.reads_labels

    @property
    def has_thresholds(self) -> bool:
        """Whether its setting is a threshold per early exit (the solvers and certificates choose those)."""
        return self.setting is not None and self.setting.keyword == "thresholds"

    def available_for(self, model: ModelExits) -> bool:
        """Whether this model can use the rule (a confidence rule needs confidence branches)."""
        return model.has_confidence or not self.needs_confidence


RULES: Registry[RuleSpec] = Registry("exit rule")


def register_rule(spec: RuleSpec) -> Callable[[Callable[..., ExitRule]], Callable[..., ExitRule]]:
    """Decorator registering an exit rule: `spec` describes it, the decorated function builds it."""
    return RULES.register_spec(spec)


def get_rule(name: str) -> RuleSpec:
    """The registered rule called `name`; ConfigError naming the choices otherwise."""
    return RULES.lookup(name)


def list_rules(deployable: bool = False, thresholds: bool = False, model: ModelExits | None = None) -> list[str]:
    """Names of the registered rules, optionally only deployable ones, only threshold rules, or only those
    a model can use."""
    return [
        n
        for n, s in RULES.items()
        if (not deployable or s.deployable)
        and (not thresholds or s.has_thresholds)
        and (model is None or s.available_for(model))
    ]


def register_threshold_rule(spec: RuleSpec, score_fn: ScoreFn) -> None:
    """Register a rule that stops a sample at the first exit whose own score (`score_fn`'s row k depends on exit
    k's outputs alone) passes its threshold in [0, 1], one threshold per early exit."""

    def build(model: ModelExits, thresholds: Thresholds) -> ExitRule:
        t = as_thresholds(thresholds, model.num_exits, 0.0, 1.0, spec.name)
        return ExitRule(spec.name, t, score_fn, spec.lower_is_confident, {"thresholds": t.tolist()}, local=True)

    register_rule(spec)(build)


register_threshold_rule(
    RuleSpec(
        "max_probability",
        "Max probability >= t",
        "Stop at the first exit whose top class probability reaches t.",
        "top class probability",
        False,
        THRESHOLD,
    ),
    _max_probability_scores,
)
register_threshold_rule(
    RuleSpec(
        "entropy",
        "Normalised entropy <= t",
        "Stop at the first exit whose prediction entropy (0 = certain, 1 = uniform) is at most t.",
        "normalised entropy",
        True,
        replace(THRESHOLD, default=0.3),
    ),
    _entropy_scores,
)


@register_rule(
    RuleSpec(
        "aep_ensemble",
        "AEP ensemble max probability >= t",
        "AEP: average the softmax outputs of exits 0..k with the trained ensemble weights; stop "
        "when its top probability reaches t.",
        "ensemble top probability",
        False,
        THRESHOLD,
        uses_ensemble_weights=True,
    )
)
def _aep_ensemble(model: ModelExits, thresholds: Thresholds, weights: Sequence[float] | None = None) -> ExitRule:
    t = as_thresholds(thresholds, model.num_exits, 0.0, 1.0, "aep_ensemble")
    w = resolve_ensemble_weights(weights, model)
    return ExitRule(
        "aep_ensemble",
        t,
        _ensemble_score_fn(w),
        settings={"thresholds": t.tolist(), "weights": w.tolist()},
        step_scorer=lambda: EnsembleScorer(w),
    )


register_threshold_rule(
    RuleSpec(
        "eenet_confidence",
        "EENet confidence >= t",
        "EENets: each exit has a learned confidence branch; stop when it reaches t (models trained "
        "with the EENet method only).",
        "learned confidence",
        False,
        replace(THRESHOLD, default=0.5),
        needs_confidence=True,
    ),
    _eenet_scores,
)


@register_rule(
    RuleSpec(
        "patience",
        "Patience: t exits agree",
        "Stop once t consecutive exits agree on the class.",
        "consecutive agreeing exits",
        False,
        RuleSetting(
            "t", "Patience t (exits that must agree)", "patience: exits that must agree", 1, None, 2, integer=True
        ),
    )
)
def _patience(model: ModelExits, t: int) -> ExitRule:
    if isinstance(t, bool) or not float(t).is_integer() or not 1 <= int(t) <= model.num_exits:
        raise ConfigError(f"patience: t must be a whole number of exits in 1..{model.num_exits}, got {t}.")
    return ExitRule("patience", np.full(model.num_exits - 1, float(t)), _patience_scores, settings={"t": int(t)})


@register_rule(
    RuleSpec(
        "fixed_exit",
        "Fixed exit k",
        "Every sample stops at exit k (0-based): the anytime view.",
        "exit index",
        False,
        RuleSetting("k", "Exit k", "fixed_exit: the exit everyone stops at", 0, None, 0, integer=True),
    )
)
def _fixed_exit(model: ModelExits, k: int) -> ExitRule:
    if isinstance(k, bool) or not float(k).is_integer() or not 0 <= int(k) < model.num_exits:
        raise ConfigError(f"fixed_exit: k must be an exit index in 0..{model.num_exits - 1}, got {k}.")
    return ExitRule("fixed_exit", np.full(model.num_exits - 1, float(k)), _depth_scores, settings={"k": int(k)})


RULES["oracle"] = RuleSpec(
    "oracle",
    "Oracle (reads labels)",
    "Each sample stops at the first exit that is right: the bound no rule can beat (it reads "
    "the labels, so it is a reference, not a rule to deploy).",
    "first right exit",
    False,
    None,
    reads_labels=True,
)


def oracle(rec: ExitRecord) -> RuleResult:
    """Each sample stops at the first exit that is right; a sample no exit gets right goes to the last
    exit. A reference only: it reads the labels."""
    _check_record(rec)
    pred = rec.logits.argmax(-1)  # (e, n)
    right = pred == rec.labels[None]
    right[-1] = True
    idx = right.argmax(0)
    return _result(rec, idx, pred[idx, np.arange(rec.num_samples)], "oracle", {})


def make_rule(name: str, model: ModelExits, **settings: Any) -> ExitRule:
    """The decision form of a deployable rule for this model, from its setting (thresholds=..., t=..., k=...)
    and, for ensemble rules, optional `weights` (default: the model's trained weights)."""
    spec = get_rule(name)
    if spec.reads_labels or spec.build is None:
        raise ConfigError(
            f"The {name} reads the labels, so it cannot run on new inputs; it is a reference for replay only."
        )
    if not spec.available_for(model):
        raise ConfigError(
            f"{name} needs exits with a learned confidence branch (a model trained with --method eenet); "
            f"this model has none. Use one of: {', '.join(list_rules(deployable=True, model=model))}."
        )
    allowed = {spec.setting.keyword} if spec.setting is not None else set()
    if spec.uses_ensemble_weights:
        allowed.add("weights")
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigError(
            f"Bad settings for rule '{name}': it takes {', '.join(sorted(allowed)) or 'none'}, "
            f"got {', '.join(sorted(unknown))}."
        )
    kwargs = dict(settings)
    if spec.setting is not None:
        kwargs.setdefault(spec.setting.keyword, spec.setting.default)
    return spec.build(model, **kwargs)


def replay_rule(rec: ExitRecord, name: str, **settings: Any) -> RuleResult:
    """Replay the rule called `name` with its settings (e.g. thresholds=0.9, t=2, k=1, weights=[...]) on a
    record; ensemble weights default to the record's trained weights."""
    if get_rule(name).reads_labels:
        if settings:
            raise ConfigError(f"The {name} takes no settings, got {', '.join(sorted(settings))}.")
        return oracle(rec)
    return make_rule(name, ModelExits.of_record(rec), **settings).replay(rec)
