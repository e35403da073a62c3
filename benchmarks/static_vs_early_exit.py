"""Early exit against smaller static networks, by measured latency on every inference engine: where does the
curve of certified early-exit operating points sit against the static frontier?

For each static network (compact_cnn at 1/4, 1/2 and 3/4 width, one conv per stage, and the full-width
baseline, 6 epochs each; and at 1/4, 1/2 and 3/2 width with the default's training, the cascade's members):
test accuracy from its evaluation file, MACs and parameters from its metadata, and its speed run without exits.
For each early-exit model: its final exit run without exits, and the max_probability settings certified on
validation (90% confidence) for a drop of at most 0.5 points against the final exit and for certified MACs
budgets of 75%, 50%, 25% and 10%, each run by an engine that really stops computing for the images that exit.
Every network runs on every installed engine (PyTorch and ONNX Runtime, `runtime.ENGINES`) on the same test
images; all of them take turns within each round, in one process, and each keeps its fastest round. The
shipped default's targets are printed last (`default_targets`).

A network without exits counts at the speed of its faster engine at each batch size (the best static engine);
an early-exit point is reported on each engine and compared on its faster one. For each static network and
each early-exit model, the report names the cheapest certified point (by expected MACs) whose test accuracy is
at least the static network's and says whether it is faster at batch 1 and at batch 256. Test labels are only
reported: the settings are chosen on validation.

    python -m benchmarks.static_vs_early_exit [--threads 1] [--n1 N] [--n256 N] [--rounds R] [--engines E,..]
        [--no-write]

Writes docs/static_vs_early_exit.json, docs/static_vs_early_exit.png and the block of docs/RESULTS.md
between the latency markers (nothing else of that file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.checkpoint.format import read_checkpoint
from aep_core.checkpoint.meta import CheckpointMeta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.errors import AepError, ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import Certified, certify
from aep_core.exits.rules import ExitRule, ModelExits, make_rule, oracle
from aep_core.exits.runtime import ENGINES, get_engine, list_engines
from aep_core.models import EarlyExitNet
from aep_core.paths import PROJECT_DIR, shipped_models_dir
from aep_core.training.job import checkpoint_dataset

from ._common import DEFAULT_CHECKPOINT, setup
from .results_table import replace_block

DOCS = PROJECT_DIR / "docs"
BEGIN, END = "<!-- latency:begin -->", "<!-- latency:end -->"
STATICS = {
    "baseline": "static, full width",
    "static_w075": "static, 3/4 width",
    "static_w050": "static, 1/2 width",
    "static_w025": "static, 1/4 width",
    "static_shallow": "static, 1 conv per stage",
    "static_w025_e30": "static, 1/4 width, 30 epochs",
    "static_w050_e30": "static, 1/2 width, 30 epochs",
    "static_w150": "static, 3/2 width, 30 + 5 epochs",
}
# a cascade is an early-exit model too, certified and timed alike: the default (static_w025_e30, static_w050_e30,
# then static_w150) and cascade_w025 (static_w025, then aep_hybrid's final exit)
CHECKPOINTS = (DEFAULT_MODEL, "aep_hybrid", "aep_hybrid_narrow_stem", "eenet_l2", "aep_linear", "cascade_w025")
RULE = "max_probability"
CONFIDENCE = 0.9
MAX_DROP = 0.5  # points, against the final exit
# what the shipped default is built for: its final exit's test accuracy, and the speed-up of its point certified
# for MAX_DROP over its own weights without exits, at batch 1 and at batch 256 (each on its faster engine)
TARGET_ACCURACY = 0.945
TARGET_OWN_SPEEDUP = {1: 3.0, 256: 2.0}
BUDGETS = (0.75, 0.5, 0.25, 0.1)  # certified expected MACs ratios: points along the curve, to meet cheap statics
STATIC, FINAL, POINT = "static", "final exit", "early exit"
B1, B256 = 1, 256  # the two comparisons: latency at batch 1, throughput at batch 256
Timer = Callable[[Any, int], float]  # (images in its engine's form, batch size) -> seconds for all of them


def _fastest(values: dict[str, float | None], lower: bool) -> tuple[str, float]:
    """The engine with the best finite value (the lowest when `lower`) and that value; ("", nan) when none."""
    finite = {e: v for e, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        return "", math.nan
    engine = (min if lower else max)(finite, key=finite.__getitem__)
    return engine, finite[engine]


@dataclass
class Row:
    """One network as deployed: a static network, an early-exit model's final exit run without exits, or one of
    its certified operating points; the speed fields (one figure per engine) are filled by `measure`."""

    key: str
    label: str
    kind: str  # STATIC, FINAL or POINT
    model: str  # the checkpoint's stem
    epochs: int | None
    params: int
    macs: float  # expected MACs per test image
    accuracy: float  # on test
    goal: str = ""  # the certified goal of an operating point
    thresholds: list[float] | None = None
    macs_bound: float | None = None  # the certified bound on the expected MACs ratio
    oracle_macs: float | None = None  # a final exit's row: expected MACs of the oracle on test (reads labels)
    ms_b1: dict[str, float] = field(default_factory=dict)  # engine -> ms per image at batch 1
    per_s_b256: dict[str, float] = field(default_factory=dict)  # engine -> images per second at batch 256
    timed: dict[str, dict[str, float]] = field(default_factory=dict)  # engine -> how the timed images exited

    def best(self, batch: int) -> tuple[str, float]:
        """(the faster engine, its ms per image) at batch 1, (the faster engine, its images per second) at 256."""
        return _fastest(self.ms_b1, lower=True) if batch == B1 else _fastest(self.per_s_b256, lower=False)

    def rate(self, batch: int, engine: str | None = None) -> float:
        """Images per second at batch 1 (from the latency) or at batch 256, on `engine` (None: the faster one)."""
        engine = self.best(batch)[0] if engine is None else engine
        v = (self.ms_b1 if batch == B1 else self.per_s_b256).get(engine)
        if v is None or not math.isfinite(v):
            return math.nan
        return 1000 / v if batch == B1 else v


@dataclass
class Network:
    """A loaded checkpoint and its rows; for its operating points, the exit rule the runtime runs and where the
    replayed rule stops each test image."""

    name: str
    model: EarlyExitNet
    meta: CheckpointMeta
    rows: list[Row]
    rules: dict[str, ExitRule] = field(default_factory=dict)  # row key -> the rule of an operating point
    replayed: dict[str, np.ndarray] = field(default_factory=dict)  # row key -> (test n,) exits of the replayed rule


def resolve(name: str) -> Path:
    """A checkpoint path from a path or a shipped model's name."""
    p = Path(name)
    return p if p.suffix == ".pt" or p.is_file() else shipped_models_dir() / f"{name}.pt"


