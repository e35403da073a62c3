"""The results of docs/RESULTS.md: every model of the comparison set (see scripts/train_pretrained.sh), from
its shipped evaluation files (seed 0 in assets/models, other seeds in assets/compare) and, for the pruning
and static-network tables, its shipped checkpoint.

    python -m benchmarks.results_table            # prints the tables, rewrites the generated part of
                                                  # docs/RESULTS.md, docs/results.json and the plot
    python -m benchmarks.results_table --no-write # print only

Every threshold, rule, cut and weight is chosen on the validation split (or, for fitted ensemble weights,
on training images held out of training); the test split is only reported. The derived tables are a pure
function of the shipped files (`derived_results`, `derived_text`), so tests/test_results_doc.py recomputes
them; latency is measured, kept in docs/results.json and quoted from there.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aep_core.analysis.pruning import choose_cut, measure_prune_latency, prune_model
from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import certify, drop_against
from aep_core.exits.rules import oracle, replay_rule
from aep_core.exits.solvers import MinAccuracy, Solution, accuracy_floor, solve
from aep_core.paths import PROJECT_DIR

from ._common import setup

ROOT = PROJECT_DIR
SHIP, EVALS = ROOT / "assets" / "models", ROOT / "assets" / "compare"
DOCS = ROOT / "docs"
MAX_DROP = 0.5  # points, against the final exit
CONFIDENCE = 0.9
BUDGETS = (0.5, 0.75)
PLOT_BUDGETS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9)
# Seeds shipped for the headline rows (baseline, AEP hybrid, EENet λ=0.5), all on validation split 0
HEADLINE_SEEDS = (0,)
# Rows trained for the default's 30 epochs (left out of the 6-epoch comparison with static networks); the last is
# the app's default
LONG_RUNS = {
    "aep_hybrid_e30": "AEP hybrid, 30 epochs",
    "aep_hybrid_narrow_stem": "AEP hybrid, narrow first stage, 30 epochs",
    DEFAULT_MODEL: "Cascade (1/4, 1/2, then 3/2 width), shipped default",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
MEASURED_BEGIN, MEASURED_END = "<!-- measured:begin -->", "<!-- measured:end -->"


@dataclass
class Row:
    """One model of the comparison set: its label and the evaluation-file stems of its seeds (seed 0 first);
    `checkpoint` is the shipped checkpoint of seed 0, if any."""

    name: str
    label: str
    stems: list[Path]
    checkpoint: Path | None
    static: bool = False


def comparison_set() -> list[Row]:
    """The models in the order of the tables."""

    def shipped(name: str, label: str, seeds: bool = False, static: bool = False) -> Row:
        extra = [EVALS / f"{name}_s{s}" for s in HEADLINE_SEEDS if s > 0] if seeds else []
        return Row(name, label, [SHIP / name, *extra], SHIP / f"{name}.pt", static)

    return [
        shipped("baseline", "Baseline (no exits)", seeds=True),
        Row("aep_hybrid", "AEP hybrid", [EVALS / f"aep_hybrid_s{s}" for s in HEADLINE_SEEDS], None),
        shipped("aep_uniform", "AEP uniform"),
        shipped("aep_linear", "AEP linear"),
        shipped("aep_geometric", "AEP geometric"),
        shipped("aep_cost", "AEP cost"),
        shipped("aep_learned", "AEP learned"),
        shipped("eenet_l01", "EENet λ=0.1"),
        shipped("eenet_l05", "EENet λ=0.5", seeds=True),
        shipped("eenet_l2", "EENet λ=2"),
        shipped("distillation", "Self-distillation"),
        shipped("classifier_wise", "Classifier-wise"),
        shipped("layer_wise", "Layer-wise"),
        shipped("static_w075", "Static, 3/4 width", static=True),
        shipped("static_w050", "Static, 1/2 width", static=True),
        shipped("static_w025", "Static, 1/4 width", static=True),
        shipped("static_shallow", "Static, 1 conv per stage", static=True),
        Row("aep_hybrid_e30", "AEP hybrid, 30 epochs", [SHIP / "aep_hybrid"], SHIP / "aep_hybrid.pt"),
        *(shipped(name, label) for name, label in LONG_RUNS.items() if name != "aep_hybrid_e30"),
    ]


def records(stem: Path) -> tuple[ExitRecord, ExitRecord]:
    """The validation and test evaluation files of a stem."""
    return load_evaluation(f"{stem}.val.npz"), load_evaluation(f"{stem}.test.npz")


def rules_for(rec: ExitRecord) -> list[str]:
    """The exit rules tried on a record."""
    rules = ["max_probability", "entropy", "aep_ensemble"]
    return rules + (["eenet_confidence"] if rec.confidences is not None else [])


def _outcome(sol: Solution, test: ExitRecord) -> dict[str, Any]:
    return {
        "rule": sol.rule,
        "thresholds": [round(float(t), 6) for t in sol.settings["thresholds"]],
        "val_macs_ratio": sol.val.macs_ratio,
        "test_accuracy": sol.test.accuracy,
        "test_macs_ratio": sol.test.macs_ratio,
        "test_drop_points": drop_against(sol.test, test, sol.rule, "final", sol.settings.get("weights")),
    }


def pick(val: ExitRecord, test: ExitRecord, attempt: Callable[[str], Solution], key) -> dict[str, Any] | None:
    """Across the rules tried, the solution `attempt(rule)` with the smallest `key(solution)` (judged on
    validation), reported on test; None for a single exit or when no rule has one."""
    if val.num_exits == 1:
        return None
    found = []
    for name in rules_for(val):
        try:
            found.append(attempt(name))
        except AepError:
            continue
    if not found:
        return None
    best = min(found, key=key)
    out = _outcome(best, test)
    if hasattr(best, "macs_bound"):
        out["macs_bound"] = best.macs_bound
    return out


def per_rule_confidence(rec: ExitRecord) -> float:
    """The confidence each rule is certified at, so that choosing one of them on validation keeps the overall
    guarantee at CONFIDENCE (Bonferroni over the rules tried)."""
    return 1 - (1 - CONFIDENCE) / len(rules_for(rec))


def certified_within(val: ExitRecord, test: ExitRecord, drop_points: float) -> dict[str, Any] | None:
    """The cheapest (on validation) certified setting whose expected drop against the final exit is at most
    `drop_points`, over the rules tried, reported on test."""
    conf = per_rule_confidence(val)
    return pick(
        val,
        test,
        lambda n: certify(val, n, max_drop_points=drop_points, confidence=conf, test=test),
        lambda s: s.val.macs_ratio,
    )


def certified_budget(val: ExitRecord, test: ExitRecord, budget: float) -> dict[str, Any] | None:
    """The most accurate (on validation) setting whose expected MACs ratio is certified at most `budget`."""
    conf = per_rule_confidence(val)
    return pick(
        val,
        test,
        lambda n: certify(val, n, max_macs_ratio=budget, confidence=conf, test=test),
        lambda s: -s.val.accuracy,
    )


def optimistic_within(val: ExitRecord, test: ExitRecord, drop_points: float) -> dict[str, Any] | None:
    """The cheapest setting keeping validation accuracy within `drop_points` of the final exit, without a
    guarantee (the solver), reported on test."""
    floor = MinAccuracy(accuracy_floor(val, drop_points))
    return pick(val, test, lambda n: solve(val, n, floor, test), lambda s: s.val.macs_ratio)


def eenet_rule(test: ExitRecord) -> dict[str, Any] | None:
    """The EENets paper's own inference rule on test: stop at the first exit whose confidence h >= 0.5."""
    if test.confidences is None:
        return None
    res = replay_rule(test, "eenet_confidence", thresholds=0.5)
    return {"test_accuracy": res.accuracy, "test_macs_ratio": res.macs_ratio}


