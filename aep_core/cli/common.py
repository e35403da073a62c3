"""Argument helpers shared by the command groups: sub-command registration, the exit-rule flags, built from the
rule registry, and the goal flags that choose a rule's settings on validation."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aep_core.errors import ConfigError
from aep_core.exits.rules import RULES, get_rule, list_rules

if TYPE_CHECKING:
    from aep_core.evaluation import ExitRecord
    from aep_core.exits.solvers import Solution

SPLITS = ("train", "val", "test")


def add_command(
    sub: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int], show_defaults: bool = True
) -> argparse.ArgumentParser:
    """Register sub-command `name`, run by `run(args)` and described in the command list by `run`'s docstring;
    its --help shows every option's default unless `show_defaults` is False. Returns its parser."""
    formatter = argparse.ArgumentDefaultsHelpFormatter if show_defaults else argparse.HelpFormatter
    p = sub.add_parser(name, help=inspect.getdoc(run), formatter_class=formatter)
    p.set_defaults(func=run)
    return p


def add_rule_arguments(
    p: argparse.ArgumentParser,
    settings: bool = True,
    deployable: bool = False,
    evaluation: bool = True,
    json: bool = True,
) -> None:
    """--rule with the registry's choices, one flag per setting keyword of the registered rules (--thresholds,
    --t, --k), --weights for rules that use ensemble weights, and --json (unless the command adds its own)."""
    if evaluation:
        p.add_argument("evaluation", help="evaluation file (.npz) or checkpoint (.pt; its <name>.<split>.npz is used)")
    names = list_rules(deployable=deployable)
    p.add_argument(
        "--rule",
        default=names[0],
        choices=names,
        help="exit rule: " + "; ".join(f"{n}: {RULES[n].help.rstrip('.')}" for n in names),
    )
    if settings:
        seen: dict[str, list[str]] = {}
        for n in names:
            s = RULES[n].setting
            if s is not None:
                seen.setdefault(s.keyword, []).append(n)
        for keyword, users in seen.items():
            spec = RULES[users[0]].setting
            assert spec is not None
            p.add_argument(
                f"--{keyword}",
                type=int if spec.integer else str,
                default=None,
                help=f"{spec.help} ({', '.join(users)})",
            )
    weighted = [n for n in names if RULES[n].uses_ensemble_weights]
    p.add_argument(
        "--weights",
        default=None,
        help=f"ensemble weights for {', '.join(weighted)}, comma-separated (default: the model's trained weights)",
    )
    if json:
        p.add_argument("--json", action="store_true", help="print JSON")


def parse_rule_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The rule settings given on the command line as keyword arguments of make_rule / replay_rule."""
    s: dict[str, Any] = {}
    setting = get_rule(a.rule).setting
    for keyword in {r.setting.keyword for r in RULES.values() if r.setting is not None}:
        value = getattr(a, keyword, None)
        if value is None:
            continue
        if setting is None or keyword != setting.keyword:
            takes = f" (it takes --{setting.keyword})." if setting else "."
            raise ConfigError(f"--{keyword} is not a setting of {a.rule}{takes}")
        if setting.per_exit:
            try:
                vals = [float(v) for v in str(value).split(",")]
            except ValueError:
                raise ConfigError(f"--{keyword} must be a number or comma-separated numbers, got '{value}'.") from None
            s[keyword] = vals[0] if len(vals) == 1 else vals
        else:
            s[keyword] = value
    if getattr(a, "weights", None) is not None:
        if not get_rule(a.rule).uses_ensemble_weights:
            raise ConfigError(f"--weights is for rules that use ensemble weights; {a.rule} does not.")
        try:
            s["weights"] = [float(v) for v in a.weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights must be comma-separated numbers, got '{a.weights}'.") from None
    return s


def with_default_setting(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with the rule's default value for its setting when none was given."""
    spec = get_rule(name).setting
    if spec is None or spec.keyword in settings:
        return dict(settings)
    return {**settings, spec.keyword: int(spec.default) if spec.integer else spec.default}


def solve_for_goal(
    a: argparse.Namespace, val: ExitRecord, test: ExitRecord | None, weights: list[float] | None
) -> Solution:
    """The settings the command line's goal asks for, chosen on `val` (reported on `test` if given):
    --max-drop with --confidence certifies the drop; --budget, --max-drop or --min-accuracy solve."""
    from aep_core.exits.solvers import MacsBudget, MinAccuracy, accuracy_floor, solve

    if a.confidence is not None:
        if a.max_drop is None:
            raise ConfigError("--confidence certifies an accuracy drop: give it with --max-drop.")
        from aep_core.exits.certify import certify_max_drop

        return certify_max_drop(val, a.rule, a.max_drop, a.confidence, test, weights)
    if a.budget is not None:
        return solve(val, a.rule, MacsBudget(a.budget), test, weights)
    floor = getattr(a, "min_accuracy", None)
    goal = MinAccuracy(floor if floor is not None else accuracy_floor(val, a.max_drop))
    return solve(val, a.rule, goal, test, weights)
