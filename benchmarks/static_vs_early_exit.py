"""Early exit against smaller static networks, by measured latency: is a certified early-exit operating point
faster than a static network of the same family (no exits) that is at least as accurate?

For each static network (compact_cnn at 1/4, 1/2 and 3/4 width, one conv per stage, and the full-width
baseline): test accuracy from its evaluation file, MACs and parameters from its metadata, and its speed run
without exits. For each early-exit model: its final exit run without exits, and the max_probability settings
certified on validation (90% confidence) for a drop of at most 0.5 points against the final exit and for
certified MACs budgets of 50% and 75%, each run by the runtime that really stops (`EarlyExitRunner`). Every
network runs as a copy prepared for inference (BatchNorm folded, channels-last) on the same test images; the
networks take turns within each round, in one process, and each keeps its fastest round. Test labels are
only reported.

    python -m benchmarks.static_vs_early_exit [--threads 1] [--n1 N] [--n256 N] [--rounds R] [--no-write]

Writes docs/static_vs_early_exit.json, docs/static_vs_early_exit.png and the block of docs/RESULTS.md
between the latency markers (nothing else of that file).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.format import read_checkpoint
from aep_core.checkpoint.meta import CheckpointMeta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.errors import AepError, ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import Certified, certify
from aep_core.exits.rules import ExitRule, ModelExits, make_rule
from aep_core.exits.runtime import EarlyExitRunner, run_without_exits
from aep_core.models import EarlyExitNet
from aep_core.models.inference import as_model_input, prepare_for_inference
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
}
CHECKPOINTS = ("aep_hybrid", "eenet_l2", "aep_linear")
RULE = "max_probability"
CONFIDENCE = 0.9
MAX_DROP = 0.5  # points, against the final exit
BUDGETS = (0.75, 0.5)  # certified expected MACs ratios
STATIC, FINAL, POINT = "static", "final exit", "early exit"
Timer = Callable[[torch.Tensor, int], float]  # (images, batch size) -> seconds for all of them


@dataclass
class Row:
    """One network as deployed: a static network, an early-exit model's final exit run without exits, or one of
    its certified operating points; the speed fields are filled by `measure`."""

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
    ms_b1: float = math.nan  # per image at batch 1
    per_s_b256: float = math.nan  # images per second at batch 256
    timed: dict[str, float] = field(default_factory=dict)  # how the timed images exited (operating points)


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
    e = meta.training.config.get("epochs")
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


def make_timers(net: Network, exits_seen: dict[str, np.ndarray]) -> dict[str, Timer]:
    """A timer per row of `net`: the network without exits (`run_without_exits` on an inference-prepared copy)
    for a static network or a final exit, the early-exit runner for an operating point, which leaves the exit
    index of each image in `exits_seen[key]`."""
    out: dict[str, Timer] = {}
    plain = prepare_for_inference(net.model)
    for row in net.rows:
        if row.kind == POINT:
            runner = EarlyExitRunner(net.model, net.rules[row.key])

            def timed(x: torch.Tensor, bs: int, runner=runner, key: str = row.key) -> float:
                res = runner.run(x, bs)
                exits_seen[key] = res.exit_index
                return res.seconds

            out[row.key] = timed
        else:
            out[row.key] = lambda x, bs, plain=plain: run_without_exits(plain, x, bs, optimize=False)[1]
    return out


def best_times(timers: dict[str, Timer], x: torch.Tensor, batch_size: int, rounds: int) -> dict[str, float]:
    """Fastest of `rounds` timed passes of each timer over `x` at `batch_size`, after one untimed pass of each
    (the first pass at a batch size sets up its kernels); the timers take turns within each round, so background
    load hits all alike."""
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}.")
    for t in timers.values():
        t(x, batch_size)
    best = dict.fromkeys(timers, math.inf)
    for _ in range(rounds):
        for key, t in timers.items():
            best[key] = min(best[key], t(x, batch_size))
    return best


def measure(
    nets: Sequence[Network],
    images: torch.Tensor,
    sizes: dict[int, int],
    rounds: int,
    positions: np.ndarray | None = None,
) -> None:
    """Fill every row's ms per image at its smallest batch size and images per second at its largest: `sizes`
    maps each batch size to how many of the test images `images` are timed at it (the first ones). Operating
    points also get how the images timed at the smallest batch size exited: their MACs ratio and agreement with
    the replayed rule on the same images (`positions`: where `images` sit in the test split; default the first
    ones)."""
    seen: dict[str, np.ndarray] = {}
    all_timers = {k: t for net in nets for k, t in make_timers(net, seen).items()}
    rows = {r.key: r for net in nets for r in net.rows}
    small, large = min(sizes), max(sizes)
    for bs in sorted(sizes):
        n = min(sizes[bs], len(images))
        x = as_model_input(images[:n])
        best = best_times(all_timers, x, bs, rounds)
        for key, seconds in best.items():
            if bs == small:
                rows[key].ms_b1 = 1000 * seconds / n
            if bs == large:
                rows[key].per_s_b256 = n / seconds
        if bs == small:
            where = np.arange(n) if positions is None else np.asarray(positions)[:n]
            for net in nets:
                _note_exits(net, seen, where)


def _note_exits(net: Network, seen: dict[str, np.ndarray], positions: np.ndarray) -> None:
    """How the images timed at batch 1 (at `positions` of the test split) exited at each operating point of
    `net`: their MACs ratio, and the fraction that stopped where the replayed rule stops them."""
    cost = net.meta.cost
    cum = np.asarray(cost.cum_macs, dtype=np.float64)
    for row in net.rows:
        idx = seen.get(row.key)
        if idx is None or row.key not in net.replayed:
            continue
        row.timed = {
            "images": len(idx),
            "macs_ratio": float(cum[idx].mean() / cost.full_macs),
            "same_exit_as_replay": float((net.replayed[row.key][positions] == idx).mean()),
        }


# ---- comparing --------------------------------------------------------------------------------------------


def closest_from_above(row: Row, statics: Sequence[Row]) -> Row | None:
    """The static network whose test accuracy is closest to `row`'s from above (at least as accurate; the faster
    at batch 1 among equals); None when none is as accurate."""
    above = [s for s in statics if s.accuracy >= row.accuracy and s.key != row.key]
    return min(above, key=lambda s: (s.accuracy, s.ms_b1)) if above else None


def beats(static: Row, row: Row) -> bool:
    """Whether `static` is at least as accurate as `row` and faster than it at batch 1 and at batch 256."""
    return static.accuracy >= row.accuracy and static.ms_b1 < row.ms_b1 and static.per_s_b256 > row.per_s_b256


def ratios(row: Row, static: Row) -> tuple[float, float]:
    """(batch-1 latency, batch-256 throughput) of `row` as multiples of `static`'s."""
    return row.ms_b1 / static.ms_b1, row.per_s_b256 / static.per_s_b256