def _epochs(meta: CheckpointMeta) -> int | None:
    """Epochs of training: a cascade's are its longest-trained member's."""
    e = meta.training.config.get("epochs")
    members = meta.training.settings.get("member_epochs") or []
    if e is None:
        e = max((m for m in members if m is not None), default=None)
    return int(e) if e is not None else None


def _records(path: Path) -> tuple[ExitRecord, ExitRecord]:
    return load_evaluation(evaluation_path(path, "val")), load_evaluation(evaluation_path(path, "test"))


def load_static(path: Path, label: str) -> Network:
    """A static network's row: test accuracy from its evaluation file, MACs and parameters from its metadata."""
    model, meta = load_checkpoint(path)
    test = load_evaluation(evaluation_path(path, "test"))
    row = Row(
        path.stem,
        label,
        STATIC,
        path.stem,
        _epochs(meta),
        meta.cost.full_params,
        float(meta.cost.full_macs),
        float(test.exit_accuracy()[-1]),
    )
    return Network(path.stem, model, meta, [row])


def certified_points(
    val: ExitRecord, test: ExitRecord, rule: str = RULE, confidence: float = CONFIDENCE
) -> tuple[list[tuple[str, Certified]], list[str]]:
    """The settings of `rule` certified on `val` (reported on `test`) for a drop of at most MAX_DROP points
    and for each MACs budget of BUDGETS, as (short goal, certificate); and a note for each goal none meets."""
    goals = [(f"≤{MAX_DROP:g} pt drop", {"max_drop_points": MAX_DROP})]
    goals += [(f"≤{100 * b:g}% MACs", {"max_macs_ratio": b}) for b in BUDGETS]
    points, notes = [], []
    for short, goal in goals:
        try:
            points.append((short, certify(val, rule, confidence=confidence, test=test, **goal)))
        except ConfigError as e:
            notes.append(f"{short}: {e}")
    return points, notes


def load_early_exit(path: Path, rule: str = RULE, confidence: float = CONFIDENCE) -> tuple[Network, list[str]]:
    """An early-exit model's rows (its final exit without exits, then its certified operating points) and a note
    for each goal it cannot certify."""
    model, meta = load_checkpoint(path)
    if model.num_exits < 2:
        raise ConfigError(f"{path} has no early exits: pass it with --statics, not --checkpoints.")
    val, test = _records(path)
    name, epochs, cost = path.stem, _epochs(meta), meta.cost
    final = Row(
        f"{name}:final",
        f"{name} final exit (no exits)",
        FINAL,
        name,
        epochs,
        cost.full_params,
        float(cost.full_macs),
        float(test.exit_accuracy()[-1]),
        oracle_macs=oracle(test).expected_macs,
    )
    net = Network(name, model, meta, [final])
    points, notes = certified_points(val, test, rule, confidence)
    exits = ModelExits.of_model(model, meta.ensemble_weights)
    for short, c in points:
        key = f"{name}:{short}"
        net.rows.append(
            Row(
                key,
                f"{name} {short}",
                POINT,
                name,
                epochs,
                cost.with_exits_params,
                c.test.expected_macs,
                c.test.accuracy,
                c.goal,
                [float(t) for t in c.settings["thresholds"]],
                c.macs_bound,
            )
        )
        net.rules[key] = make_rule(rule, exits, **c.settings)
        net.replayed[key] = c.test.exit_index
    return net, [f"{name} {n}" for n in notes]


# ---- timing -----------------------------------------------------------------------------------------------


def make_timers(
    net: Network, engines: Sequence[str], exits_seen: dict[tuple[str, str], np.ndarray]
) -> tuple[dict[tuple[str, str], Timer], dict[str, Callable[[torch.Tensor], Any]]]:
    """A timer per (row key, engine) of `net`: the engine's network without exits for a static network or a final
    exit, its early-exit runner for an operating point, which leaves the exit index of each image in
    `exits_seen[(key, engine)]`; and per engine, how it wants the images (all its runners take the same form)."""
    timers: dict[tuple[str, str], Timer] = {}
    convert: dict[str, Callable[[torch.Tensor], Any]] = {}
    for row in net.rows:
        for engine in engines:
            spec = get_engine(engine)
            if row.kind == POINT:
                runner = spec.runner(net.model, net.rules[row.key])

                def timed(x: Any, bs: int, runner=runner, key: tuple[str, str] = (row.key, engine)) -> float:
                    res = runner.run(x, bs)
                    exits_seen[key] = res.exit_index
                    return res.seconds

                timers[(row.key, engine)] = timed
            else:
                runner = spec.static(net.model)
                timers[(row.key, engine)] = lambda x, bs, runner=runner: runner.run(x, bs)[1]
            convert.setdefault(engine, runner.as_input)
    return timers, convert


