"""Command-line sub-commands for exit rules on saved outputs: policy (replay a rule on an evaluation file),
sweep (accuracy against MACs over a grid of settings) and solve (thresholds for an accuracy drop or a MACs
budget, certified on the val file with a stated confidence, or the solver's optimistic choice there; reported
on the test file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from aep_core.cli.common import (
    SPLITS,
    add_command,
    add_goal_arguments,
    add_rule_arguments,
    describe_operating_point,
    evaluation_or_checkpoint,
    goal_flag,
    operating_point,
    parse_rule_settings,
    positive_int,
    solve_for_goal,
)
from aep_core.errors import ConfigError

if TYPE_CHECKING:
    from aep_core.exits.rules import RuleResult


def _evaluation_file(path: str, split: str) -> Path:
    """An evaluation file given directly (.npz) or as its checkpoint (.pt) plus a split."""
    from aep_core.checkpoint.sidecars import evaluation_path

    p = evaluation_or_checkpoint(path)
    return p if p.suffix == ".npz" else evaluation_path(p, split)


def _format_result(r: RuleResult) -> str:
    dist = " ".join(f"{100 * v:5.1f}" for v in r.exit_distribution)
    pacc = " ".join("    -" if v != v else f"{100 * v:5.1f}" for v in r.per_exit_accuracy)
    pcls = " ".join("  -" if v != v else f"{v:3.1f}" for v in r.per_class_mean_exit)
    return (
        f"accuracy {100 * r.accuracy:.2f}%   expected MACs {r.expected_macs / 1e6:.3f} M "
        f"({100 * r.macs_ratio:.1f}% of the network without exits)\n"
        f"exit distribution %      {dist}\n"
        f"accuracy at exit %       {pacc}\n"
        f"mean exit per class      {pcls}"
    )


def _cmd_policy(a: argparse.Namespace) -> int:
    """replay an exit policy on an evaluation file and print its metrics"""
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.rules import replay_rule

    rec = load_evaluation(_evaluation_file(a.evaluation, a.split))
    r = replay_rule(rec, a.rule, **parse_rule_settings(a))
    print(json.dumps(r.summary(), indent=1) if a.json else f"{a.rule} {r.settings}\n{_format_result(r)}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    """accuracy against MACs over a grid of settings, Pareto points marked"""
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.rules import get_rule
    from aep_core.exits.solvers import pareto_sweep

    rec = load_evaluation(_evaluation_file(a.evaluation, a.split))
    weights = parse_rule_settings(a).get("weights")
    s = pareto_sweep(rec, a.rule, points=a.points, weights=weights)
    if a.json:
        print(json.dumps(s.rows(), indent=1))
        return 0
    setting = get_rule(a.rule).setting
    print(f"{'setting':>12} {'accuracy %':>10} {'MACs %':>7}  pareto")
    for row in s.rows():
        if a.all or row["pareto"]:
            val = f"{row[setting.keyword]:.4g}" if setting is not None else "-"
            print(
                f"{val:>12} {100 * row['accuracy']:>10.2f} {100 * row['macs_ratio']:>7.1f}  "
                f"{'*' if row['pareto'] else ''}"
            )
    print(
        f"{len(s.settings)} settings, {int(s.pareto.sum())} on the Pareto front"
        + ("" if a.all else " (shown; --all for every point)")
    )
    return 0


def _cmd_solve(a: argparse.Namespace) -> int:
    """thresholds for an accuracy drop or a MACs budget, certified on val with a stated confidence (or the
    solver's optimistic choice there), reported on test"""
    from aep_core.evaluation import load_evaluation

    if goal_flag(a) is None:
        raise ConfigError(
            "Give one goal: --max-drop (points below the reference) or --budget (MACs fraction), certified; "
            "or --min-accuracy (fraction), not certified."
        )
    val = load_evaluation(_evaluation_file(a.evaluation, "val"))
    test_path = (
        _evaluation_file(a.test, "test")
        if a.test
        else (None if Path(a.evaluation).suffix == ".npz" else _evaluation_file(a.evaluation, "test"))
    )
    test = load_evaluation(test_path) if test_path is not None else None
    sol = solve_for_goal(a, val, test, parse_rule_settings(a).get("weights"))
    op = operating_point(a, sol, val, test)
    if a.json:
        print(json.dumps(op, indent=1))
        return 0
    shown = {
        k: ([round(x, 4) for x in v] if isinstance(v, list) else v) for k, v in sol.settings.items() if k != "weights"
    }
    print("\n".join(describe_operating_point(op)))
    print(f"settings {shown}")
    print(f"validation: {_format_result(sol.val)}")
    if sol.test is not None:
        print(f"test:       {_format_result(sol.test)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `policy`, `sweep` and `solve` on `sub`."""
    p = add_command(sub, "policy", _cmd_policy)
    add_rule_arguments(p)
    p.add_argument("--split", default="test", choices=SPLITS, help="split, when given a checkpoint")
    s = add_command(sub, "sweep", _cmd_sweep)
    add_rule_arguments(s, settings=False)
    s.add_argument("--split", default="val", choices=SPLITS, help="split, when given a checkpoint")
    s.add_argument("--points", type=positive_int, default=100, help="thresholds in the grid")
    s.add_argument("--all", action="store_true", help="print every point, not only the Pareto front")
    v = add_command(sub, "solve", _cmd_solve)
    add_rule_arguments(v, settings=False)
    v.add_argument("--test", default=None, help="test evaluation file (default: the checkpoint's, if a .pt was given)")
    add_goal_arguments(v, min_accuracy=True)
