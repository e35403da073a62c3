"""Command-line sub-commands for exit rules on saved outputs: policy (replay a rule on an evaluation file),
sweep (accuracy against MACs over a grid of settings) and solve (thresholds for an accuracy drop or a MACs
budget, certified on the val file with a stated confidence, or the solver's optimistic choice there; reported
on the test file). Each also takes a per-exit outputs file written by any framework (its val and test samples);
costs given in milliseconds are reported as time."""

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
    goal_flag,
    operating_point,
    parse_rule_settings,
    positive_int,
    solve_for_goal,
)
from aep_core.cli.exit_outputs import is_outputs, record, records
from aep_core.errors import ConfigError

if TYPE_CHECKING:
    from aep_core.evaluation import ExitRecord
    from aep_core.exits.rules import RuleResult


def _expected_cost(r: RuleResult, unit: str) -> str:
    """The mean cost per sample in the record's unit: "expected MACs 1.234 M" or "expected time 1.234 ms"."""
    if unit == "ms":
        return f"expected time {r.expected_macs:.3f} ms"
    return f"expected MACs {r.expected_macs / 1e6:.3f} M"


def _unit(rec: ExitRecord) -> str:
    from aep_core.checkpoint.outputs_import import cost_unit

    return cost_unit(rec)


def _with_unit(summary: dict, rec: ExitRecord) -> dict:
    """A JSON summary with the unit of its costs, for records that carry one (from a per-exit outputs file)."""
    return {**summary, "cost_unit": rec.info["cost_unit"]} if "cost_unit" in rec.info else summary


def _format_result(r: RuleResult, unit: str = "macs") -> str:
    dist = " ".join(f"{100 * v:5.1f}" for v in r.exit_distribution)
    pacc = " ".join("    -" if v != v else f"{100 * v:5.1f}" for v in r.per_exit_accuracy)
    pcls = " ".join("  -" if v != v else f"{v:3.1f}" for v in r.per_class_mean_exit)
    return (
        f"accuracy {100 * r.accuracy:.2f}%   {_expected_cost(r, unit)} "
        f"({100 * r.macs_ratio:.1f}% of the network without exits)\n"
        f"exit distribution %      {dist}\n"
        f"accuracy at exit %       {pacc}\n"
        f"mean exit per class      {pcls}"
    )


def _cmd_policy(a: argparse.Namespace) -> int:
    """replay an exit policy on an evaluation file and print its metrics"""
    from aep_core.exits.rules import replay_rule

    rec = record(a.evaluation, a.split)
    r = replay_rule(rec, a.rule, **parse_rule_settings(a))
    if a.json:
        print(json.dumps(_with_unit(r.summary(), rec), indent=1))
    else:
        print(f"{a.rule} {r.settings}\n{_format_result(r, _unit(rec))}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    """accuracy against MACs over a grid of settings, Pareto points marked"""
    from aep_core.checkpoint.outputs_import import cost_name
    from aep_core.exits.rules import get_rule
    from aep_core.exits.solvers import pareto_sweep

    rec = record(a.evaluation, a.split)
    weights = parse_rule_settings(a).get("weights")
    s = pareto_sweep(rec, a.rule, points=a.points, weights=weights)
    if a.json:
        print(json.dumps(s.rows(), indent=1))
        return 0
    setting = get_rule(a.rule).setting
    print(f"{'setting':>12} {'accuracy %':>10} {cost_name(rec) + ' %':>7}  pareto")
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
    from aep_core.checkpoint.outputs_import import cost_name

    if goal_flag(a) is None:
        raise ConfigError(
            "Give one goal: --max-drop (points below the reference) or --budget (MACs fraction), certified; "
            "or --min-accuracy (fraction), not certified."
        )
    val, test = _val_and_test(a.evaluation, a.test)
    sol = solve_for_goal(a, val, test, parse_rule_settings(a).get("weights"))
    op = operating_point(a, sol, val, test)
    unit = _unit(val)
    if unit != "macs":
        op["goal"] = op["goal"].replace("MACs", cost_name(val))
    op = _with_unit(op, val)
    if a.json:
        print(json.dumps(op, indent=1))
        return 0
    shown = {
        k: ([round(x, 4) for x in v] if isinstance(v, list) else v) for k, v in sol.settings.items() if k != "weights"
    }
    print("\n".join(describe_operating_point(op, cost=cost_name(val))))
    print(f"settings {shown}")
    print(f"validation: {_format_result(sol.val, unit)}")
    if sol.test is not None:
        print(f"test:       {_format_result(sol.test, unit)}")
    elif is_outputs(a.evaluation):
        print(f"test:       none ({Path(a.evaluation).name} holds no test samples)")
    return 0


def _val_and_test(path: str, test_path: str | None) -> tuple[ExitRecord, ExitRecord | None]:
    """The validation record and the test record (None when there is none) a solve reads: both from a per-exit
    outputs file or a checkpoint, the one evaluation file given, and `test_path` when given."""
    found = records(path, ("val", "test"))  # an evaluation file given directly is the validation one
    test = record(test_path, "test") if test_path else found.get("test")
    return found["val"], test


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `policy`, `sweep` and `solve` on `sub`."""
    p = add_command(sub, "policy", _cmd_policy)
    add_rule_arguments(p)
    p.add_argument("--split", default="test", choices=SPLITS, help="split, when given a checkpoint or an outputs file")
    s = add_command(sub, "sweep", _cmd_sweep)
    add_rule_arguments(s, settings=False)
    s.add_argument("--split", default="val", choices=SPLITS, help="split, when given a checkpoint or an outputs file")
    s.add_argument("--points", type=positive_int, default=100, help="thresholds in the grid")
    s.add_argument("--all", action="store_true", help="print every point, not only the Pareto front")
    v = add_command(sub, "solve", _cmd_solve)
    add_rule_arguments(v, settings=False)
    v.add_argument(
        "--test",
        default=None,
        help="test evaluation file (default: the checkpoint's, if a .pt was given, or the outputs file's test samples)",
    )
    add_goal_arguments(v, min_accuracy=True)
