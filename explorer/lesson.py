"""The Learn page's material: its ten steps, their questions, and each step's numbers and examples, prepared from
the shipped models' saved outputs and the shipped test slice. The lesson reads one shipped model (LESSON_MODEL) and the
few it compares with by path, never the sidebar's model, so every student sees the same lesson; nothing here
trains, and the only network that runs is step 1's timing of one image.

Pure functions take records and return plain values; the loaders at the end read and cache the shipped files on
their path and modification time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from aep_core.analysis.calibration import exit_calibration, fit_temperatures, scale_record
from aep_core.analysis.pruning import choose_cut
from aep_core.checkpoint import CheckpointMeta, load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cost import compare_latency, latency_ratio
from aep_core.data import load_slice
from aep_core.deploy.simulator import DEFAULT_GMACS, DEFAULT_LINKS, FeatureSizes, feature_sizes, make_deployment
from aep_core.deploy.simulator import simulate as simulate_deployment
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.cascade import cascade_replay, cascade_sweep, check_cascade_pair
from aep_core.exits.rules import ModelExits, RuleResult, oracle, replay_rule, resolve_ensemble_weights
from aep_core.exits.solvers import Sweep, pareto_front, pareto_sweep
from aep_core.models import EarlyExitNet
from aep_core.models.inference import as_model_input, prepare_for_inference
from aep_core.paths import data_slice_path, shipped_models_dir
from aep_core.threads import cpu_threads

# Every step but 8 is about one shipped model with exits along a single backbone (the default is a cascade of
# separate networks, which step 10 shows as the alternative).
LESSON_MODEL = "aep_hybrid"
RULE = "max_probability"
THRESHOLD = 0.9  # the max-probability threshold of steps 2 and 9 (the sidebar's default)
SMALL_STATIC = "static_w025"  # the cascade's small network (step 10)
STATICS = {
    "static_w025": "static, 1/4 width",
    "static_w050": "static, 1/2 width",
    "static_w075": "static, 3/4 width",
    "static_shallow": "static, 1 conv per stage",
}
EENETS = ("eenet_l01", "eenet_l05", "eenet_l2")
EENET_RULE = "eenet_confidence"
EENET_THRESHOLD = 0.5  # the rule's default
DEVICE_GMACS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # device speeds offered in step 9
QUESTION_GMACS = 0.5  # the device of step 9's question
CLOUD_GMACS = DEFAULT_GMACS[2][0]  # step 9's cloud and link: the Deploy page's defaults for two tiers
LINK_MBPS, LINK_MS = DEFAULT_LINKS[2][0]
# Thresholds of step 10's curves: a coarse grid plus the top end, where most of the change happens.
CURVE_GRID = np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, 101), 1.0 - np.logspace(-5, -2, 13)]), 8))
TIMING_ROUNDS = 30  # step 1's timing: rounds that each time every exit once, in rotating order


# ---- the steps and their questions --------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of the lesson: its number, title, and the full page of the app for its idea."""

    number: int
    title: str
    page: str  # path of the page file, e.g. "pages/thresholds.py"
    page_title: str


STEPS = (
    Step(1, "What an exit is, and what it costs", "pages/overview.py", "Overview"),
    Step(2, "Easy and hard inputs", "pages/try_image.py", "Try an image"),
    Step(3, "Overthinking", "pages/try_image.py", "Try an image"),
    Step(4, "The trade-off", "pages/thresholds.py", "Thresholds"),
    Step(5, "Confidence is not probability", "pages/calibration.py", "Calibration"),
    Step(6, "AEP: averaging the exits", "pages/ensemble.py", "Ensemble weights"),
    Step(7, "Pruning", "pages/pruning.py", "Pruning savings"),
    Step(8, "EENets: a network that learns when to stop", "pages/train.py", "Train"),
    Step(9, "Deployment: splitting the network across machines", "pages/deploy.py", "Deploy"),
    Step(10, "When early exits pay, and when they don't", "pages/thresholds.py", "Thresholds"),
)
NUM_STEPS = len(STEPS)