def derive(val: ExitRecord, test: ExitRecord) -> dict[str, Any]:
    """Every figure of one model's seed that comes from its evaluation files."""
    w = val.info.get("ensemble_weights") or [1.0] * val.num_exits
    cut = choose_cut(val, w)
    out: dict[str, Any] = {
        "exits": val.num_exits,
        "ensemble_weights": [float(v) for v in w],
        "full_macs": int(test.full_macs),
        "final_accuracy": float(test.exit_accuracy()[-1]),
        "exit_accuracy": test.exit_accuracy().tolist(),
        "exit_macs_ratio": (np.asarray(test.cum_macs) / test.full_macs).tolist(),
        "ensemble_prefix_accuracy": test.ensemble_accuracy(w).tolist(),
        "ensemble_cut": cut,
        "ensemble_accuracy": float(test.ensemble_accuracy(w)[cut]),
        "oracle_accuracy": oracle(test).accuracy if test.num_exits > 1 else float(test.exit_accuracy()[-1]),
        "oracle_macs_ratio": oracle(test).macs_ratio if test.num_exits > 1 else 1.0,
    }
    if val.num_exits > 1:
        out["certified"] = certified_within(val, test, MAX_DROP)
        out["optimistic"] = optimistic_within(val, test, MAX_DROP)
        out["budgets"] = {str(b): certified_budget(val, test, b) for b in BUDGETS}
        out["eenet_rule"] = eenet_rule(test)
    return out