def _acc(r: Row) -> str:
    return f"{100 * r.accuracy:.2f}%"


def _speed(r: Row) -> str:
    return f"{_acc(r)} at {r.ms_b1:.2f} ms/image (batch 1) and {r.per_s_b256:.0f} images/s (batch 256)"


def _group_name(points: Sequence[Row], epochs: int | None) -> str:
    models = sorted({p.model for p in points})
    trained = f"{epochs}-epoch" if epochs is not None else "unknown-epoch"
    if len(models) == 1:
        return f"the {trained} model ({models[0]})"
    return f"the {trained} models ({', '.join(models)})"


def verdicts(rows: Sequence[Row]) -> list[str]:
    """One-line verdicts from the measured numbers: for each static network, which certified early-exit points it
    beats (`beats`: at least as accurate, faster at batch 1 and at batch 256), grouped by training epochs; for
    each point no static network beats, how it compares with the static networks; then the count beaten."""
    statics = sorted((r for r in rows if r.kind == STATIC), key=lambda r: -r.accuracy)
    points = [r for r in rows if r.kind == POINT]
    if not statics:
        return ["No static network was measured: nothing to compare."]
    if not points:
        return ["No early-exit operating point could be certified: nothing to compare."]
    groups: dict[int | None, list[Row]] = {}
    for p in sorted(points, key=lambda p: (p.epochs is None, p.epochs or 0)):
        groups.setdefault(p.epochs, []).append(p)
    out = []
    for s in statics:
        parts = []
        for epochs, ps in groups.items():
            won = [p for p in ps if beats(s, p)]
            who = _group_name(ps, epochs)
            if len(won) == len(ps):
                parts.append(f"all {len(ps)} certified early-exit points of {who}")
            elif won:
                parts.append(
                    f"{len(won)} of the {len(ps)} certified points of {who}: {', '.join(p.label for p in won)}"
                )
            else:
                parts.append(f"none of the {len(ps)} certified points of {who}")
        trained = f" ({s.epochs} epochs)" if s.epochs is not None else ""
        out.append(f"{s.label}{trained}: {_speed(s)} — beats {'; '.join(parts)}.")
    for p in points:
        if any(beats(s, p) for s in statics):
            continue
        head = f"{p.label} ({p.epochs} epochs): {_speed(p)}"
        c = closest_from_above(p, statics)
        if c is None:
            out.append(
                f"{head} — more accurate than every static network (the most accurate: {statics[0].label}, "
                f"{_acc(statics[0])})."
            )
            continue
        lat, thr = ratios(p, c)
        out.append(
            f"{head} — against {c.label} ({_acc(c)}), the static network closest in accuracy from above: "
            f"{lat:.2f}× its latency at batch 1 ({'faster' if lat < 1 else 'slower'}), {thr:.2f}× its throughput "
            f"at batch 256 ({'faster' if thr > 1 else 'slower'})."
        )
    beaten = sum(any(beats(s, p) for s in statics) for p in points)
    out.append(
        f"{beaten} of the {len(points)} certified early-exit points are beaten by a static network (at least as "
        "accurate, faster at batch 1 and at batch 256)."
    )
    return out