def best_times(timers: dict[Any, Callable[[], float]], rounds: int) -> dict[Any, float]:
    """Fastest of `rounds` timed calls of each timer (seconds), after one untimed call of each (the first pass
    at a batch size sets up its kernels, exports and opens ONNX files); the timers take turns within each round,
    so background load hits all alike."""
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}.")
    for t in timers.values():
        t()
    best = dict.fromkeys(timers, math.inf)
    for _ in range(rounds):
        for key, t in timers.items():
            best[key] = min(best[key], t())
    return best


def measure(
    nets: Sequence[Network],
    images: torch.Tensor,
    sizes: dict[int, int],
    rounds: int,
    engines: Sequence[str] = ("torch",),
    positions: np.ndarray | None = None,
) -> None:
    """Fill every row's ms per image at its smallest batch size and images per second at its largest, on each of
    `engines`: `sizes` maps each batch size to how many of the test images `images` are timed at it (the first
    ones). Operating points also get, per engine, how the images timed at the smallest batch size exited: their
    MACs ratio and agreement with the replayed rule on the same images (`positions`: where `images` sit in the
    test split; default the first ones)."""
    seen: dict[tuple[str, str], np.ndarray] = {}
    timers: dict[tuple[str, str], Timer] = {}
    convert: dict[str, Callable[[torch.Tensor], Any]] = {}
    for net in nets:
        t, c = make_timers(net, engines, seen)
        timers.update(t)
        for engine, f in c.items():
            convert.setdefault(engine, f)
    rows = {r.key: r for net in nets for r in net.rows}
    small, large = min(sizes), max(sizes)
    for bs in sorted(sizes):
        n = min(sizes[bs], len(images))
        xs = {engine: f(images[:n]) for engine, f in convert.items()}
        calls = {k: (lambda t=t, x=xs[k[1]], bs=bs: t(x, bs)) for k, t in timers.items()}
        for (key, engine), seconds in best_times(calls, rounds).items():
            if bs == small:
                rows[key].ms_b1[engine] = 1000 * seconds / n
            if bs == large:
                rows[key].per_s_b256[engine] = n / seconds
        if bs == small:
            where = np.arange(n) if positions is None else np.asarray(positions)[:n]
            for net in nets:
                _note_exits(net, seen, where)


def _note_exits(net: Network, seen: dict[tuple[str, str], np.ndarray], positions: np.ndarray) -> None:
    """How the images timed at batch 1 (at `positions` of the test split) exited at each operating point of
    `net` on each engine: their MACs ratio, and the fraction that stopped where the replayed rule stops them."""
    cost = net.meta.cost
    cum = np.asarray(cost.cum_macs, dtype=np.float64)
    for (key, engine), idx in seen.items():
        if key not in net.replayed:
            continue
        row = next(r for r in net.rows if r.key == key)
        row.timed[engine] = {
            "images": len(idx),
            "macs_ratio": float(cum[idx].mean() / cost.full_macs),
            "same_exit_as_replay": float((net.replayed[key][positions] == idx).mean()),
        }


# ---- comparing --------------------------------------------------------------------------------------------


def speedup(row: Row, ref: Row, batch: int, engine: str | None = None) -> float:
    """How many times faster `row` (on `engine`; None: its faster one) runs than `ref` (on its faster engine):
    in latency at batch 1, in throughput at batch 256. Above 1, `row` is faster."""
    return row.rate(batch, engine) / ref.rate(batch)


def beats(static: Row, row: Row) -> bool:
    """Whether `static` is at least as accurate as `row` and faster than it at batch 1 and at batch 256, each on
    its faster engine."""
    return static.accuracy >= row.accuracy and all(speedup(static, row, b) > 1 for b in (B1, B256))


def on_frontier(static: Row, statics: Sequence[Row], batch: int) -> bool:
    """Whether no other static network is at least as accurate and faster at `batch` (each on its faster
    engine): `static` is on the static frontier there."""
    return not any(
        o is not static and o.accuracy >= static.accuracy and o.rate(batch) > static.rate(batch) for o in statics
    )


def cheapest_reaching(static: Row, points: Sequence[Row]) -> Row | None:
    """The certified point with the fewest expected MACs (the more accurate among equals) whose test accuracy is
    at least `static`'s; None when none reaches it. Test accuracy only reports here: it picks which certified
    point is compared, never a setting."""
    above = [p for p in points if p.accuracy >= static.accuracy]
    return min(above, key=lambda p: (p.macs, -p.accuracy)) if above else None


@dataclass
class Versus:
    """One static network against one early-exit model: the model's cheapest certified point at least as
    accurate on test (None when none is)."""

    static: Row
    model: str
    point: Row | None

    def speedup(self, batch: int, engine: str | None = None) -> float:
        """The point's speed over the static network's (see `speedup`); nan without a point."""
        return math.nan if self.point is None else speedup(self.point, self.static, batch, engine)

    def faster(self, batch: int) -> bool:
        """Whether the point, on its faster engine, beats the static network on its faster engine at `batch`."""
        return self.speedup(batch) > 1


