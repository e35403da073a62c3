"""Argument helpers shared by the command groups: the parser (its refusals are one line), sub-command
registration, option types that refuse impossible values, checks of the files a command reads and writes, the
exit-rule flags, built from the rule registry, and the goal flags that choose a rule's settings on validation:
certified with a stated confidence by default, or the solver's optimistic choice on request."""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from aep_core.errors import CheckpointError, ConfigError
from aep_core.exits.certify import FAMILIES, REFERENCE_WORDS, REFERENCES
from aep_core.exits.rules import RULES, get_rule, list_rules

if TYPE_CHECKING:
    from aep_core.evaluation import ExitRecord
    from aep_core.exits.solvers import Solution

SPLITS = ("train", "val", "test")
DEFAULT_CONFIDENCE = 0.9
OPTIMISTIC_NOTE = (
    "chosen on validation without a guarantee: on new data its drop (or cost) scatters around the limit and "
    "breaks it often"
)
_GOALS = ("--max-drop", "--budget", "--min-accuracy")
_LISTED = 8  # files named when a directory was given where a file was expected


class UsageError(SystemExit):
    """A command line the parser refused; `message` is one line for the caller to print (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line (a UsageError) rather than its usage text."""

    def error(self, message: str) -> NoReturn:
        """Refuse the command line with one line naming the option and pointing at --help."""
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def number(
    kind: type[int] | type[float],
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str | None = None,
) -> Callable[[str], Any]:
    """An option type reading a finite int or float within the bounds (open or closed), refusing anything
    else with a message saying what is allowed (`what`, or the bounds)."""
    if what is None:
        noun = "a whole number" if kind is int else "a number"
        if low is not None and high is not None:
            what = f"{noun} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            what = f"{noun} {'above' if low_open else 'of at least'} {low:g}"
        elif high is not None:
            what = f"{noun} {'below' if high_open else 'of at most'} {high:g}"
        else:
            what = noun

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got '{text}'") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high))
        ):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = number(int, 1)
non_negative_int = number(int, 0)
positive_float = number(float, 0, low_open=True)
non_negative_float = number(float, 0)
unit_fraction = number(float, 0, 1)
open_fraction = number(float, 0, 1, low_open=True, high_open=True)
drop_points = number(float, 0, 100, high_open=True, what="a number of points in [0, 100)")
macs_ratio = number(float, 0, 1, low_open=True, what="a fraction of the network's MACs in (0, 1]")
accuracy_fraction = number(float, 0, 1, low_open=True, what="an accuracy as a fraction in (0, 1]")
probability = number(float, 0, 1, low_open=True, high_open=True, what="a probability strictly between 0 and 1")


def positive_int_list(text: str) -> list[int]:
    """An option type reading comma-separated whole numbers >= 1 (e.g. stage widths)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers of at least 1, got '{text}'")
    return values


def float_list(text: str) -> list[float]:
    """An option type reading comma-separated finite numbers (e.g. a per-channel mean)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got '{text}'")
    return values


def _refuse_directory(path: Path, what: str, suffixes: Iterable[str]) -> None:
    """CheckpointError when `path` is a directory, naming the files in it a command could read instead."""
    from aep_core.checkpoint.sidecars import is_model_file

    if not path.is_dir():
        return
    found = sorted(
        q.name
        for q in path.iterdir()
        if q.suffix in suffixes and q.is_file() and (q.suffix != ".pt" or is_model_file(q))
    )
    if not found:
        kinds = " or ".join({".pt": "checkpoint (.pt)", ".npz": "evaluation (.npz)"}.get(s, s) for s in suffixes)
        raise CheckpointError(f"{path} is a directory, not {what}; it holds no {kinds} files.")
    more = f" and {len(found) - _LISTED} more" if len(found) > _LISTED else ""
    raise CheckpointError(
        f"{path} is a directory, not {what}; give one of the files in it: {', '.join(found[:_LISTED])}{more}."
    )


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file `path`; CheckpointError when it does not exist, or when it is a directory (naming
    the checkpoints in it)."""
    p = Path(path)
    _refuse_directory(p, "a checkpoint file", (".pt",))
    if not p.is_file():
        raise CheckpointError(f"Checkpoint {p} does not exist.")
    return p


def evaluation_or_checkpoint(path: str | Path) -> Path:
    """`path`, an evaluation file or a checkpoint; CheckpointError when it is a directory (naming the files in
    it). A missing file is left to the reader, whose message says how to create it."""
    p = Path(path)
    _refuse_directory(p, "an evaluation file or a checkpoint", (".npz", ".pt"))
    return p


def check_outputs(*paths: str | Path, create_parents: bool = True) -> list[Path]:
    """The output files, once each can be written (see `aep_core.outputs.check_writable`): checked before
    the work that fills them starts. OutputError with one line otherwise."""
    from aep_core.outputs import check_writable

    return [check_writable(p, create_parents) for p in paths]


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
        p.add_argument(
            "evaluation",
            help="evaluation file (.npz), checkpoint (.pt; its <name>.<split>.npz is used) or per-exit outputs file "
            "(.npz, .csv or .parquet from any framework; see docs/BRING_YOUR_OWN.md)",
        )
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
            # Read as text: whether the value suits depends on --rule, checked by parse_rule_settings.
            p.add_argument(f"--{keyword}", default=None, help=f"{spec.help} ({', '.join(users)})")
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
        elif setting.integer:
            s[keyword] = _whole_number(keyword, value)
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


def _whole_number(keyword: str, value: Any) -> int:
    """An integer setting's value given on the command line; ConfigError unless it is a whole number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not x.is_integer():
        raise ConfigError(f"--{keyword} must be a whole number, got '{value}'.")
    return int(x)