def table(rows: Sequence[Row], default_macs: float) -> str:
    """The markdown table: every row with its cost, accuracy, measured speed and, for the early-exit model's
    rows, its speed against the static network closest in accuracy from above."""
    statics = [r for r in rows if r.kind == STATIC]
    lines = [
        f"| Network / operating point | epochs | params | expected MACs (% of {default_macs / 1e6:.2f} M) | test acc "
        "| ms/image, batch 1 | images/s, batch 256 | vs the static network closest in accuracy from above "
        "(latency b1, throughput b256) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.kind == STATIC:
            versus = "—"
        elif (c := closest_from_above(r, statics)) is None:
            versus = "none is as accurate"
        else:
            lat, thr = ratios(r, c)
            versus = f"{c.label.removeprefix('static, ')} ({_acc(c)}): {lat:.2f}× latency, {thr:.2f}× throughput"
        lines.append(
            f"| {r.label} | {r.epochs if r.epochs is not None else '?'} | {r.params / 1e3:.1f} k "
            f"| {r.macs / 1e6:.2f} M ({100 * r.macs / default_macs:.1f}%) | {_acc(r)} | {r.ms_b1:.3f} "
            f"| {r.per_s_b256:.0f} | {versus} |"
        )
    return "\n".join(lines)


def same_network_spread(rows: Sequence[Row]) -> tuple[int, float, float] | None:
    """Run-to-run noise seen in this run: among the rows run without exits that compute the same MACs (to 0.1%),
    the largest such group's (size, max / min - 1 of the batch-1 latency, of the batch-256 throughput); None when
    no two rows compute the same."""
    plain = sorted((r for r in rows if r.kind != POINT), key=lambda r: r.macs)
    groups: list[list[Row]] = []
    for r in plain:
        if groups and r.macs <= groups[-1][0].macs * 1.001:
            groups[-1].append(r)
        else:
            groups.append([r])
    group = max(groups, key=len, default=[])
    if len(group) < 2:
        return None
    ms, per_s = [r.ms_b1 for r in group], [r.per_s_b256 for r in group]
    return len(group), max(ms) / min(ms) - 1, max(per_s) / min(per_s) - 1


def _noise(rows: Sequence[Row]) -> str:
    spread = same_network_spread(rows)
    if spread is None:
        return ""
    n, b1, b256 = spread
    return (
        f" The {n} rows that run the same computation without exits differ by up to {100 * b1:.0f}% in latency at "
        f"batch 1 and {100 * b256:.0f}% in throughput at batch 256: smaller differences are within this run's noise."
    )


def _agreement(rows: Sequence[Row]) -> str:
    """A sentence on how the timed images exited at the early-exit points (empty when none was timed)."""
    timed = [r.timed for r in rows if r.timed]
    if not timed:
        return ""
    same = min(t["same_exit_as_replay"] for t in timed)
    if same == 1:
        return " Every image timed at batch 1 stopped at the exit the replayed rule gives."
    return f" Of the images timed at batch 1, at least {100 * same:.1f}% stopped at the exit the replayed rule gives."


def block(rows: Sequence[Row], default_macs: float, notes: Sequence[str], how: dict[str, Any]) -> str:
    """The markdown between the latency markers of docs/RESULTS.md."""
    parts = [
        "### Accuracy against measured latency",
        "",
        f"_Measured by `{how['command']}` ({how['machine']})._ Every network ran on the first {how['n1']} test "
        f"images at batch 1 and the first {how['n256']} at batch 256, prepared for inference the same way "
        "(BatchNorm folded, channels-last); the networks took turns in one process and each keeps its fastest "
        f"of {how['rounds']} round{'s' if how['rounds'] != 1 else ''}. Early-exit points: {RULE} thresholds "
        "certified on validation "
        f"({100 * CONFIDENCE:g}% confidence) for a drop of at most {MAX_DROP:g} points against the final exit or "
        "for a MACs budget, run by the runtime that stops computing for the images that exit; their accuracy and "
        f"expected MACs are those of the whole test set.{_agreement(rows)} Latency ratios below 1 and throughput "
        f"ratios above 1 favour early exit.{_noise(rows)}",
        "",
        table(rows, default_macs),
    ]
    if notes:
        parts += ["", *(f"- not in the table: {n}" for n in notes)]
    parts += [
        "",
        "Verdicts (a network beats another when it is at least as accurate on test and faster at batch 1 and at "
        "batch 256):",
        "",
        *(f"- {v}" for v in verdicts(rows)),
    ]
    parts += ["", "![Accuracy against measured latency](static_vs_early_exit.png)"]
    return "\n".join(parts)


def plot(rows: Sequence[Row], out: Path) -> None:
    """Test accuracy against measured batch-1 latency: each early-exit model's points (its final exit run
    without exits included) as a line, the static networks as diamonds."""
    import altair as alt
    import pandas as pd

    data = pd.DataFrame(
        [
            {
                "network": r.label if r.kind == STATIC else f"{r.model} ({r.epochs} epochs)",
                "static": r.kind == STATIC,
                "accuracy %": 100 * r.accuracy,
                "ms per image": r.ms_b1,
            }
            for r in rows
            if math.isfinite(r.ms_b1)
        ]
    )
    enc = {
        "x": alt.X("ms per image:Q", scale=alt.Scale(zero=False), title="measured ms per image at batch 1"),
        "y": alt.Y("accuracy %:Q", scale=alt.Scale(zero=False), title="test accuracy %"),
        "color": alt.Color("network:N", scale=alt.Scale(scheme="tableau10")),
    }
    lines = alt.Chart(data[~data["static"]]).mark_line(point=True).encode(**enc)
    diamonds = alt.Chart(data[data["static"]]).mark_point(shape="diamond", size=120, filled=True).encode(**enc)
    chart = (lines + diamonds).properties(
        width=640,
        height=400,
        title=[
            "Fashion-MNIST: test accuracy vs measured latency (batch 1)",
            f"early exit: {RULE} settings certified on validation, plus the model's final exit run without "
            "exits, one line per model; static networks: diamonds",
        ],
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


def payload(rows: Sequence[Row], ref_macs: float, notes: Sequence[str], how: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run, for docs/static_vs_early_exit.json."""
    statics = [r for r in rows if r.kind == STATIC]
    out = []
    for r in rows:
        d = asdict(r)
        d["macs_percent_of_default"] = 100 * r.macs / ref_macs
        c = closest_from_above(r, statics) if r.kind != STATIC else None
        if c is not None:
            lat, thr = ratios(r, c)
            d.update(closest_static=c.key, latency_ratio_b1=lat, throughput_ratio_b256=thr)
        out.append(d)
    settings = {"rule": RULE, "confidence": CONFIDENCE, "max_drop_points": MAX_DROP, "macs_budgets": list(BUDGETS)}
    spread = same_network_spread(rows)
    noise = None if spread is None else dict(zip(("rows", "latency_b1", "throughput_b256"), spread, strict=True))
    return _plain(
        {
            **how,
            **settings,
            "default_macs": ref_macs,
            "rows": out,
            "same_computation_spread": noise,
            "notes": list(notes),
            "verdicts": verdicts(rows),
        }
    )


def command(a: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    parts = [
        "python -m benchmarks.static_vs_early_exit",
        f"--threads {a.threads} --n1 {a.n1} --n256 {a.n256} --rounds {a.rounds}",
    ]
    if a.checkpoints != ",".join(CHECKPOINTS):
        parts.append(f"--checkpoints {a.checkpoints}")
    if a.statics != ",".join(STATICS):
        parts.append(f"--statics {a.statics}")
    return " ".join(parts)


def run(a: argparse.Namespace) -> None:
    """Load, certify, measure, print and (unless --no-write) write the JSON, the plot and the RESULTS.md block."""
    for flag in ("threads", "n1", "n256", "rounds"):
        if getattr(a, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(a, flag)}.")
    machine = setup(a.threads)
    print(machine)
    names = [n for n in a.statics.split(",") if n], [n for n in a.checkpoints.split(",") if n]
    nets, notes = load_networks(*names)
    for n in notes:
        print(f"note: {n}")
    if not nets:
        raise ConfigError("No network to measure: every static network is missing and --checkpoints is empty.")
    images = first_test_images(nets, max(a.n1, a.n256))
    sizes = {1: min(a.n1, len(images)), 256: min(a.n256, len(images))}
    print(f"timing {len(nets)} networks: {sizes[1]} images at batch 1, {sizes[256]} at batch 256, best of {a.rounds}")
    measure(nets, images, sizes, a.rounds)
    statics = sorted((n.rows[0] for n in nets if n.rows[0].kind == STATIC), key=lambda r: -r.accuracy)
    rows = statics + [r for n in nets if n.rows[0].kind != STATIC for r in n.rows]
    ref = default_macs(nets)
    how = {"command": command(a), "machine": machine, "threads": a.threads, "rounds": a.rounds}
    how.update(n1=sizes[1], n256=sizes[256])
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
    ap.add_argument("--n1", type=int, default=200, help="test images timed at batch 1")
    ap.add_argument("--n256", type=int, default=768, help="test images timed at batch 256")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; each network keeps its fastest")
    ap.add_argument("--checkpoints", default=",".join(CHECKPOINTS), help="early-exit models: names or .pt paths")
    ap.add_argument("--statics", default=",".join(STATICS), help="static networks: names or .pt paths")
    ap.add_argument("--no-write", action="store_true", help="print only")
    try:
        run(ap.parse_args(argv))
    except AepError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
