"""The results table of docs/RESULTS.md: every method of the comparison set (see scripts/train_pretrained.sh),
measured from its checkpoint and its evaluation files, with the per-seed spread where several seeds exist.

    python -m benchmarks.results_table            # prints the tables, rewrites the generated part of
                                                  # docs/RESULTS.md, docs/results.json and the plot
    python -m benchmarks.results_table --no-write # print only

Every threshold is chosen on the validation split and reported on the test split.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aep_core.analysis.pruning import choose_cut, measure_prune_latency, prune_model
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import oracle
from aep_core.exits.solvers import MacsBudget, MinAccuracy, accuracy_floor, solve
from aep_core.paths import PROJECT_DIR

from ._common import load_model_and_records, setup

ROOT = PROJECT_DIR
SHIP, RUNS = ROOT / "assets" / "models", ROOT / "runs" / "compare"
DOCS = ROOT / "docs"
BUDGETS = (0.25, 0.5, 0.75)
PLOT_BUDGETS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass
class Row:
    """One method of the comparison set: its label and the checkpoints of its seeds (seed 0 first)."""

    name: str
    label: str
    seeds: list[Path]


def _epochs(path: Path) -> str:
    """The number of epochs a checkpoint trained for, from its metadata ('?' if it cannot be read)."""
    from aep_core.checkpoint import read_checkpoint
    from aep_core.errors import AepError

    try:
        return str(read_checkpoint(path).meta.training.config["epochs"])
    except (AepError, KeyError):
        return "?"


def comparison_set() -> list[Row]:
    """The methods in the order of the table; seed 0 is shipped (except the 6-epoch AEP hybrid)."""

    def seeds(stem: str, shipped: bool = True) -> list[Path]:
        first = SHIP / f"{stem}.pt" if shipped else RUNS / f"{stem}_s0.pt"
        return [first] + [RUNS / f"{stem}_s{s}.pt" for s in (1, 2)]

    return [
        Row("baseline", "Baseline (no exits)", seeds("baseline")),
        Row("aep_hybrid", "AEP hybrid", seeds("aep_hybrid", shipped=False)),
        Row("aep_uniform", "AEP uniform", seeds("aep_uniform")),
        Row("aep_linear", "AEP linear", seeds("aep_linear")),
        Row("aep_geometric", "AEP geometric", seeds("aep_geometric")),
        Row("aep_cost", "AEP cost", seeds("aep_cost")),
        Row("aep_learned", "AEP learned", seeds("aep_learned")),
        Row("eenet_l01", "EENet λ=0.1", seeds("eenet_l01")),
        Row("eenet_l05", "EENet λ=0.5", seeds("eenet_l05")),
        Row("eenet_l2", "EENet λ=2", seeds("eenet_l2")),
        Row("distillation", "Self-distillation", seeds("distillation")),
        Row("classifier_wise", "Classifier-wise", seeds("classifier_wise")),
        Row("layer_wise", "Layer-wise", seeds("layer_wise")),
        Row(
            "default",
            f"AEP hybrid, shipped default ({_epochs(SHIP / 'aep_hybrid.pt')} epochs)",
            [SHIP / "aep_hybrid.pt"],
        ),
    ]


def rules_for(rec: ExitRecord) -> list[str]:
    """The exit rules worth trying on a record."""
    rules = ["max_probability", "entropy", "aep_ensemble"]
    return rules + (["eenet_confidence"] if rec.confidences is not None else [])


def best_rule(val: ExitRecord, test: ExitRecord, solve, better) -> dict | None:
    """Across the rules worth trying, the solution of `solve(val, rule, test)` that `better(a, b)` prefers
    on validation, reported on test; None for a single exit or when no rule has a solution."""
    if val.num_exits == 1:
        return None
    best = None
    for name in rules_for(val):
        try:
            sol = solve(val, name, test)
        except AepError:
            continue
        if best is None or better(sol, best):
            best = sol
    if best is None:
        return None
    return {"rule": best.rule, "test_accuracy": best.test.accuracy, "test_macs_ratio": best.test.macs_ratio}


def best_under_budget(val: ExitRecord, test: ExitRecord, budget: float) -> dict | None:
    """The rule and thresholds with the best validation accuracy within a MACs budget, reported on test."""
    return best_rule(
        val, test, lambda v, n, t: solve(v, n, MacsBudget(budget), t), lambda a, b: a.val.accuracy > b.val.accuracy
    )


def cheapest_within(val: ExitRecord, test: ExitRecord, drop_points: float) -> dict | None:
    """The cheapest rule and thresholds keeping validation accuracy within `drop_points` of the final exit."""
    floor = accuracy_floor(val, drop_points)
    return best_rule(
        val, test, lambda v, n, t: solve(v, n, MinAccuracy(floor), t), lambda a, b: a.val.macs_ratio < b.val.macs_ratio
    )


def measure(path: Path, latency: bool, with_curve: bool = False) -> dict:
    """All figures of one checkpoint (and its accuracy-vs-MACs curve under "curve" when asked)."""
    _, model, meta, val, test = load_model_and_records(path)
    w = meta.ensemble_weights or [1.0] * model.num_exits
    cut = choose_cut(val, w)
    ens_test = test.ensemble_accuracy(w)
    out = {
        "checkpoint": str(path.relative_to(ROOT)),
        "exits": model.num_exits,
        "epochs": meta.training.config["epochs"],
        "seed": meta.training.config["seed"],
        "device": meta.training.device,
        "final_accuracy": float(test.exit_accuracy()[-1]),
        "exit_accuracy": test.exit_accuracy().tolist(),
        "exit_macs_ratio": (np.asarray(test.cum_macs) / test.full_macs).tolist(),
        "ensemble_cut": cut,
        "ensemble_accuracy": float(ens_test[cut]),
        "oracle_macs_ratio": oracle(test).macs_ratio if test.num_exits > 1 else 1.0,
        "budgets": {str(b): best_under_budget(val, test, b) for b in BUDGETS},
        "within_half_point": cheapest_within(val, test, 0.5),
    }
    pruned, pmeta = prune_model(model, meta, cut)
    cost, pcost = meta.cost, pmeta.cost
    # The pruned model computes all of its exits (the AEP ensemble): its cost is the last kept exit's cum_macs.
    out["pruned"] = {
        "cut": cut,
        "params": pcost.with_exits_params,
        "params_full": cost.full_params,
        "macs": pcost.exits[-1].cum_macs,
        "macs_full": cost.full_macs,
        "test_accuracy": float(ens_test[cut]),
    }
    if latency:
        lat = measure_prune_latency(model, pruned, meta.dataset.input_shape, repeats=20)
        out["pruned"]["latency_ms"] = lat
    if with_curve:
        out["curve"] = curve(val, test)
    return out


def curve(val: ExitRecord, test: ExitRecord) -> list[dict]:
    """Test accuracy against test MACs ratio, thresholds chosen on validation for each budget."""
    pts = []
    for b in PLOT_BUDGETS:
        r = best_under_budget(val, test, b)
        if r is not None:
            pts.append({"budget": b, "macs_ratio": r["test_macs_ratio"], "accuracy": r["test_accuracy"]})
    if val.num_exits == 1 or not pts:
        pts.append({"budget": 1.0, "macs_ratio": 1.0, "accuracy": float(test.exit_accuracy()[-1])})
    return pts


def mean_sd(values: list[float]) -> str:
    """'mean ± sd' in percent for several seeds, or the one value."""
    v = 100 * np.asarray(values, dtype=np.float64)
    return f"{v[0]:.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def fmt_budget(entries: list[dict | None]) -> str:
    """Accuracy at a budget over seeds (with the rule of seed 0), or a dash when no rule fits the budget."""
    if any(e is None for e in entries):
        return "—"
    return f"{mean_sd([e['test_accuracy'] for e in entries])} ({short(entries[0]['rule'])})"


def short(rule: str) -> str:
    return {"max_probability": "maxp", "entropy": "ent", "aep_ensemble": "ens", "eenet_confidence": "conf"}[rule]


def tables(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """The markdown tables."""
    head = (
        "| Method | seeds | final exit | best ensemble | @25% MACs | @50% MACs | @75% MACs | "
        "cheapest within 0.5 pt | oracle MACs |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        rs = results.get(row.name)
        if not rs:
            continue
        within = [r["within_half_point"] for r in rs]
        wtxt = (
            "—"
            if any(w is None for w in within)
            else (
                f"{mean_sd([w['test_accuracy'] for w in within])} at "
                f"{100 * np.mean([w['test_macs_ratio'] for w in within]):.1f}% ({short(within[0]['rule'])})"
            )
        )
        lines.append(
            f"| {row.label} | {len(rs)} | {mean_sd([r['final_accuracy'] for r in rs])} | "
            f"{mean_sd([r['ensemble_accuracy'] for r in rs])} (exits 0..{rs[0]['ensemble_cut']}) | "
            + " | ".join(fmt_budget([r["budgets"][str(b)] for r in rs]) for b in BUDGETS)
            + f" | {wtxt} | {100 * np.mean([r['oracle_macs_ratio'] for r in rs]):.1f}% |"
        )
    cheapest = min(r[0]["exit_macs_ratio"][0] for r in results.values())
    unreachable = [b for b in BUDGETS if b < cheapest]
    if unreachable:
        lines += [
            "",
            f"— at {', '.join(f'{100 * b:.0f}%' for b in unreachable)} of the MACs: no setting reaches "
            f"that cost, since exit 0 alone costs {100 * cheapest:.1f}% of the network without exits.",
        ]
    lines += [
        "",
        "Pruned at the cut with the best validation ensemble (seed 0; parameters and MACs include the kept "
        "exit heads, latency is the fastest of 20 runs in one process, alternating the models):",
        "",
        "| Method | cut | params (vs no exits) | MACs (vs no exits) | latency b1 ms (vs no exits) | "
        "latency b256 ms (vs no exits) | test acc (vs final exit) |",
        "|---|---|---|---|---|---|---|",
    ]

    def rel(a: float, b: float) -> str:
        return f"{100 * (a / b - 1):+.1f}%"

    for row in rows:
        rs = results.get(row.name)
        if not rs:
            continue
        p, r = rs[0]["pruned"], rs[0]
        lat = p.get("latency_ms") or {}
        b1 = f"{lat['pruned@1']:.2f} ({rel(lat['pruned@1'], lat['full@1'])})" if lat else "—"
        b256 = f"{lat['pruned@256']:.1f} ({rel(lat['pruned@256'], lat['full@256'])})" if lat else "—"
        gain = 100 * (p["test_accuracy"] - r["final_accuracy"])
        lines.append(
            f"| {row.label} | exit {p['cut']} of {r['exits'] - 1} | {p['params'] / 1e3:.1f} k "
            f"({rel(p['params'], p['params_full'])}) | {p['macs'] / 1e6:.2f} M "
            f"({rel(p['macs'], p['macs_full'])}) | {b1} | {b256} | {100 * p['test_accuracy']:.2f} "
            f"({gain:+.2f} pt) |"
        )
    return "\n".join(lines)


def per_exit_table(results: dict[str, list[dict]], rows: list[Row]) -> str:
    """Test accuracy of every exit on its own (seed 0), with the MACs share at which it answers."""
    first = max((rs[0] for rs in results.values()), key=lambda r: r["exits"])
    macs = " | ".join(f"exit {i} ({100 * m:.0f}%)" for i, m in enumerate(first["exit_macs_ratio"]))
    lines = [f"| Method | {macs} |", "|---|" + "---|" * len(first["exit_macs_ratio"])]
    for row in rows:
        rs = results.get(row.name)
        if not rs or rs[0]["exits"] != len(first["exit_macs_ratio"]):
            continue
        lines.append(f"| {row.label} | " + " | ".join(f"{100 * a:.2f}" for a in rs[0]["exit_accuracy"]) + " |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], labels: dict[str, str], out: Path) -> None:
    """Accuracy vs MACs ratio of every method, as a PNG."""
    import altair as alt
    import pandas as pd

    data = pd.DataFrame(
        [
            {**p, "method": labels[name], "accuracy %": 100 * p["accuracy"], "MACs %": 100 * p["macs_ratio"]}
            for name, pts in curves.items()
            for p in pts
        ]
    )
    # Below 80% a curve only says "not usable at this cost"; leaving those points out keeps the top legible.
    data = data[data["accuracy %"] >= 80]
    base = alt.Chart(data).encode(
        x=alt.X("MACs %:Q", scale=alt.Scale(domain=[25, 102])),
        y=alt.Y("accuracy %:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("method:N", scale=alt.Scale(scheme="tableau20")),
    )
    chart = (base.mark_line(point=True)).properties(
        width=640,
        height=400,
        title=[
            "Fashion-MNIST test accuracy vs expected MACs",
            "thresholds chosen on validation; points below 80% left out",
        ],
    )
    chart.save(str(out), scale_factor=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-latency", action="store_true", help="skip latency timing of the pruned models")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    machine = setup(a.threads)
    print(machine)
    rows = comparison_set()
    results: dict[str, list[dict]] = {}
    curves: dict[str, list[dict]] = {}
    for row in rows:
        paths = [p for p in row.seeds if p.is_file()]
        if not paths:
            print(f"{row.name}: no checkpoint yet, skipped")
            continue
        results[row.name] = [
            measure(p, latency=(i == 0 and not a.no_latency), with_curve=(i == 0)) for i, p in enumerate(paths)
        ]
        curves[row.name] = results[row.name][0].pop("curve")
        print(f"{row.name}: {len(paths)} seed(s) measured")
    text = (
        tables(results, rows)
        + "\n\nPer-exit test accuracy (%), each exit on its own:\n\n"
        + per_exit_table(results, rows)
    )
    print(text)
    if a.no_write:
        return
    DOCS.mkdir(exist_ok=True)
    (DOCS / "results.json").write_text(json.dumps({"machine": machine, "results": results, "curves": curves}, indent=1))
    plot(curves, {r.name: r.label for r in rows}, DOCS / "results_accuracy_vs_macs.png")
    md = DOCS / "RESULTS.md"
    block = f"{BEGIN}\n_Generated by `python -m benchmarks.results_table` ({machine})._\n\n{text}\n{END}"
    old = md.read_text() if md.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    md.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S))
    print(f"wrote {md.relative_to(ROOT)}, docs/results.json, docs/results_accuracy_vs_macs.png")


if __name__ == "__main__":
    main()
