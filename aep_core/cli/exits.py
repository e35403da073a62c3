"""Command-line sub-commands for exit policies, threshold search and pruning:
policy (replay a rule on an evaluation file), sweep (Pareto sweep), solve (budget or accuracy floor,
chosen on the val file and reported on the test file), prune (AEP prune a checkpoint)."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aep_core.cli.common import add_rule_arguments, parse_rule_settings
from aep_core.errors import ConfigError

if TYPE_CHECKING:
    from aep_core.evaluation import ExitRecord
    from aep_core.exits.solvers import Solution


def _evaluation_file(path: str, split: str) -> Path:
    """An evaluation file given directly (.npz) or as its checkpoint (.pt) plus a split."""
    from aep_core.evaluation import evaluation_path

    p = Path(path)
    return p if p.suffix == ".npz" else evaluation_path(p, split)


def _format_result(r: Any) -> str:
    dist = " ".join(f"{100 * v:5.1f}" for v in r.exit_distribution)
    pacc = " ".join("    -" if v != v else f"{100 * v:5.1f}" for v in r.per_exit_accuracy)
    pcls = " ".join("  -" if v != v else f"{v:3.1f}" for v in r.per_class_mean_exit)
    return (f"accuracy {100 * r.accuracy:.2f}%   expected MACs {r.expected_macs / 1e6:.3f} M "
            f"({100 * r.macs_ratio:.1f}% of the network without exits)\n"
            f"exit distribution %      {dist}\n"
            f"accuracy at exit %       {pacc}\n"
            f"mean exit per class      {pcls}")


def _cmd_policy(a: argparse.Namespace) -> int:
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.rules import replay_rule

    rec = load_evaluation(_evaluation_file(a.evaluation, a.split))
    r = replay_rule(rec, a.rule, **parse_rule_settings(a))
    print(json.dumps(r.summary(), indent=1) if a.json else f"{a.rule} {r.settings}\n{_format_result(r)}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.solvers import pareto_sweep

    rec = load_evaluation(_evaluation_file(a.evaluation, a.split))
    weights = parse_rule_settings(a).get("weights")
    s = pareto_sweep(rec, a.rule, points=a.points, weights=weights)
    if a.json:
        print(json.dumps(s.rows(), indent=1))
        return 0
    print(f"{'setting':>12} {'accuracy %':>10} {'MACs %':>7}  pareto")
    for row in s.rows():
        if a.all or row["pareto"]:
            val = row.get("thresholds", row.get("t", row.get("k", "")))
            print(f"{val:>12.4g} {100 * row['accuracy']:>10.2f} {100 * row['macs_ratio']:>7.1f}  {'*' if row['pareto'] else ''}")
    print(f"{len(s.settings)} settings, {int(s.pareto.sum())} on the Pareto front" + ("" if a.all else " (shown; --all for every point)"))
    return 0


def solve_for_goal(a: argparse.Namespace, val: ExitRecord, test: ExitRecord | None,
                   weights: list[float] | None) -> Solution:
    """The settings the command line's goal asks for, chosen on `val` (reported on `test` if given):
    --max-drop with --confidence certifies the drop; --budget, --max-drop or --min-accuracy solve."""
    from aep_core.exits.solvers import accuracy_floor, solve_accuracy, solve_budget

    if a.confidence is not None:
        if a.max_drop is None:
            raise ConfigError("--confidence certifies an accuracy drop: give it with --max-drop.")
        from aep_core.exits.certify import certify_max_drop

        return certify_max_drop(val, a.rule, a.max_drop, a.confidence, test, weights)
    if a.budget is not None:
        return solve_budget(val, a.rule, a.budget, test, weights)
    floor = getattr(a, "min_accuracy", None)
    return solve_accuracy(val, a.rule, floor if floor is not None else accuracy_floor(val, a.max_drop), test, weights)


def _cmd_solve(a: argparse.Namespace) -> int:
    from aep_core.evaluation import load_evaluation

    if (a.budget is None) == (a.max_drop is None and a.min_accuracy is None):
        raise ConfigError("Give exactly one goal: --budget (MACs fraction), --max-drop (points below the final exit) "
                          "or --min-accuracy (fraction).")
    val = load_evaluation(_evaluation_file(a.evaluation, "val"))
    test_path = _evaluation_file(a.test, "test") if a.test else (
        None if Path(a.evaluation).suffix == ".npz" else _evaluation_file(a.evaluation, "test"))
    test = load_evaluation(test_path) if test_path is not None else None
    sol = solve_for_goal(a, val, test, parse_rule_settings(a).get("weights"))
    if a.json:
        print(json.dumps(sol.summary(), indent=1))
        return 0
    shown = {k: ([round(x, 4) for x in v] if isinstance(v, list) else v) for k, v in sol.settings.items() if k != "weights"}
    print(f"{a.rule}, goal: {sol.goal} (chosen on validation)\nsettings {shown}")
    print(f"validation: {_format_result(sol.val)}")
    if sol.test is not None:
        print(f"test:       {_format_result(sol.test)}")
    return 0


def _cmd_prune(a: argparse.Namespace) -> int:
    import torch

    from aep_core.analysis.pruning import prune_checkpoint

    if a.threads is not None:
        torch.set_num_threads(a.threads)
    src = Path(a.checkpoint)
    out = Path(a.out) if a.out else src.with_name(f"{src.stem}.pruned.pt")
    path, report = prune_checkpoint(src, out, a.tolerance / 100.0, a.cut, a.latency_repeats)
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.format())
    print(f"saved {path} (+ its val/test evaluation files)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Register the sub-commands on `sub`; return name -> handler."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("policy", help="replay an exit policy on an evaluation file and print its metrics", formatter_class=fmt)
    add_rule_arguments(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split, when given a checkpoint")
    s = sub.add_parser("sweep", help="accuracy against MACs over a grid of settings, Pareto points marked", formatter_class=fmt)
    add_rule_arguments(s, settings=False)
    s.add_argument("--split", default="val", choices=("train", "val", "test"), help="split, when given a checkpoint")
    s.add_argument("--points", type=int, default=100, help="thresholds in the grid")
    s.add_argument("--all", action="store_true", help="print every point, not only the Pareto front")
    v = sub.add_parser("solve", help="per-exit thresholds for a MACs budget or an accuracy floor (chosen on val, "
                                     "reported on test)", formatter_class=fmt)
    add_rule_arguments(v, settings=False)
    v.add_argument("--test", default=None, help="test evaluation file (default: the checkpoint's, if a .pt was given)")
    v.add_argument("--budget", type=float, default=None, help="max expected MACs as a fraction of the network without exits")
    v.add_argument("--max-drop", type=float, default=None, help="max accuracy drop below the final exit, in points")
    v.add_argument("--min-accuracy", type=float, default=None, help="accuracy floor as a fraction")
    v.add_argument("--confidence", type=float, default=None,
                   help="with --max-drop: the cheapest global threshold whose drop is certified on validation "
                        "with this probability (e.g. 0.9), instead of the cheapest that passes there")
    r = sub.add_parser("prune", help="AEP prune a checkpoint at its best validation ensemble cut; print the savings",
                       formatter_class=fmt)
    r.add_argument("checkpoint")
    r.add_argument("--out", default=None, help="pruned checkpoint path (default: <name>.pruned.pt)")
    r.add_argument("--tolerance", type=float, default=0.0, help="take the smallest cut within this many points of the best")
    r.add_argument("--cut", type=int, default=None, help="cut at this exit instead of choosing")
    r.add_argument("--latency-repeats", type=int, default=20, help="timing repeats (0: skip latency)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for the latency measurement")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    return {"policy": _cmd_policy, "sweep": _cmd_sweep, "solve": _cmd_solve, "prune": _cmd_prune}