def _split(rows: Sequence[Row]) -> tuple[list[Row], dict[str, list[Row]]]:
    """The static networks (most accurate first) and each early-exit model's certified points, in row order."""
    statics = sorted((r for r in rows if r.kind == STATIC), key=lambda r: -r.accuracy)
    points: dict[str, list[Row]] = {}
    for r in rows:
        if r.kind != STATIC:
            points.setdefault(r.model, [])
        if r.kind == POINT:
            points[r.model].append(r)
    return statics, points


def comparisons(rows: Sequence[Row]) -> list[Versus]:
    """Every static network (most accurate first) against every early-exit model's cheapest certified point at
    least as accurate."""
    statics, points = _split(rows)
    return [Versus(s, m, cheapest_reaching(s, ps)) for s in statics for m, ps in points.items()]


def own_speedups(rows: Sequence[Row]) -> dict[str, tuple[float, float]]:
    """Point key -> (batch 1, batch 256) speed-up over its model's own weights run without exits, each on its
    faster engine."""
    finals = {r.model: r for r in rows if r.kind == FINAL}
    return {
        r.key: (speedup(r, finals[r.model], B1), speedup(r, finals[r.model], B256))
        for r in rows
        if r.kind == POINT and r.model in finals
    }


# ---- reporting --------------------------------------------------------------------------------------------


def _label(engine: str) -> str:
    """The engine's name for people."""
    return ENGINES[engine].label if engine in ENGINES else engine


def _acc(r: Row) -> str:
    return f"{100 * r.accuracy:.2f}%"


def _speed(r: Row, batch: int) -> str:
    """The row's speed on its faster engine, naming it."""
    engine, v = r.best(batch)
    if not engine:
        return "not timed"
    return (f"{v:.3f} ms/image" if batch == B1 else f"{v:.0f} images/s") + f" on {_label(engine)}"


def _times(x: float) -> str:
    return f"{x:.2f}×" if math.isfinite(x) else "—"


def _cells(values: dict[str, float], engines: Sequence[str], best: str, fmt: str) -> list[str]:
    """One cell per engine, the faster one in bold when several gave a figure."""
    out = []
    several = sum(1 for e in engines if values.get(e) is not None and math.isfinite(values[e])) > 1
    for e in engines:
        v = values.get(e)
        if v is None or not math.isfinite(v):
            out.append("—")
            continue
        text = format(v, fmt)
        out.append(f"**{text}**" if e == best and several else text)
    return out