def parse_step(raw: str | None) -> tuple[int | None, str | None]:
    """The step a link's `step` value names, or None with a note saying why it names none (None, None when
    there is no value)."""
    if raw is None:
        return None, None
    text = str(raw).strip()
    if text.isdigit() and 1 <= int(text) <= NUM_STEPS:
        return int(text), None
    shown = text if len(text) <= 20 else text[:17] + "..."
    return None, f"`step={shown}` is not a step of this lesson (1 to {NUM_STEPS}), so it starts at step 1."


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: the options, the right one, and for each option why it is right or wrong."""

    prompt: str
    options: tuple[str, ...]
    correct: int
    why: tuple[str, ...]

    def feedback(self, option: str) -> tuple[bool, str]:
        """Whether `option` is the right answer, and the explanation of that option."""
        k = self.options.index(option)
        return k == self.correct, self.why[k]


def pct(x: float, digits: int = 1) -> str:
    """A share as a percentage, e.g. 0.9405 -> '94.0%'."""
    return f"{100 * x:.{digits}f}%"


# ---- step 1: what an exit costs ------------------------------------------------------------------


@dataclass(frozen=True)
class ExitCosts:
    """What a sample answered at each exit pays: MACs, and their two parts as shares of the network without exits
    (its own layers, and the early exits' heads on the way)."""

    macs: list[int]  # (exits,)
    network: list[float]  # (exits,)
    heads: list[float]  # (exits,)
    full_macs: int

    @property
    def total(self) -> list[float]:
        """(exits,) the whole cost as a share of the network without exits."""
        return [n + h for n, h in zip(self.network, self.heads, strict=True)]


def exit_costs(meta: CheckpointMeta) -> ExitCosts:
    """The per-exit costs stored in a checkpoint's metadata."""
    network, heads = meta.cost.macs_split()
    return ExitCosts(list(meta.cost.cum_macs), network, heads, meta.cost.full_macs)


@dataclass(frozen=True)
class ExitTimes:
    """Measured time for one image to reach each exit, and for the network without exits."""

    ms: list[float]  # (exits,) median milliseconds to reach each exit
    share: list[float]  # (exits,) median per-round ratio of that time to the network without exits
    full_ms: float  # median milliseconds of the network without exits


@torch.inference_mode()
def exit_times(model: EarlyExitNet, input_shape: tuple[int, int, int], rounds: int = TIMING_ROUNDS) -> ExitTimes:
    """Time one image (batch 1, one thread) to each exit and through the network without exits, all timed together
    in rotating order so that the machine's load hits them alike; the model runs as deployed (BatchNorm folded,
    channels-last)."""
    prepared = prepare_for_inference(model)
    x = as_model_input(torch.zeros(1, *input_shape))
    fns = {f"exit {k}": (lambda k=k: prepared(x, upto=k)) for k in range(model.num_exits)}
    fns["without exits"] = lambda: prepared.forward_final(x)
    with cpu_threads(1):
        stats = compare_latency(fns, rounds=rounds, warmup=3)
    full = stats.pop("without exits")
    return ExitTimes(
        [1e3 * s.median for s in stats.values()],
        [latency_ratio(s, full).median for s in stats.values()],
        1e3 * full.median,
    )


def heads_question(costs: ExitCosts) -> Question:
    """Why the last exit costs more than the network without exits."""
    total, heads = costs.total[-1], costs.heads[-1]
    right = (
        f"Right: an image that travels to the end also ran the heads of the {len(costs.macs) - 1} early exits it "
        f"passed ({pct(heads, 2)} of the network), which the network without exits never runs."
    )
    options = (
        "The early exits' heads it passed on the way were computed too.",
        "The last block of an early-exit network is bigger than in the network without exits.",
        "It is a rounding error in the MACs count.",
    )
    why = (
        right,
        "No: the blocks are the same; the backbone share at the last exit is exactly 100%. The extra comes from "
        "the heads of the early exits it passed.",
        f"No: MACs are counted exactly, and {pct(heads, 2)} extra is the early exits' heads, which an image that "
        "reaches the end has run.",
    )
    correct = 0 if heads > 0 else 2
    prompt = (
        f"An image that travels to the last exit costs {pct(total)} of the network without exits. Why more than 100%?"
    )
    return Question(prompt, options, correct, why)


# ---- step 2: easy and hard inputs ------------------------------------------------------------------


def replay_at(test: ExitRecord, threshold: float = THRESHOLD) -> RuleResult:
    """Where every test image stops under max probability >= threshold."""
    return replay_rule(test, RULE, thresholds=float(threshold))


def slice_images_at_exit(result: RuleResult, indices: np.ndarray, k: int, limit: int = 8) -> list[int]:
    """Positions in the shipped slice of the first `limit` images that stop at exit k (the slice's image i is the
    test record's row indices[i])."""
    stops = result.exit_index[indices]
    return [int(i) for i in np.flatnonzero(stops == k)[:limit]]


def class_depth_question(result: RuleResult, class_names: list[str]) -> Question:
    """Which of four classes leaves the network earliest on average (the earliest of all, the latest of all and
    two in between)."""
    depth = result.per_class_mean_exit
    order = [int(c) for c in np.argsort(depth, kind="stable") if not np.isnan(depth[c])]
    middle = order[len(order) // 3], order[2 * len(order) // 3]
    chosen = sorted({order[0], order[-1], *middle})
    why = []
    for c in chosen:
        where = f"its test images stop at exit {depth[c]:.2f} on average"
        if c == order[0]:
            why.append(
                f"Right: {where}, the earliest of all {len(order)} classes; they look alike and unlike the rest."
            )
        elif c == order[-1]:
            why.append(f"No: {where}, the latest of all classes; it is easily confused with similar garments.")
        else:
            why.append(f"No: {where}; {class_names[order[0]]} leaves earlier ({depth[order[0]]:.2f}).")
    return Question(
        f"At threshold {THRESHOLD:g}, which of these classes leaves the network earliest on average?",
        tuple(class_names[c] for c in chosen),
        chosen.index(order[0]),
        tuple(why),
    )


# ---- step 3: overthinking --------------------------------------------------------------------------


@dataclass(frozen=True)
class Overthinking:
    """How often some exit is right, the final exit is right, and an early exit is right while the final one is
    wrong (overthinking), on the whole test split; with the slice's overthought images."""

    samples: int
    right_somewhere: float
    final_right: float
    first_right: float
    overthought: int
    examples: list[int]  # positions in the shipped slice of overthought images


def overthinking(test: ExitRecord, indices: np.ndarray) -> Overthinking:
    """Overthinking on a test record, with the shipped slice's examples of it."""
    right = test.logits.argmax(-1) == test.labels[None]  # (exits, n)
    over = right[:-1].any(0) & ~right[-1]  # (n,)
    return Overthinking(
        test.num_samples,
        float(right.any(0).mean()),
        float(right[-1].mean()),
        float(right[0].mean()),
        int(over.sum()),
        [int(i) for i in np.flatnonzero(over[indices])],
    )


def exit_answers(test: ExitRecord, row: int, class_names: list[str]) -> list[dict[str, Any]]:
    """Each exit's answer for one test image: the predicted class, its probability, and whether it is right."""
    probs = test.probs()[:, row]  # (exits, classes)
    label = int(test.labels[row])
    return [
        {
            "exit": f"exit {k}",
            "predicts": class_names[int(p.argmax())],
            "probability": round(float(p.max()), 3),
            "right": "yes" if int(p.argmax()) == label else "no",
        }
        for k, p in enumerate(probs)
    ]


def bound_question(o: Overthinking) -> Question:
    """The best accuracy any exit rule could reach on this network: the share right at some exit."""
    values = {
        "somewhere": o.right_somewhere,
        "final": o.final_right,
        "first": o.first_right,
        "all": 1.0,
    }
    why = {
        "somewhere": f"Right: a perfect rule would stop each image at an exit that gets it right, and "
        f"{pct(o.right_somewhere)} of the test images have one; no rule can do better on this network.",
        "final": f"No: {pct(o.final_right)} is the final exit alone; a rule that stops the {o.overthought:,} "
        "overthought images early could do better than the final exit.",
        "first": f"No: {pct(o.first_right)} is the first exit alone, the cheapest choice, not the best.",
        "all": f"No: {pct(1 - o.right_somewhere)} of the test images are wrong at every exit; no rule can fix those.",
    }
    shown: dict[str, str] = {}
    for k in ("somewhere", "final", "first", "all"):  # equal values are offered once, the right one first
        if pct(values[k]) not in shown.values():
            shown[k] = pct(values[k])
    keys = sorted(shown, key=lambda k: values[k])
    return Question(
        "What is the highest accuracy any exit rule could reach with this network on these test images?",
        tuple(pct(values[k]) for k in keys),
        keys.index("somewhere"),
        tuple(why[k] for k in keys),
    )


# ---- step 4: the trade-off -------------------------------------------------------------------------


def tradeoff_sweep(test: ExitRecord) -> Sweep:
    """Accuracy against MACs share over a sweep of max-probability thresholds."""
    return pareto_sweep(test, RULE, points=80)


def oracle_point(test: ExitRecord) -> tuple[float, float]:
    """(MACs share, accuracy) of the oracle, which stops each image at the first exit that is right."""
    result = oracle(test)
    return result.macs_ratio, result.accuracy


def direction_question(test: ExitRecord, lo: float = 0.5, hi: float = 0.99) -> Question:
    """What happens to accuracy and compute when the threshold rises from `lo` to `hi`."""
    a, b = replay_at(test, lo), replay_at(test, hi)
    acc_up, macs_up = b.accuracy >= a.accuracy, b.macs_ratio >= a.macs_ratio
    options = (
        "Accuracy and compute both rise.",
        "Accuracy rises and compute falls.",
        "Accuracy falls and compute rises.",
        "Accuracy and compute both fall.",
    )
    correct = {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(acc_up, macs_up)]
    facts = (
        f"from {lo:g} to {hi:g}, accuracy goes from {pct(a.accuracy, 2)} to {pct(b.accuracy, 2)} and compute "
        f"from {pct(a.macs_ratio)} to {pct(b.macs_ratio)} of the network"
    )
    why = tuple(
        (
            f"Right: {facts}. A higher bar keeps more images travelling deeper, where they cost more."
            if k == correct
            else f"No: {facts}."
        )
        for k in range(len(options))
    )
    return Question(f"You raise the threshold from {lo:g} to {hi:g}. What happens?", options, correct, why)


# ---- step 5: confidence is not probability -----------------------------------------------------------


@dataclass(frozen=True)
class CalibrationView:
    """Calibration of every exit on test, before and after temperature scaling fitted on validation."""

    temperatures: list[float]
    before: list[dict[str, Any]]  # CalibrationMetrics.summary() per exit
    after: list[dict[str, Any]]
    mean_confidence: list[float]  # (exits,) mean top probability before scaling
    accuracy: list[float]  # (exits,)
    changed_predictions: int  # test predictions that scaling changed, over every exit


def calibration_view(val: ExitRecord, test: ExitRecord) -> CalibrationView:
    """Reliability of each exit on test, before and after per-exit temperatures fitted on validation."""
    temperatures = fit_temperatures(val)
    scaled = scale_record(test, temperatures)
    return CalibrationView(
        [float(t) for t in temperatures],
        [m.summary() for m in exit_calibration(test)],
        [m.summary() for m in exit_calibration(scaled)],
        test.probs().max(-1).mean(1).tolist(),
        test.exit_accuracy().tolist(),
        int((scaled.logits.argmax(-1) != test.logits.argmax(-1)).sum()),
    )


def confidence_question(view: CalibrationView, k: int = 0, margin: float = 0.002) -> Question:
    """Whether exit k is right more or less often than its mean confidence says (within `margin`: as often)."""
    conf, acc = view.mean_confidence[k], view.accuracy[k]
    gap = acc - conf
    correct = 0 if gap > margin else 1 if gap < -margin else 2
    facts = f"exit {k} is on average {pct(conf)} sure and right on {pct(acc)} of the test images"
    options = (
        "More often than it says: it is under-confident.",
        "Less often than it says: it is over-confident.",
        "About as often as it says: it is calibrated.",
    )
    fix = (
        f"Temperature scaling (T = {view.temperatures[k]:.2f}, fitted on validation) "
        f"{'sharpens' if view.temperatures[k] < 1 else 'softens'} its probabilities to close the gap."
    )
    why = tuple(f"Right: {facts}. {fix}" if i == correct else f"No: {facts}." for i in range(len(options)))
    return Question(f"Exit {k} says it is {pct(conf)} sure on average. How often is it right?", options, correct, why)


# ---- step 6: AEP ensembles ----------------------------------------------------------------------


def weight_choices(test: ExitRecord) -> dict[str, np.ndarray]:
    """Ensemble weights to compare: the model's trained ones, every exit alike, and deeper exits counting more."""
    n = test.num_exits
    return {
        "the model's trained weights": resolve_ensemble_weights(None, ModelExits.of_record(test)),
        "every exit counts the same": np.ones(n),
        "deeper exits count more (1, 2, 3, ...)": np.arange(1.0, n + 1),
    }


def uniform_question(test: ExitRecord) -> Question:
    """Whether the equal-weight ensemble of every exit beats the final exit alone."""
    ensemble = float(test.ensemble_accuracy(np.ones(test.num_exits))[-1])
    final = float(test.exit_accuracy()[-1])
    correct = 0 if ensemble > final else 1 if ensemble < final else 2
    facts = f"the equal-weight ensemble of all exits reaches {pct(ensemble, 2)}, the final exit alone {pct(final, 2)}"
    options = (
        "The ensemble is more accurate.",
        "The final exit alone is more accurate.",
        "They are exactly as accurate.",
    )
    lesson = (
        "Averaging helps when the exits are about as good and make different mistakes."
        if correct == 0
        else "The early exits are much weaker than the final one, and equal weights let their mistakes outvote it; "
        "averaging helps only when the exits are about as good and make different mistakes."
    )
    why = tuple(f"Right: {facts}. {lesson}" if i == correct else f"No: {facts}." for i in range(len(options)))
    return Question(
        "Give every exit the same weight. On the test images, is the ensemble of all exits more accurate than the "
        "final exit alone?",
        options,
        correct,
        why,
    )


# ---- step 7: pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneView:
    """The cut AEP pruning chooses on validation at one tolerance, and what it saves and costs on test."""

    tolerance: float  # accuracy fraction
    cut: int
    exits_removed: int
    macs_share: float  # MACs of the pruned network (every kept exit run) / MACs of the model with all exits
    val_accuracy: list[float]  # (exits,) the ensemble of exits 0..k on validation
    test_accuracy: list[float]  # (exits,) on test


def prune_view(val: ExitRecord, test: ExitRecord, tolerance: float) -> PruneView:
    """AEP pruning at `tolerance` (accuracy fraction): the cut chosen on validation, its savings and accuracy."""
    weights = resolve_ensemble_weights(None, ModelExits.of_record(val))
    cut = choose_cut(val, weights, tolerance)
    return PruneView(
        tolerance,
        cut,
        val.num_exits - 1 - cut,
        float(val.cum_macs[cut] / val.cum_macs[-1]),
        val.ensemble_accuracy(weights).tolist(),
        test.ensemble_accuracy(weights).tolist(),
    )


def zero_tolerance_question(val: ExitRecord, test: ExitRecord) -> Question:
    """What pruning removes at zero tolerance."""
    view = prune_view(val, test, 0.0)
    removed = view.exits_removed
    correct = 0 if removed == 0 else 1 if removed == 1 else 2
    best = f"on validation the ensemble is most accurate at exit {view.cut} ({pct(view.val_accuracy[view.cut], 2)})"
    lesson = (
        "Every exit still adds accuracy, so at zero tolerance there is nothing to cut; pruning pays only when you "
        "accept a small loss."
        if removed == 0
        else "The exits after it add nothing on validation, so they go."
    )
    options = (
        "Nothing: every exit is kept.",
        "The last block and its exit.",
        "Two or more blocks and their exits.",
    )
    why = tuple(f"Right: {best}. {lesson}" if i == correct else f"No: {best}." for i in range(len(options)))
    return Question("At zero tolerance, what does pruning cut from this model?", options, correct, why)


# ---- step 8: EENets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EENetView:
    """One EENet under its confidence rule: the cost weight it was trained with, and where its images stop."""

    name: str
    lam: float | None
    accuracy: float
    macs_ratio: float
    exit_distribution: list[float]  # (exits,)
    mean_confidence: list[float]  # (exits,) the confidence branch's mean output on test
    exit_accuracy: list[float]  # (exits,)


def eenet_view(name: str, meta: CheckpointMeta, test: ExitRecord) -> EENetView:
    """An EENet's test outcome under its learned-confidence rule at the default threshold."""
    if test.confidences is None:
        raise AepError(f"{name} has no confidence branches: it is not an EENet.")
    result = replay_rule(test, EENET_RULE, thresholds=EENET_THRESHOLD)
    lam = meta.training.settings.get("lam")
    return EENetView(
        name,
        None if lam is None else float(lam),
        result.accuracy,
        result.macs_ratio,
        result.exit_distribution.tolist(),
        test.confidences.mean(1).tolist(),
        test.exit_accuracy().tolist(),
    )


def lam_label(view: EENetView) -> str:
    """How a picker names an EENet: by its cost weight."""
    return f"λ = {view.lam:g}" if view.lam is not None else view.name


def earliest_question(views: list[EENetView]) -> Question:
    """Which cost weight makes the network stop earliest (the least compute on average)."""
    order = sorted(range(len(views)), key=lambda i: views[i].macs_ratio)
    correct = order[0]
    why = []
    for i, v in enumerate(views):
        facts = (
            f"with {lam_label(v)} images pay {pct(v.macs_ratio)} of the network on average, at "
            f"{pct(v.accuracy, 2)} accuracy"
        )
        why.append(
            f"Right: {facts}. A heavier cost term teaches the confidence branches to say 'stop' sooner, at a price "
            "in accuracy."
            if i == correct
            else f"No: {facts}; {lam_label(views[correct])} stops sooner."
        )
    return Question(
        f"Trained with three cost weights λ, run with confidence >= {EENET_THRESHOLD:g}: which stops earliest?",
        tuple(lam_label(v) for v in views),
        correct,
        tuple(why),
    )


# ---- step 9: deployment ---------------------------------------------------------------------------


def split_label(split: int, num_exits: int) -> str:
    """How a split point reads: where the device hands over to the cloud."""
    if split < 0:
        return "send the image to the cloud"
    if split >= num_exits - 1:
        return "everything on the device"
    return f"device up to exit {split}, then the cloud"


def split_latencies(test: ExitRecord, sizes: FeatureSizes, device_gmacs: float) -> list[dict[str, Any]]:
    """Mean and 95th-percentile latency, and the share answered on the device, for every split point of a device
    and cloud deployment (the app's default cloud and link), max probability >= THRESHOLD."""
    rows = []
    for split in range(-1, test.num_exits):
        if split == test.num_exits - 1:
            dep = make_deployment([device_gmacs * 1e9], [], [], [])
        else:
            dep = make_deployment([device_gmacs * 1e9, CLOUD_GMACS * 1e9], [LINK_MBPS], [LINK_MS], [split])
        result = simulate_deployment(test, sizes, dep, RULE, thresholds=THRESHOLD)
        stats = result.latency_stats()
        rows.append(
            {
                "split": split,
                "where": split_label(split, test.num_exits),
                "mean ms": 1e3 * stats["mean"],
                "p95 ms": 1e3 * stats["p95"],
                "answered on the device": float(result.tier_share[0]) if split >= 0 else 0.0,
            }
        )
    return rows


def fastest_split_question(test: ExitRecord, sizes: FeatureSizes, device_gmacs: float = QUESTION_GMACS) -> Question:
    """Which split point gives the lowest mean latency on a slow device."""
    rows = split_latencies(test, sizes, device_gmacs)
    best = min(range(len(rows)), key=lambda i: rows[i]["mean ms"])
    why = tuple(
        (
            f"Right: {r['mean ms']:.1f} ms on average, the fastest."
            if i == best
            else f"No: {r['mean ms']:.1f} ms on average; '{rows[best]['where']}' takes {rows[best]['mean ms']:.1f} ms."
        )
        for i, r in enumerate(rows)
    )
    return Question(
        f"On a device that does {device_gmacs:g} GMAC/s, which split gives the lowest mean latency?",
        tuple(r["where"] for r in rows),
        best,
        why,
    )


# ---- step 10: when early exits pay -----------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One way to classify the test images: its name, kind, MACs share of the lesson model and accuracy."""

    name: str
    kind: str
    macs: float
    accuracy: float
    setting: float | None = None  # the threshold of a curve's point


@dataclass(frozen=True)
class Comparison:
    """The lesson model's early-exit curve, the shipped static networks and a two-network cascade, on test, with every
    threshold chosen on validation; MACs as a share of the lesson model without exits."""

    early_exit: list[Point]
    cascade: list[Point]
    statics: list[Point]
    first_exit: Point
    final_exit: Point


EARLY_EXIT, CASCADE, STATIC, SINGLE = (
    "early exits (lesson model)",
    "cascade",
    "static network",
    "one exit of the lesson model",
)


def _chosen_on_validation(val_macs: np.ndarray, val_acc: np.ndarray) -> np.ndarray:
    """(p,) bool: the grid's settings on the validation Pareto front, one per distinct outcome."""
    front = pareto_front(val_macs, val_acc)
    _, first = np.unique(np.stack([val_macs, val_acc]).round(12), axis=1, return_index=True)
    kept = np.zeros(len(val_macs), dtype=bool)
    kept[first] = True
    return front & kept


def comparison(
    default_val: ExitRecord,
    default_test: ExitRecord,
    statics: dict[str, tuple[str, ExitRecord]],
    small_val: ExitRecord,
    small_test: ExitRecord,
) -> Comparison:
    """The lesson model's early-exit curve (max probability), the static networks (one point each) and the cascade of
    the small static network and that model's final exit, thresholds chosen on validation, shown on test."""
    full = float(default_test.full_macs)
    grid = CURVE_GRID
    val_sweep = pareto_sweep(default_val, RULE, grid=grid)
    test_sweep = pareto_sweep(default_test, RULE, grid=grid)
    keep = _chosen_on_validation(val_sweep.macs_ratio, val_sweep.accuracy)
    early = [
        Point(EARLY_EXIT, EARLY_EXIT, float(m), float(a), float(t))
        for t, m, a, k in zip(grid, test_sweep.macs_ratio, test_sweep.accuracy, keep, strict=True)
        if k
    ]
    check_cascade_pair(small_val, default_val)
    val_cascade = cascade_sweep(small_val, default_val, grid)
    keep = _chosen_on_validation(
        np.array([r.macs_ratio for r in val_cascade]), np.array([r.accuracy for r in val_cascade])
    )
    cascade = [
        Point(CASCADE, CASCADE, r.macs_ratio, r.accuracy, r.threshold)
        for r, k in zip(cascade_sweep(small_test, default_test, grid), keep, strict=True)
        if k
    ]
    static_points = []
    for name, (label, record) in statics.items():
        if not np.array_equal(record.labels, default_test.labels):
            raise AepError(f"{name}'s test outputs are not on the lesson model's test images in the same order.")
        static_points.append(Point(label, STATIC, float(record.cum_macs[-1]) / full, float(record.exit_accuracy()[-1])))
    cost = np.asarray(default_test.cum_macs, dtype=np.float64) / full
    accuracy = default_test.exit_accuracy()
    last = default_test.num_exits - 1
    return Comparison(
        early,
        cascade,
        static_points,
        Point("first exit", SINGLE, float(cost[0]), float(accuracy[0])),
        Point("final exit", SINGLE, float(cost[last]), float(accuracy[last])),
    )


def cheapest_question(comp: Comparison) -> Question:
    """Which of the first exit and the static networks is the cheapest at least as accurate as the first exit."""
    first = comp.first_exit
    candidates = [first, *comp.statics]
    good = [p for p in candidates if p.accuracy >= first.accuracy]
    best = min(good, key=lambda p: p.macs)
    names = tuple("the lesson model's first exit" if p is first else p.name for p in candidates)
    why = []
    for p, name in zip(candidates, names, strict=True):
        facts = f"{name}: {pct(p.accuracy, 2)} at {pct(p.macs)} of the lesson model's MACs"
        if p is best:
            why.append(
                f"Right: {facts}, the cheapest of those at least as accurate as the first exit. Ask this of any "
                "early-exit claim: would a smaller plain network do as well for less?"
            )
        elif p.accuracy < first.accuracy:
            why.append(f"No: {facts}, less accurate than the first exit.")
        else:
            why.append(f"No: {facts}; {best.name if best is not first else 'the first exit'} costs less.")
    return Question(
        f"The lesson model's first exit reaches {pct(first.accuracy, 2)} at {pct(first.macs)} of its MACs. Which is "
        "the cheapest way to be at least that accurate?",
        names,
        candidates.index(best),
        tuple(why),
    )


def cascade_at(small_test: ExitRecord, default_test: ExitRecord, t: float) -> tuple[Point, float]:
    """The cascade at threshold t on test, and the share of images the small network answered."""
    r = cascade_replay(small_test, default_test, t)
    return Point(f"cascade, t = {t:g}", CASCADE, r.macs_ratio, r.accuracy, t), r.small_share


# ---- the shipped files, read once per path and modification time --------------------------------------


def shipped_checkpoint(name: str) -> Path:
    """Where the shipped model `name` lives."""
    return shipped_models_dir() / f"{name}.pt"


def _mtime(path: Path, what: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        raise AepError(
            f"The lesson needs {what} {path}, which is missing. It ships with the project: restore the "
            "`assets/` folder (or point AEP_ASSETS_DIR at a copy)."
        ) from None


@st.cache_resource(show_spinner=False, max_entries=48)
def _record(path: str, mtime: float) -> ExitRecord:
    # Shared by every session; the lesson only reads it.
    return load_evaluation(path)


def records(name: str) -> tuple[ExitRecord, ExitRecord]:
    """The shipped model's validation and test records. AepError if either is missing or unreadable."""
    out = []
    for split in ("val", "test"):
        path = evaluation_path(shipped_checkpoint(name), split)
        out.append(_record(str(path), _mtime(path, f"the {split} outputs of the shipped model {name},")))
    return out[0], out[1]


def record_key(name: str) -> str:
    """A plain value naming the shipped model's records as they are on disk (for caches)."""
    paths = [evaluation_path(shipped_checkpoint(name), s) for s in ("val", "test")]
    return "|".join(f"{p}@{_mtime(p, f'the outputs of the shipped model {name},')}" for p in paths)


@st.cache_resource(show_spinner="Loading the lesson's model...", max_entries=8)
def _checkpoint(path: str, mtime: float) -> tuple[EarlyExitNet, CheckpointMeta]:
    return load_checkpoint(path)


def checkpoint(name: str) -> tuple[EarlyExitNet, CheckpointMeta]:
    """The shipped model and its metadata (weights only read). AepError if missing or unreadable."""
    path = shipped_checkpoint(name)
    return _checkpoint(str(path), _mtime(path, "the shipped model"))


@st.cache_resource(show_spinner=False, max_entries=2)
def _slice(path: str, mtime: float) -> dict[str, np.ndarray]:
    return load_slice(path)


def shipped_slice(test: ExitRecord) -> dict[str, np.ndarray]:
    """The shipped test slice (images, labels, indices into the test split), checked against the test record's
    labels. AepError if missing or if it does not match."""
    path = data_slice_path()
    data = _slice(str(path), _mtime(path, "the shipped test slice"))
    indices = data["indices"]
    if indices.max(initial=-1) >= test.num_samples or not np.array_equal(test.labels[indices], data["labels"]):
        raise AepError("The shipped slice's images are not rows of the lesson model's test outputs.")
    return data


@st.cache_data(show_spinner="Timing one image through each exit...", max_entries=8)
def _times(key: str, _model: EarlyExitNet, input_shape: tuple[int, int, int]) -> tuple[ExitTimes, str]:
    return exit_times(_model, input_shape), time.strftime("%H:%M")


def measured_times(name: str) -> tuple[ExitTimes, str]:
    """exit_times of the shipped model, timed once on this server per model file, and when."""
    model, meta = checkpoint(name)
    path = shipped_checkpoint(name)
    return _times(f"{path}@{_mtime(path, 'the shipped model')}", model, tuple(meta.dataset.input_shape))


@st.cache_data(show_spinner=False, max_entries=8)
def _sizes(key: str, _model: EarlyExitNet, input_shape: tuple[int, int, int]) -> FeatureSizes:
    return feature_sizes(_model, input_shape)


def model_feature_sizes(name: str) -> FeatureSizes:
    """The shipped model's input and per-exit feature-map sizes."""
    model, meta = checkpoint(name)
    path = shipped_checkpoint(name)
    return _sizes(f"{path}@{_mtime(path, 'the shipped model')}", model, tuple(meta.dataset.input_shape))


@st.cache_data(show_spinner=False, max_entries=8)
def _sweep(key: str, _test: ExitRecord) -> dict[str, list]:
    s = tradeoff_sweep(_test)
    return {"macs": s.macs_ratio.tolist(), "accuracy": s.accuracy.tolist(), "pareto": s.pareto.tolist()}


def cached_sweep(name: str) -> dict[str, list]:
    """tradeoff_sweep of the shipped model's test record, as lists."""
    return _sweep(record_key(name), records(name)[1])


@st.cache_data(show_spinner=False, max_entries=8)
def _calibration(key: str, _val: ExitRecord, _test: ExitRecord) -> CalibrationView:
    return calibration_view(_val, _test)


def cached_calibration(name: str) -> CalibrationView:
    """calibration_view of the shipped model."""
    val, test = records(name)
    return _calibration(record_key(name), val, test)


@st.cache_data(show_spinner="Replaying the cascade and the static networks...", max_entries=4)
def _comparison(key: str, _default: tuple, _statics: dict, _small: tuple) -> Comparison:
    return comparison(_default[0], _default[1], _statics, _small[0], _small[1])


def cached_comparison() -> Comparison:
    """comparison() of the lesson model, static networks and cascade."""
    statics = {name: (label, records(name)[1]) for name, label in STATICS.items()}
    key = "+".join(record_key(n) for n in (LESSON_MODEL, *STATICS))
    return _comparison(key, records(LESSON_MODEL), statics, records(SMALL_STATIC))