def derived_results(rows: list[Row] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every row's derived figures, one dict per seed whose evaluation files are shipped."""
    out = {}
    for row in rows or comparison_set():
        seeds = [derive(*records(stem)) for stem in row.stems if Path(f"{stem}.test.npz").is_file()]
        if seeds:
            out[row.name] = seeds
    return out


def curve(val: ExitRecord, test: ExitRecord) -> list[dict[str, float]]:
    """Test accuracy against test MACs ratio at each certified budget, the final exit at 100%."""
    pts = [{"budget": 1.0, "macs_ratio": 1.0, "accuracy": float(test.exit_accuracy()[-1])}]
    if val.num_exits > 1:
        for b in PLOT_BUDGETS:
            r = certified_budget(val, test, b)
            if r is not None:
                pts.append({"budget": b, "macs_ratio": r["test_macs_ratio"], "accuracy": r["test_accuracy"]})
    return pts


def pct(v: float, digits: int = 2) -> str:
    return f"{100 * v:.{digits}f}"


def mean_sd(values: list[float]) -> str:
    """'mean ± sd' in percent for several seeds, or the one value."""
    v = 100 * np.asarray(values, dtype=np.float64)
    return f"{v[0]:.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def short(rule: str) -> str:
    return {"max_probability": "maxp", "entropy": "ent", "aep_ensemble": "ens", "eenet_confidence": "conf"}[rule]


def _point(entries: list[dict | None], drop: bool = False) -> str:
    """Test accuracy (and drop) at the mean test MACs over seeds, with the rule of seed 0."""
    if not entries or any(e is None for e in entries):
        return "—"
    acc = mean_sd([e["test_accuracy"] for e in entries])
    macs = 100 * np.mean([e["test_macs_ratio"] for e in entries])
    extra = f", drop {np.mean([e['test_drop_points'] for e in entries]):.2f}" if drop else ""
    rule = f" ({short(entries[0]['rule'])})" if "rule" in entries[0] else ""
    return f"{acc}{extra} at {macs:.1f}%{rule}"


def main_table(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """One line per early-exit model: accuracy, certified and optimistic operating points, EENet's own rule."""
    lines = [
        "| Model | seeds | final exit | ensemble (cut) | certified ≤0.5 pt (90%) | optimistic ≤0.5 pt on val "
        "| certified ≤50% MACs | certified ≤75% MACs | EENet rule h ≥ 0.5 | oracle MACs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rs = results.get(row.name)
        if not rs or row.static:
            continue
        has_exits = rs[0]["exits"] > 1

        def get(key: str, rs: list[dict] = rs) -> list:
            return [r.get(key) for r in rs]

        cells = [
            row.label,
            str(len(rs)),
            mean_sd([r["final_accuracy"] for r in rs]),
            f"{mean_sd([r['ensemble_accuracy'] for r in rs])} (exits 0..{rs[0]['ensemble_cut']})",
            _point(get("certified"), drop=True) if has_exits else "—",
            _point(get("optimistic"), drop=True) if has_exits else "—",
            *(_point([r["budgets"][str(b)] for r in rs]) if has_exits else "—" for b in BUDGETS),
            _point(get("eenet_rule")) if has_exits and rs[0].get("eenet_rule") else "—",
            f"{100 * np.mean([r['oracle_macs_ratio'] for r in rs]):.1f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_exit_table(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """Test accuracy of every exit on its own and of the ensemble of each prefix (seed 0)."""
    first = max((rs[0] for rs in results.values()), key=lambda r: r["exits"])
    n = first["exits"]
    macs = " | ".join(f"exit {i} ({100 * m:.0f}%)" for i, m in enumerate(first["exit_macs_ratio"]))
    lines = [f"| Model | | {macs} |", "|---|---|" + "---|" * n]
    for row in rows:
        rs = results.get(row.name)
        if not rs or rs[0]["exits"] != n:
            continue
        r = rs[0]
        label = row.label
        if not np.allclose(r["exit_macs_ratio"], first["exit_macs_ratio"], atol=0.005):  # other exit costs: say so
            label += " (exits at " + ", ".join(f"{100 * m:.0f}%" for m in r["exit_macs_ratio"]) + " of its MACs)"
        lines.append(f"| {label} | exit | " + " | ".join(pct(a) for a in r["exit_accuracy"]) + " |")
        w = ", ".join(f"{v:.2f}" for v in r["ensemble_weights"])
        lines.append(
            f"| | ensemble 0..k (w = {w}) | " + " | ".join(pct(a) for a in r["ensemble_prefix_accuracy"]) + " |"
        )
    return "\n".join(lines)


def ensemble_gains(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """For each model whose ensemble uses more than one exit, the prefixes where the AEP ensemble of exits 0..k
    beats exit k alone on test (seed 0), in points."""
    lines = []
    for row in rows:
        rs = results.get(row.name)
        if not rs or rs[0]["exits"] < 2:
            continue
        r = rs[0]
        gains = [
            (k, 100 * (e - x))
            for k, (e, x) in enumerate(zip(r["ensemble_prefix_accuracy"], r["exit_accuracy"], strict=True))
            if k > 0
        ]
        better = [f"k = {k} ({g:+.2f})" for k, g in gains if g > 0]
        lines.append(f"- {row.label}: " + (", ".join(better) if better else "at no prefix"))
    return "\n".join(lines)


def static_table(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """The static networks beside the best certified early-exit point (6-epoch models) at no more MACs."""
    default_full = results["baseline"][0]["full_macs"]
    lines = [
        "| Static network | MACs (vs the default width) | test accuracy | best certified early exit at ≤ these MACs "
        "(6 epochs) | verdict |",
        "|---|---|---|---|---|",
    ]
    exit_rows = [r for r in rows if not r.static and r.name not in LONG_RUNS and r.name in results]
    for row in rows:
        if not row.static or row.name not in results:
            continue
        s = results[row.name][0]
        ratio = s["full_macs"] / default_full
        best, best_label = None, ""
        for er in exit_rows:
            if results[er.name][0]["exits"] < 2:
                continue
            entry = results[er.name][0].get("static_match", {}).get(row.name)
            if entry and (best is None or entry["test_accuracy"] > best["test_accuracy"]):
                best, best_label = entry, er.label
        if best is None:
            match, verdict = "none certified at this cost", "static network"
        else:
            match = f"{pct(best['test_accuracy'])} at {100 * best['test_macs_ratio']:.1f}% ({best_label})"
            verdict = "early exit" if best["test_accuracy"] > s["final_accuracy"] else "static network"
        lines.append(
            f"| {row.label} | {s['full_macs'] / 1e6:.2f} M ({100 * ratio:.1f}%) | {pct(s['final_accuracy'])} "
            f"| {match} | {verdict} |"
        )
    return "\n".join(lines)


def add_static_matches(results: dict[str, list[dict]], rows: list[Row]) -> None:
    """For each early-exit model (seed 0), its certified budget point at each static network's MACs."""
    default_full = results["baseline"][0]["full_macs"]
    statics = {r.name: results[r.name][0]["full_macs"] / default_full for r in rows if r.static and r.name in results}
    for row in rows:
        if row.static or row.name not in results or results[row.name][0]["exits"] < 2:
            continue
        val, test = records(row.stems[0])
        results[row.name][0]["static_match"] = {name: certified_budget(val, test, b) for name, b in statics.items()}


def cheapest_setting(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """The sentence on the least any setting can cost: exit 0 alone, as a share of each model's network without
    exits, with the models that share it."""
    by_cost: dict[str, list[str]] = {}
    for row in rows:
        rs = results.get(row.name)
        if rs and not row.static and rs[0]["exits"] > 1:
            by_cost.setdefault(f"{100 * rs[0]['exit_macs_ratio'][0]:.1f}%", []).append(row.label)
    groups = sorted(by_cost.items(), key=lambda kv: -len(kv[1]))  # the most shared cost first
    parts = [
        f"{cost} ({'every other model' if i == 0 and len(groups) > 1 and len(names) > 2 else ', '.join(names)})"
        for i, (cost, names) in enumerate(groups)
    ]
    return "No setting costs less than exit 0 alone, as a share of the network without exits: " + "; ".join(parts) + "."


def derived_text(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """The markdown of every table derived from the evaluation files."""
    return "\n".join(
        [
            main_table(results, rows),
            "",
            cheapest_setting(results, rows),
            "",
            "Each exit on its own and the AEP ensemble of exits 0..k, test accuracy (%), seed 0:",
            "",
            per_exit_table(results, rows),
            "",
            "Where the ensemble of exits 0..k beats exit k alone on test (points, seed 0):",
            "",
            ensemble_gains(results, rows),
            "",
            "Smaller static networks (no exits, the same 6-epoch budget) against early exit at the same cost:",
            "",
            static_table(results, rows),
        ]
    )


def all_derived(rows: list[Row]) -> dict[str, list[dict]]:
    """derived_results plus the static-network matches."""
    results = derived_results(rows)
    add_static_matches(results, rows)
    return results


def pruning_table(measured: dict[str, dict], rows: list[Row]) -> str:
    """Pruned at the cut with the best validation ensemble; latency measured."""

    def rel(a: float, b: float) -> str:
        return f"{100 * (a / b - 1):+.1f}%"

    lines = [
        "| Model | cut | params (vs no exits) | MACs (vs no exits) | latency b1 ms (vs no exits) | "
        "latency b256 ms (vs no exits) | test acc (vs final exit) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = measured.get(row.name)
        if not p:
            continue
        lat = p.get("latency_ms") or {}
        b1 = f"{lat['pruned@1']:.2f} ({rel(lat['pruned@1'], lat['full@1'])})" if lat else "—"
        b256 = f"{lat['pruned@256']:.1f} ({rel(lat['pruned@256'], lat['full@256'])})" if lat else "—"
        lines.append(
            f"| {row.label} | exit {p['cut']} of {p['exits'] - 1} | {p['params'] / 1e3:.1f} k "
            f"({rel(p['params'], p['params_full'])}) | {p['macs'] / 1e6:.2f} M ({rel(p['macs'], p['macs_full'])}) "
            f"| {b1} | {b256} | {pct(p['test_accuracy'])} "
            f"({100 * (p['test_accuracy'] - p['final_accuracy']):+.2f} pt) |"
        )
    return "\n".join(lines)


def measure_pruning(row: Row, latency: bool) -> dict[str, Any] | None:
    """Pruning figures of a row's shipped checkpoint (None without one or without exits)."""
    from aep_core.checkpoint import load_checkpoint

    if row.checkpoint is None or not row.checkpoint.is_file() or row.static:
        return None
    model, meta = load_checkpoint(row.checkpoint)
    val, test = records(row.stems[0])
    w = meta.ensemble_weights or [1.0] * model.num_exits
    cut = choose_cut(val, w)
    pruned, pmeta = prune_model(model, meta, cut)
    out = {
        "cut": cut,
        "exits": model.num_exits,
        "params": pmeta.cost.with_exits_params,
        "params_full": meta.cost.full_params,
        "macs": pmeta.cost.exits[-1].cum_macs,  # the pruned model computes every kept exit (the ensemble)
        "macs_full": meta.cost.full_macs,
        "test_accuracy": float(test.ensemble_accuracy(w)[cut]),
        "final_accuracy": float(test.exit_accuracy()[-1]),
    }
    if latency:
        out["latency_ms"] = measure_prune_latency(model, pruned, meta.dataset.input_shape, repeats=20)
    return out


def plot(curves: dict[str, list[dict]], labels: dict[str, str], static: set[str], out: Path) -> None:
    """Accuracy vs MACs ratio: each early-exit model's certified curve, the static networks as points."""
    import altair as alt
    import pandas as pd

    data = pd.DataFrame(
        [
            {**p, "model": labels[name], "accuracy %": 100 * p["accuracy"], "MACs %": 100 * p["macs_ratio"]}
            for name, pts in curves.items()
            for p in pts
        ]
    )
    data = data[data["accuracy %"] >= 85]  # below, a point only says "not usable at this cost"
    enc = {
        "x": alt.X("MACs %:Q", scale=alt.Scale(domain=[0, 102]), title="expected MACs, % of the network without exits"),
        "y": alt.Y("accuracy %:Q", scale=alt.Scale(zero=False), title="test accuracy %"),
        "color": alt.Color("model:N", scale=alt.Scale(scheme="tableau20")),
    }
    is_static = data["model"].isin([labels[s] for s in static])
    lines_ = alt.Chart(data[~is_static]).mark_line(point=True).encode(**enc)
    points = alt.Chart(data[is_static]).mark_point(shape="diamond", size=120, filled=True).encode(**enc)
    chart = (lines_ + points).properties(
        width=640,
        height=400,
        title=[
            "Fashion-MNIST: test accuracy vs expected MACs",
            "early exit: settings certified on validation (90%) per MACs budget; static networks: diamonds",
        ],
    )
    chart.save(str(out), scale_factor=2)


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the markers `begin` and `end` replaced by `body`."""
    block = f"{begin}\n{body}\n{end}"
    if begin not in text:
        return text.rstrip() + f"\n\n{block}\n"
    return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-latency", action="store_true", help="skip latency timing of the pruned models")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    machine = setup(a.threads)
    print(machine)
    rows = comparison_set()
    results = all_derived(rows)
    text = derived_text(results, rows)
    measured = {row.name: m for row in rows if (m := measure_pruning(row, not a.no_latency))}
    measured_text = pruning_table(measured, rows)
    print(text + "\n\n" + measured_text)
    if a.no_write:
        return
    curves = {row.name: curve(*records(row.stems[0])) for row in rows if row.name in results}
    DOCS.mkdir(exist_ok=True)
    payload = {"machine": machine, "results": results, "pruning": measured, "curves": curves}
    (DOCS / "results.json").write_text(json.dumps(payload, indent=1))
    plot(
        curves,
        {r.name: r.label for r in rows},
        {r.name for r in rows if r.static},
        DOCS / "results_accuracy_vs_macs.png",
    )
    md = DOCS / "RESULTS.md"
    old = md.read_text() if md.exists() else "# Results\n"
    new = replace_block(
        old,
        BEGIN,
        END,
        f"_Generated by `python -m benchmarks.results_table` from the shipped evaluation files._\n\n{text}",
    )
    measured_body = (
        f"_Measured by `python -m benchmarks.results_table` ({machine}); latency is the fastest of 20 runs in one "
        f"process, alternating the models._\n\n{measured_text}"
    )
    md.write_text(replace_block(new, MEASURED_BEGIN, MEASURED_END, measured_body))
    print(f"wrote {md.relative_to(ROOT)}, docs/results.json, docs/results_accuracy_vs_macs.png")


if __name__ == "__main__":
    main()