def with_default_setting(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with the rule's default value for its setting when none was given."""
    spec = get_rule(name).setting
    if spec is None or spec.keyword in settings:
        return dict(settings)
    return {**settings, spec.keyword: int(spec.default) if spec.integer else spec.default}


def add_goal_arguments(p: argparse.ArgumentParser, min_accuracy: bool = False) -> None:
    """The goal flags: --max-drop and --budget (certified on validation unless --optimistic), --confidence,
    --reference, --family, --optimistic, and --min-accuracy (an uncertified solver goal) when asked."""
    g = p.add_argument_group("goal (thresholds chosen on validation; test only reports)")
    g.add_argument(
        "--max-drop",
        type=drop_points,
        default=None,
        help="the cheapest thresholds whose expected accuracy drop against --reference is at most this many points, "
        "certified with --confidence (unless --optimistic)",
    )
    g.add_argument(
        "--budget",
        type=macs_ratio,
        default=None,
        help="the most accurate thresholds whose expected MACs are at most this fraction of the network without "
        "exits, certified with --confidence (unless --optimistic)",
    )
    if min_accuracy:
        g.add_argument(
            "--min-accuracy",
            type=accuracy_fraction,
            default=None,
            help="the cheapest setting reaching this accuracy (a fraction) on validation; not certified",
        )
    # Suppressed defaults: the goal tells whether one was given, to refuse one that would mean nothing.
    g.add_argument(
        "--confidence",
        type=probability,
        default=argparse.SUPPRESS,
        help=f"probability with which the certified bounds hold (default: {DEFAULT_CONFIDENCE})",
    )
    g.add_argument(
        "--reference",
        choices=REFERENCES,
        default=argparse.SUPPRESS,
        help="what the drop is measured against: final (the final exit's own prediction) or ensemble (the rule's "
        "own full-depth prediction; for aep_ensemble the ensemble of every exit) (default: final)",
    )
    g.add_argument(
        "--family",
        choices=FAMILIES,
        default=argparse.SUPPRESS,
        help="certified thresholds: per_exit (one per early exit, shaped on a third of validation) or global "
        "(one shared threshold) (default: per_exit)",
    )
    g.add_argument(
        "--optimistic",
        action="store_true",
        help="the solver's choice that just meets the goal on validation instead, without a guarantee: on new "
        "data its drop (or cost) scatters around the limit and breaks it often",
    )


def goal_flag(a: argparse.Namespace) -> str | None:
    """The goal flag given (--max-drop, --budget or --min-accuracy), or None; ConfigError for two goals, or for
    a goal's options that mean nothing as given (--confidence or --family with an uncertified choice, any of
    them without a goal)."""
    given = [flag for flag in _GOALS if getattr(a, _dest(flag), None) is not None]
    if len(given) > 1:
        raise ConfigError(f"Give one goal, not {' and '.join(given)}.")
    options = [f"--{name}" for name in ("confidence", "reference", "family") if hasattr(a, name)]
    options += ["--optimistic"] if getattr(a, "optimistic", False) else []
    if not given:
        if options:
            raise ConfigError(f"{options[0]} qualifies a goal: give it with {' or '.join(_goals_of(a))}.")
        return None
    certified_only = [o for o in options if o in ("--confidence", "--family")]
    if certified_only and not is_certified(a, given[0]):
        why = (
            "--optimistic asks for the solver's choice without a guarantee"
            if getattr(a, "optimistic", False)
            else "--min-accuracy is a solver goal without a guarantee (--max-drop is certified)"
        )
        raise ConfigError(f"{certified_only[0]} belongs to a certified choice, and {why}: give one or the other.")
    return given[0]


def is_certified(a: argparse.Namespace, goal: str) -> bool:
    """Whether `goal` (a flag) is certified as asked: --max-drop and --budget are, unless --optimistic."""
    return goal != "--min-accuracy" and not getattr(a, "optimistic", False)


def solve_for_goal(
    a: argparse.Namespace, val: ExitRecord, test: ExitRecord | None, weights: list[float] | None
) -> Solution:
    """The settings the command line's goal asks for, chosen on `val` (reported on `test` if given): certified
    (a `Certified`) for --max-drop and --budget unless --optimistic; else the solver's choice (a `Solution`)."""
    from aep_core.exits.certify import certify, reference_floor
    from aep_core.exits.solvers import MacsBudget, MinAccuracy, solve

    goal = goal_flag(a)
    if goal is None:
        raise ConfigError(f"Give one goal: {' or '.join(_goals_of(a))}.")
    reference = getattr(a, "reference", "final")
    if is_certified(a, goal):
        if not get_rule(a.rule).has_thresholds:
            raise ConfigError(
                f"A certified choice needs a threshold rule ({', '.join(list_rules(thresholds=True))}); {a.rule} has "
                "none. --optimistic gives the solver's choice on validation, without a guarantee."
            )
        return certify(
            val,
            a.rule,
            max_drop_points=a.max_drop,
            max_macs_ratio=a.budget,
            confidence=getattr(a, "confidence", DEFAULT_CONFIDENCE),
            reference=reference,
            family=getattr(a, "family", FAMILIES[0]),
            test=test,
            weights=weights,
        )
    if a.budget is not None:
        return solve(val, a.rule, MacsBudget(a.budget), test, weights)
    if a.max_drop is None:
        return solve(val, a.rule, MinAccuracy(a.min_accuracy), test, weights)
    floor = reference_floor(val, a.rule, reference, a.max_drop, weights)
    sol = solve(val, a.rule, MinAccuracy(floor), test, weights)
    goal = f"drop <= {a.max_drop:g} points against {REFERENCE_WORDS[reference]} on validation ({sol.goal})"
    return replace(sol, goal=goal)


def operating_point(a: argparse.Namespace, sol: Solution, val: ExitRecord, test: ExitRecord | None) -> dict[str, Any]:
    """The chosen operating point as plain values: rule, goal, settings, whether it is certified, reference,
    confidence, family, certified bounds (None when not certified), and per split its accuracy, drop in points
    against the reference and MACs ratio."""
    from aep_core.exits.certify import Certified, drop_against

    certified = isinstance(sol, Certified)
    reference = sol.reference if certified else getattr(a, "reference", "final")
    weights = sol.settings.get("weights")
    out: dict[str, Any] = {
        "rule": sol.rule,
        "goal": sol.goal,
        "settings": sol.settings,
        "certified": certified,
        "reference": reference,
        "confidence": sol.confidence if certified else None,
        "family": sol.family if certified else ("per_exit" if get_rule(sol.rule).has_thresholds else None),
        "drop_bound_points": sol.drop_bound_points if certified else None,
        "macs_bound": sol.macs_bound if certified else None,
        "calibration_samples": sol.calibration_samples if certified else None,
        "note": "certified on validation" if certified else f"optimistic: {OPTIMISTIC_NOTE}",
    }
    for split, rec, result in (("val", val, sol.val), ("test", test, sol.test)):
        if rec is not None and result is not None:
            out[split] = {
                "accuracy": result.accuracy,
                "drop_points": drop_against(result, rec, sol.rule, reference, weights),
                "macs_ratio": result.macs_ratio,
            }
    return out


def describe_operating_point(op: dict[str, Any], test_name: str = "test", cost: str = "MACs") -> list[str]:
    """Lines saying what an `operating_point` is: certified or optimistic, its reference, confidence, family
    and bounds, then accuracy, drop against the reference and cost ratio on validation and `test_name`; `cost`
    names the cost ("MACs", or "time" for outputs whose costs are milliseconds)."""
    reference = REFERENCE_WORDS[op["reference"]]
    if op["certified"]:
        drop = f"expected drop <= {op['drop_bound_points']:g} points, " if op["drop_bound_points"] is not None else ""
        lines = [
            f"{op['rule']}: certified on validation, {op['goal']}",
            f"  reference: {reference}; confidence {100 * op['confidence']:g}%; family {op['family']}; "
            f"{op['calibration_samples']} validation samples certify it",
            f"  certified bounds: {drop}expected {cost} ratio <= {op['macs_bound']:.3f}",
        ]
    else:
        lines = [
            f"{op['rule']}: OPTIMISTIC (not certified), {op['goal']}",
            f"  {OPTIMISTIC_NOTE}",
            f"  reference: {reference}; confidence: none (not certified); certified bounds: none",
        ]
    for split, name in (("val", "validation"), ("test", test_name)):
        if split in op:
            r = op[split]
            lines.append(
                f"  {name}: accuracy {100 * r['accuracy']:.2f}%, drop {r['drop_points']:.2f} points vs "
                f"{reference}, {cost} ratio {r['macs_ratio']:.3f}"
            )
    return lines


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _goals_of(a: argparse.Namespace) -> list[str]:
    """The goal flags this command has."""
    return [flag for flag in _GOALS if hasattr(a, _dest(flag))]