def table(rows: Sequence[Row], default_macs: float, engines: Sequence[str]) -> str:
    """The markdown table: every row with its cost, accuracy and measured speed on each engine (the faster one
    in bold) and, for an operating point, its speed-up over its own weights without exits."""
    own = own_speedups(rows)
    head = ["Network / operating point", "epochs", "params", f"expected MACs (% of {default_macs / 1e6:.2f} M)"]
    head += ["test acc", *(f"ms/image, batch 1, {_label(e)}" for e in engines)]
    head += [f"images/s, batch 256, {_label(e)}" for e in engines]
    head += ["speed-up over its own weights without exits (batch 1, batch 256)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        x1, x256 = own.get(r.key, (math.nan, math.nan))
        cells = [
            r.label,
            str(r.epochs) if r.epochs is not None else "?",
            f"{r.params / 1e3:.1f} k",
            f"{r.macs / 1e6:.2f} M ({100 * r.macs / default_macs:.1f}%)",
            _acc(r),
            *_cells(r.ms_b1, engines, r.best(B1)[0], ".3f"),
            *_cells(r.per_s_b256, engines, r.best(B256)[0], ".0f"),
            f"{_times(x1)}, {_times(x256)}" if r.key in own else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def frontier_table(rows: Sequence[Row], default_macs: float, engines: Sequence[str]) -> str:
    """The markdown table of `comparisons`: each static network (its speed on its faster engine, whether it is
    on the static frontier) against each early-exit model's cheapest certified point at least as accurate, with
    the point's speed-up on each engine."""
    statics, _ = _split(rows)
    head = ["Static network", "test acc", "on the static frontier (batch 1, 256)"]
    head += ["its latency at batch 1 (faster engine)", "its throughput at batch 256 (faster engine)"]
    head += ["early-exit model", "cheapest certified point at least as accurate (test acc, MACs)"]
    head += [f"speed-up, batch 1, {_label(e)}" for e in engines]
    head += [f"speed-up, batch 256, {_label(e)}" for e in engines]
    head += ["faster at batch 1, at batch 256"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown: set[str] = set()
    for v in comparisons(rows):
        s, p = v.static, v.point
        cells = ["", "", "", "", ""]
        if s.key not in shown:
            shown.add(s.key)
            frontier = f"{_yes(on_frontier(s, statics, B1))}, {_yes(on_frontier(s, statics, B256))}"
            cells = [s.label, _acc(s), frontier, _speed(s, B1), _speed(s, B256)]
        if p is None:
            cells += [v.model, "none reaches it", *(["—"] * (2 * len(engines))), "—"]
        else:
            what = f"{p.label.removeprefix(f'{p.model} ')} ({_acc(p)}, {100 * p.macs / default_macs:.1f}%)"
            cells += [v.model, what]
            cells += [_times(v.speedup(b, e)) for b in (B1, B256) for e in engines]
            cells.append(f"{_yes(v.faster(B1))}, {_yes(v.faster(B256))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _against(v: Versus, batch: int) -> str:
    if v.point is None:
        return f"{v.model}: no certified point is as accurate"
    x = v.speedup(batch)
    return (
        f"{v.point.label} ({_acc(v.point)}) is {'faster' if x > 1 else 'slower'} ({x:.2f}× the speed, on "
        f"{_label(v.point.best(batch)[0])})"
    )


def verdicts(rows: Sequence[Row]) -> list[str]:
    """One-line verdicts from the measured numbers: at batch 1 and at batch 256, for each static network, whether
    each early-exit model's cheapest certified point at least as accurate is faster (each network on its faster
    engine); per model, how many static networks it reaches and beats; the speed-up of each point certified for
    the allowed drop over its own weights without exits; then how many points a static network beats."""
    statics, points = _split(rows)
    if not statics:
        return ["No static network was measured: nothing to compare."]
    every = [p for ps in points.values() for p in ps]
    if not every:
        return ["No early-exit operating point could be certified: nothing to compare."]
    versus = comparisons(rows)
    out = []
    for batch, what in ((B1, "Batch 1 (latency)"), (B256, "Batch 256 (throughput)")):
        for s in statics:
            where = "on" if on_frontier(s, statics, batch) else "off"
            against = "; ".join(_against(v, batch) for v in versus if v.static is s)
            out.append(f"{what}, {s.label} ({_acc(s)}, {_speed(s, batch)}, {where} the static frontier): {against}.")
    for model, ps in points.items():
        if not ps:
            continue
        mine = [v for v in versus if v.model == model]
        reached = [v for v in mine if v.point is not None]
        trained = f" ({ps[0].epochs} epochs)" if ps[0].epochs is not None else ""
        out.append(
            f"{model}{trained}: a certified point at least as accurate as {len(reached)} of the {len(mine)} static "
            f"networks, and faster than {sum(v.faster(B1) for v in reached)} of them at batch 1 and "
            f"{sum(v.faster(B256) for v in reached)} at batch 256."
        )
    drop = f":≤{MAX_DROP:g} pt drop"
    for key, (x1, x256) in own_speedups(rows).items():
        if key.endswith(drop):
            out.append(
                f"{key.replace(':', ' ')}: {x1:.2f}× the speed of its own weights without exits at batch 1 and "
                f"{x256:.2f}× at batch 256, each on its faster engine."
            )
    beaten = sum(any(beats(s, p) for s in statics) for p in every)
    out.append(
        f"{beaten} of the {len(every)} certified early-exit points are beaten by a static network (at least as "
        "accurate, faster at batch 1 and at batch 256)."
    )
    return out


def _met(ok: bool, short: str) -> str:
    return "met" if ok else f"missed ({short})"


def default_targets(rows: Sequence[Row], model: str) -> list[str]:
    """Whether `model` (the shipped default) meets its targets in this run: its final exit's test accuracy, the
    speed-up of its point certified for MAX_DROP over its own weights without exits at batch 1 and 256 (with that
    point's MACs ratio and the oracle's beside), and, for every static network it reaches, a certified point at
    least as accurate that is faster at both batch sizes. Empty when the run has no such model."""
    final = next((r for r in rows if r.kind == FINAL and r.model == model), None)
    if final is None:
        return []
    acc = final.accuracy
    gap = f"{100 * (TARGET_ACCURACY - acc):.2f} points short"
    out = [
        f"Final exit: {_acc(final)} on test (target ≥ {100 * TARGET_ACCURACY:g}%): {_met(acc >= TARGET_ACCURACY, gap)}."
    ]
    oracle_ratio = (
        ""
        if final.oracle_macs is None
        else f"; the oracle, which reads the labels: {100 * final.oracle_macs / final.macs:.1f}%"
    )
    drop = next((r for r in rows if r.kind == POINT and r.key == f"{model}:≤{MAX_DROP:g} pt drop"), None)
    if drop is None:
        out.append(
            f"No point of {model} is certified for a drop of at most {MAX_DROP:g} points: no speed-up to report."
        )
    else:
        parts = []
        for batch in (B1, B256):
            x, want = speedup(drop, final, batch), TARGET_OWN_SPEEDUP[batch]
            short = f"{want / x:.2f}× faster needed" if math.isfinite(x) and x > 0 else "not timed"
            parts.append(f"{_times(x)} at batch {batch} (target ≥ {want:g}×: {_met(x >= want, short)})")
        out.append(
            f"Certified drop of at most {MAX_DROP:g} points ({_acc(drop)} on test, "
            f"{100 * drop.macs / final.macs:.1f}% of its MACs without exits{oracle_ratio}): "
            f"{' and '.join(parts)} the speed of its own weights without exits, each on its faster engine."
        )
    mine = [v for v in comparisons(rows) if v.model == model]
    for batch, what in ((B1, "batch 1"), (B256, "batch 256")):
        slower = [v for v in mine if not v.faster(batch)]
        verdict = (
            "met"
            if not slower
            else "missed: "
            + "; ".join(
                f"{v.static.label} ({_acc(v.static)}): "
                + ("no certified point is as accurate" if v.point is None else f"{_times(v.speedup(batch))} the speed")
                for v in slower
            )
        )
        out.append(
            f"Static frontier at {what}: a certified point at least as accurate and faster than "
            f"{len(mine) - len(slower)} of the {len(mine)} static networks (target: every one): {verdict}."
        )
    return out


def same_network_spread(rows: Sequence[Row], engine: str) -> tuple[int, float, float] | None:
    """Run-to-run noise seen in this run on `engine`: among the rows run without exits that compute the same MACs
    (to 0.1%), the largest such group's (size, max / min - 1 of the batch-1 latency, of the batch-256
    throughput); None when no two rows compute the same."""
    plain = sorted((r for r in rows if r.kind != POINT and engine in r.ms_b1), key=lambda r: r.macs)
    groups: list[list[Row]] = []
    for r in plain:
        if groups and r.macs <= groups[-1][0].macs * 1.001:
            groups[-1].append(r)
        else:
            groups.append([r])
    group = max(groups, key=len, default=[])
    if len(group) < 2:
        return None
    ms, per_s = [r.ms_b1[engine] for r in group], [r.per_s_b256[engine] for r in group]
    return len(group), max(ms) / min(ms) - 1, max(per_s) / min(per_s) - 1


def _noise(rows: Sequence[Row], engines: Sequence[str]) -> str:
    spreads = {e: s for e in engines if (s := same_network_spread(rows, e)) is not None}
    if not spreads:
        return ""
    n = max(s[0] for s in spreads.values())
    each = [
        f"{100 * b1:.0f}% in latency at batch 1 and {100 * b256:.0f}% in throughput at batch 256 on {_label(e)}"
        if i == 0
        else f"{100 * b1:.0f}% and {100 * b256:.0f}% on {_label(e)}"
        for i, (e, (_, b1, b256)) in enumerate(spreads.items())
    ]
    return (
        f" The {n} rows that run the same computation without exits differ by up to {', '.join(each)}: smaller "
        "differences are within this run's noise."
    )


def _agreement(rows: Sequence[Row], engines: Sequence[str]) -> str:
    """A sentence on how the timed images exited at the early-exit points (empty when none was timed)."""
    same = {e: [r.timed[e]["same_exit_as_replay"] for r in rows if e in r.timed] for e in engines}
    same = {e: min(v) for e, v in same.items() if v}
    if not same:
        return ""
    if all(v == 1 for v in same.values()):
        return " Every image timed at batch 1 stopped at the exit the replayed rule gives, on every engine."
    each = ", ".join(f"{100 * v:.1f}% on {_label(e)}" for e, v in same.items())
    return f" Of the images timed at batch 1, at least this share stopped at the exit the replayed rule gives: {each}."


def _load(how: dict[str, Any]) -> str:
    load = how.get("load")
    if not load:
        return ""
    return (
        f" Load average over one minute: {load['before']:.2f} before timing, {load['after']:.2f} after, on "
        f"{load['cores']} cores (this run keeps about {how['threads']} busy)."
    )


def block(rows: Sequence[Row], default_macs: float, notes: Sequence[str], how: dict[str, Any]) -> str:
    """The markdown between the latency markers of docs/RESULTS.md."""
    engines = how["engines"]
    labels = ", ".join(_label(e) for e in engines)
    rounds = f"{how['rounds']} round{'s' if how['rounds'] != 1 else ''}"
    parts = [
        "### Accuracy against measured latency",
        "",
        f"_Measured by `{how['command']}` ({how['machine']})._ Every network ran on each engine ({labels}) on "
        f"the first {how['n1']} test images at batch 1 and the first {how['n256']} at batch 256; all of them took "
        f"turns in one process and each keeps its fastest of {rounds} ({how['seconds']:.0f} s of timing). PyTorch "
        "runs a copy with BatchNorm folded and channels-last weights; ONNX Runtime runs files exported from the "
        "same folded copy, one per exit for early exit and one for the network without exits. A network without "
        "exits counts at its faster engine at each batch size (the best static engine; the faster figure is in "
        f"bold); early-exit points are reported on each engine and compared on their faster one. Early-exit "
        f"points: {RULE} thresholds certified on validation ({100 * CONFIDENCE:g}% confidence) for a drop of at "
        f"most {MAX_DROP:g} points against the final exit or for a MACs budget, run by engines that stop "
        "computing for the images that exit; their accuracy and expected MACs are those of the whole test set."
        f"{_agreement(rows, engines)} Speed-ups above 1 favour early exit.{_noise(rows, engines)}{_load(how)}",
        "",
        table(rows, default_macs, engines),
    ]
    if notes:
        parts += ["", *(f"- not in the table: {n}" for n in notes)]
    parts += [
        "",
        "Against the static frontier: for each static network and each early-exit model, the model's cheapest "
        "certified point (fewest expected MACs) whose test accuracy is at least the static network's, and its "
        "speed over the static network's on the static network's faster engine. Test accuracy only reports which "
        "certified point is compared; the settings were chosen on validation. A static network is on the static "
        "frontier at a batch size when no other is at least as accurate and faster there.",
        "",
        frontier_table(rows, default_macs, engines),
        "",
        "Verdicts (each network on its faster engine):",
        "",
        *(f"- {v}" for v in verdicts(rows)),
        "",
    ]
    targets = default_targets(rows, DEFAULT_CHECKPOINT.stem)
    if targets:
        parts += [f"Targets of the shipped default, `{DEFAULT_CHECKPOINT.stem}`:", "", *(f"- {t}" for t in targets), ""]
    parts += [
        "![Accuracy against measured latency](static_vs_early_exit.png)",
    ]
    return "\n".join(parts)


def plot(rows: Sequence[Row], out: Path) -> None:
    """Test accuracy against measured time per image at batch 1 and at batch 256, each network on its faster
    engine: each early-exit model's points (its final exit run without exits included) as a line, the static
    networks as diamonds, the static frontier as a dashed step line."""
    import altair as alt
    import pandas as pd

    statics, _ = _split(rows)
    records = []
    for batch in (B1, B256):
        for r in rows:
            rate = r.rate(batch)
            if not math.isfinite(rate):
                continue
            records.append(
                {
                    "batch": batch,
                    "network": r.label
                    if r.kind == STATIC
                    else r.model + (f" ({r.epochs} epochs)" if r.epochs is not None else ""),
                    "static": r.kind == STATIC,
                    "frontier": r.kind == STATIC and on_frontier(r, statics, batch),
                    "accuracy %": 100 * r.accuracy,
                    "ms per image": 1000 / rate,
                    "engine": _label(r.best(batch)[0]),
                }
            )
    data = pd.DataFrame(records)

    def panel(batch: int, title: str) -> alt.LayerChart:
        d = data[data["batch"] == batch]
        enc = {
            "x": alt.X("ms per image:Q", scale=alt.Scale(zero=False, type="log", nice=False, padding=14), title=title),
            "y": alt.Y("accuracy %:Q", scale=alt.Scale(zero=False), title="test accuracy %"),
        }
        color = alt.Color("network:N", scale=alt.Scale(scheme="tableau10"))
        front = alt.Chart(d[d["frontier"]]).mark_line(interpolate="step-after", strokeDash=[5, 3], color="gray")
        lines = alt.Chart(d[~d["static"]]).mark_line(point=True).encode(color=color, **enc)
        diamonds = alt.Chart(d[d["static"]]).mark_point(shape="diamond", size=120, filled=True)
        return (front.encode(**enc) + lines + diamonds.encode(color=color, **enc)).properties(width=420, height=360)

    chart = alt.hconcat(
        panel(B1, "measured ms per image at batch 1 (latency, log scale)"),
        panel(B256, "measured ms per image at batch 256 (1000 / throughput, log scale)"),
    ).properties(
        title=[
            "Fashion-MNIST: test accuracy vs measured time per image, each network on its faster engine",
            f"early exit: {RULE} settings certified on validation, plus the model's final exit run without exits, "
            "one line per model; static networks: diamonds; dashed: the static frontier",
        ]
    )
    chart.save(str(out), scale_factor=2)


def write_results_block(md: Path, body: str) -> None:
    """Replace the latency block of `md` with `body` (appended at the end when the markers are missing)."""
    old = md.read_text() if md.exists() else "# Results\n"
    md.write_text(replace_block(old, BEGIN, END, body))


# ---- the command ------------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """`path` relative to the project when it lies inside it."""
    try:
        return str(path.resolve().relative_to(PROJECT_DIR.resolve()))
    except ValueError:
        return str(path)


def load_networks(statics: Sequence[str], checkpoints: Sequence[str]) -> tuple[list[Network], list[str]]:
    """The static networks that exist (a note for each that does not yet) and the early-exit models (a
    ConfigError for a missing one; a note for each goal one cannot certify)."""
    nets, notes = [], []
    for name in statics:
        path = resolve(name)
        test = evaluation_path(path, "test")
        if not path.is_file() or not test.is_file():
            missing = path if not path.is_file() else test
            notes.append(f"{path.stem}: {_shown(missing)} does not exist (yet); skipped")
            continue
        nets.append(load_static(path, STATICS.get(path.stem, path.stem)))
    for name in checkpoints:
        path = resolve(name)
        if not path.is_file():
            raise ConfigError(f"Checkpoint {path} does not exist: pass shipped model names or .pt paths.")
        net, missed = load_early_exit(path)
        nets.append(net)
        notes += missed
    return nets, notes


def ordered_rows(nets: Sequence[Network]) -> list[Row]:
    """The static networks, most accurate first, then each early-exit model's rows in order."""
    statics = sorted((n.rows[0] for n in nets if n.rows[0].kind == STATIC), key=lambda r: -r.accuracy)
    return statics + [r for n in nets if n.rows[0].kind != STATIC for r in n.rows]


def first_test_images(nets: Sequence[Network], n: int) -> torch.Tensor:
    """The first n test images of the dataset every network reads (ConfigError if they read different data)."""

    def reads(net: Network) -> tuple:
        d = net.meta.dataset
        return d.name, tuple(d.mean), tuple(d.std), d.image_size, d.in_channels

    first = nets[0]
    for net in nets[1:]:
        if reads(net) != reads(first):
            raise ConfigError(
                f"{net.name} reads {reads(net)}, {first.name} reads {reads(first)}: the networks compared must read "
                "the same test images."
            )
    test = checkpoint_dataset(first.meta).test
    return test[list(range(min(n, len(test))))][0]


def default_macs(nets: Sequence[Network]) -> float:
    """MACs of the default model without exits (the reference of the MACs percentages)."""
    for net in nets:
        if net.name == DEFAULT_CHECKPOINT.stem:
            return float(net.meta.cost.full_macs)
    if DEFAULT_CHECKPOINT.is_file():
        return float(read_checkpoint(DEFAULT_CHECKPOINT).meta.cost.full_macs)
    return float(max(net.meta.cost.full_macs for net in nets))


def _plain(v: Any) -> Any:
    """JSON-ready: NaN as null, numpy values as Python ones."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


HOW = ("command", "machine", "threads", "rounds", "n1", "n256", "engines", "seconds", "load")  # how the run went


def payload(rows: Sequence[Row], ref_macs: float, notes: Sequence[str], how: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run, for docs/static_vs_early_exit.json."""
    engines = how["engines"]
    own = own_speedups(rows)
    out = []
    for r in rows:
        d = asdict(r)
        d["macs_percent_of_default"] = 100 * r.macs / ref_macs
        d["best_engine_b1"], d["best_engine_b256"] = r.best(B1)[0], r.best(B256)[0]
        if r.key in own:
            d["speedup_over_own_without_exits"] = dict(zip(("b1", "b256"), own[r.key], strict=True))
        out.append(d)
    versus = [
        {
            "static": v.static.key,
            "model": v.model,
            "point": None if v.point is None else v.point.key,
            "speedup_b1": {e: v.speedup(B1, e) for e in engines},
            "speedup_b256": {e: v.speedup(B256, e) for e in engines},
            "faster_b1": v.point is not None and v.faster(B1),
            "faster_b256": v.point is not None and v.faster(B256),
        }
        for v in comparisons(rows)
    ]
    statics, _ = _split(rows)
    frontier = {f"b{b}": [s.key for s in statics if on_frontier(s, statics, b)] for b in (B1, B256)}
    spread = {}
    for e in engines:
        s = same_network_spread(rows, e)
        spread[e] = None if s is None else dict(zip(("rows", "latency_b1", "throughput_b256"), s, strict=True))
    settings = {"rule": RULE, "confidence": CONFIDENCE, "max_drop_points": MAX_DROP, "macs_budgets": list(BUDGETS)}
    return _plain(
        {
            **how,
            **settings,
            "default_macs": ref_macs,
            "rows": out,
            "static_frontier": frontier,
            "versus": versus,
            "same_computation_spread": spread,
            "notes": list(notes),
            "verdicts": verdicts(rows),
            "default_targets": default_targets(rows, DEFAULT_CHECKPOINT.stem),
        }
    )


def rows_from_payload(data: dict[str, Any]) -> list[Row]:
    """The rows a payload was written from (a missing figure back as NaN)."""
    names = {f.name for f in fields(Row)}
    rows = []
    for d in data["rows"]:
        kw = {k: v for k, v in d.items() if k in names}
        for speed in ("ms_b1", "per_s_b256"):
            kw[speed] = {e: math.nan if v is None else v for e, v in d[speed].items()}
        rows.append(Row(**kw))
    return rows


def how_from_payload(data: dict[str, Any]) -> dict[str, Any]:
    """How the run of a payload went: the fields `block` reads."""
    return {k: data[k] for k in HOW}


def command(a: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    parts = [
        "python -m benchmarks.static_vs_early_exit",
        f"--threads {a.threads} --n1 {a.n1} --n256 {a.n256} --rounds {a.rounds}",
    ]
    if a.engines:
        parts.append(f"--engines {a.engines}")
    if a.checkpoints != ",".join(CHECKPOINTS):
        parts.append(f"--checkpoints {a.checkpoints}")
    if a.statics != ",".join(STATICS):
        parts.append(f"--statics {a.statics}")
    return " ".join(parts)


def engines_of(arg: str) -> list[str]:
    """The engines to time: those named (ConfigError for an unknown or uninstalled one) or every installed one."""
    names = [n for n in arg.split(",") if n] if arg else list_engines(available=True)
    for name in names:
        get_engine(name)
    return names


def run(a: argparse.Namespace) -> None:
    """Load, certify, measure, print and (unless --no-write) write the JSON, the plot and the RESULTS.md block."""
    for flag in ("threads", "n1", "n256", "rounds"):
        if getattr(a, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(a, flag)}.")
    engines = engines_of(a.engines)
    machine = setup(a.threads)
    print(machine)
    names = [n for n in a.statics.split(",") if n], [n for n in a.checkpoints.split(",") if n]
    nets, notes = load_networks(*names)
    for n in notes:
        print(f"note: {n}")
    if not nets:
        raise ConfigError("No network to measure: every static network is missing and --checkpoints is empty.")
    images = first_test_images(nets, max(a.n1, a.n256))
    sizes = {B1: min(a.n1, len(images)), B256: min(a.n256, len(images))}
    print(
        f"timing {len(nets)} networks on {', '.join(engines)}: {sizes[B1]} images at batch 1, {sizes[B256]} at "
        f"batch 256, best of {a.rounds}"
    )
    before, t0 = os.getloadavg()[0], time.perf_counter()
    measure(nets, images, sizes, a.rounds, engines)
    seconds, after = time.perf_counter() - t0, os.getloadavg()[0]
    rows, ref = ordered_rows(nets), default_macs(nets)
    how = {"command": command(a), "machine": machine, "threads": a.threads, "rounds": a.rounds}
    how.update(n1=sizes[B1], n256=sizes[B256], engines=engines, seconds=seconds)
    how["load"] = {"before": before, "after": after, "cores": os.cpu_count()}
    text = block(rows, ref, notes, how)
    print("\n" + text)
    if a.no_write:
        return
    DOCS.mkdir(exist_ok=True)
    (DOCS / "static_vs_early_exit.json").write_text(json.dumps(payload(rows, ref, notes, how), indent=1))
    plot(rows, DOCS / "static_vs_early_exit.png")
    write_results_block(DOCS / "RESULTS.md", text)
    print(
        "wrote docs/static_vs_early_exit.json, docs/static_vs_early_exit.png and the latency block of docs/RESULTS.md"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n1", type=int, default=400, help="test images timed at batch 1")
    ap.add_argument("--n256", type=int, default=768, help="test images timed at batch 256")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds; each network keeps its fastest")
    ap.add_argument("--engines", default="", help="engines to time, comma-separated (default: every installed one)")
    ap.add_argument("--checkpoints", default=",".join(CHECKPOINTS), help="early-exit models: names or .pt paths")
    ap.add_argument("--statics", default=",".join(STATICS), help="static networks: names or .pt paths")
    ap.add_argument("--no-write", action="store_true", help="print only")
    try:
        run(ap.parse_args(argv))
    except AepError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
