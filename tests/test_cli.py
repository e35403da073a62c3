"""The command line: train, info, evaluate, every command wired to a handler, every registered rule taken by
policy and sweep, and clear one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aep_core.exits.rules import ModelExits, get_rule, list_rules
from aep_core.paths import PROJECT_DIR

ROOT = PROJECT_DIR


def run(*args, check_rc=0):
    p = subprocess.run([sys.executable, "-m", "aep_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == check_rc, p.stdout + p.stderr
    return p


def small_train_args(out: Path, limit: int, epochs: int, *options: str) -> list[str]:
    """`train` arguments for a small compact CNN (widths 8,16,32, one thread) on the first `limit` images of the
    Fashion-MNIST slice, saved to `out`, with `options` added."""
    return [
        "train",
        "--dataset",
        "fashion-mnist-slice",
        "--limit",
        str(limit),
        "--epochs",
        str(epochs),
        "--widths",
        "8,16,32",
        "--threads",
        "1",
        *options,
        "--out",
        str(out),
    ]


def test_train_info_evaluate(tmp_path):
    out = tmp_path / "m.pt"
    run(*small_train_args(out, 128, 1, "--quiet"))
    info = run("info", str(out)).stdout
    assert "MACs %" in info and "val acc" in info and len(info.splitlines()) >= 12
    ev = run("evaluate", str(out), "--split", "test").stdout
    assert "test: 1000 samples" in ev


def test_help_lists_defaults():
    text = run("train", "--help").stdout
    assert "--weighting" in text and "(default: hybrid)" in text


def test_bad_inputs_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    for args, msg in [
        (["info", str(bad)], "not a readable"),
        (["info", str(tmp_path / "missing.pt")], "does not exist"),
        (["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1"], "apt-get install"),
        (["train", "--dataset", "fashion-mnist-slice", "--model", "resnet", "--depth", "21", "--epochs", "1"], "6n+2"),
        (["train", "--dataset", "fashion-mnist-slice", "--epochs", "0"], "epochs"),
        (["train", "--dataset", "fashion-mnist-slice", "--exits", "99", "--epochs", "1"], "block indices"),
    ]:
        p = run(*args, check_rc=2)
        assert msg in p.stderr and "Traceback" not in p.stderr, p.stderr


COMMANDS = (
    "train",
    "evaluate",
    "info",
    "list-models",
    "make-slice",
    "export-folder",
    "policy",
    "sweep",
    "solve",
    "prune",
    "cascade",
    "deploy",
    "export",
    "calibrate",
    "ood",
    "run",
    "import-outputs",
)


def test_every_command_is_registered_with_a_handler():
    import argparse

    from aep_core.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(sub.choices) == COMMANDS
    for name, parser in sub.choices.items():
        assert callable(parser.get_default("func")), name


@pytest.mark.parametrize("name", list_rules())
def test_policy_and_sweep_take_every_registered_rule(name, capsys):
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.cli.main import main
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.rules import replay_rule

    shipped = ROOT / "assets" / "models" / "aep_hybrid.pt"
    rec = load_evaluation(evaluation_path(shipped, "test"))
    if not get_rule(name).available_for(ModelExits.of_record(rec)):
        assert main(["policy", str(shipped), "--rule", name]) == 2
        assert "confidence branch" in capsys.readouterr().err
        return
    assert main(["policy", str(shipped), "--rule", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(replay_rule(rec, name).summary()))
    assert main(["sweep", str(shipped), "--rule", name, "--points", "5"]) == 0
    out = capsys.readouterr().out
    assert "on the Pareto front" in out and "Traceback" not in out


SHIPPED = ROOT / "assets" / "models" / "aep_hybrid.pt"


@pytest.mark.parametrize(
    "args",
    [
        ["--max-drop", "0.5"],
        ["--budget", "0.5", "--family", "global"],
        ["--rule", "aep_ensemble", "--max-drop", "0.5", "--reference", "ensemble", "--confidence", "0.8"],
        ["--max-drop", "0.5", "--optimistic"],
        ["--min-accuracy", "0.93"],
    ],
)
def test_solve_json_is_one_operating_point_that_its_settings_replay(args, capsys):
    """`solve --json` prints one object whose numbers are a replay of its own settings on the checkpoint's
    evaluation files, with the drop measured against the reference it names."""
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.cli.main import main
    from aep_core.evaluation import load_evaluation
    from aep_core.exits.certify import reference_correct
    from aep_core.exits.rules import replay_rule

    assert main(["solve", str(SHIPPED), *args, "--json"]) == 0
    op = json.loads(capsys.readouterr().out)
    certified = "--optimistic" not in args and "--min-accuracy" not in args
    assert op["certified"] is certified
    assert op["reference"] == ("ensemble" if "ensemble" in args else "final")
    given_confidence = float(args[args.index("--confidence") + 1]) if "--confidence" in args else 0.9
    assert op["confidence"] == (given_confidence if certified else None)
    for split in ("val", "test"):
        rec = load_evaluation(evaluation_path(SHIPPED, split))
        replay = replay_rule(rec, op["rule"], **op["settings"])
        if op["reference"] == "final":
            reference_accuracy = float(rec.exit_accuracy()[-1])
        else:
            reference_accuracy = float(reference_correct(rec, op["rule"], "ensemble", op["settings"]["weights"]).mean())
        assert op[split]["accuracy"] == pytest.approx(replay.accuracy)
        assert op[split]["macs_ratio"] == pytest.approx(replay.macs_ratio)
        assert op[split]["drop_points"] == pytest.approx(100 * (reference_accuracy - replay.accuracy))
    if not certified:
        assert op["drop_bound_points"] is None and op["macs_bound"] is None
        if "--max-drop" in args:  # the solver meets the goal on validation, and only there
            assert op["val"]["drop_points"] <= 0.5 + 1e-9
        else:
            assert op["val"]["accuracy"] >= 0.93 - 1e-12
    elif "--budget" in args:
        assert op["drop_bound_points"] is None and op["macs_bound"] <= 0.5
        assert op["family"] == "global" and len(set(op["settings"]["thresholds"])) == 1
    else:
        assert op["drop_bound_points"] == 0.5 and 0 < op["macs_bound"] <= 1
        assert op["family"] == "per_exit" and op["calibration_samples"] > 0


def test_solve_text_says_certified_or_optimistic_and_the_reference(capsys):
    from aep_core.cli.main import main

    assert main(["solve", str(SHIPPED), "--max-drop", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "certified on validation" in out and "OPTIMISTIC" not in out
    assert "reference: the final exit" in out and "confidence 90%" in out and "family per_exit" in out
    assert "certified bounds: expected drop <= 0.5 points, expected MACs ratio <=" in out
    assert "drop" in out.split("test:")[1] and "vs the final exit" in out
    assert main(["solve", str(SHIPPED), "--max-drop", "0.5", "--optimistic", "--reference", "ensemble"]) == 0
    out = capsys.readouterr().out
    assert "OPTIMISTIC (not certified)" in out and "without a guarantee" in out and "breaks it often" in out
    assert "reference: the rule's own full-depth prediction" in out and "certified bounds: none" in out


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--max-drop", "0.5", "--optimistic", "--confidence", "0.9"], "--confidence belongs to a certified choice"),
        (["--min-accuracy", "0.9", "--family", "global"], "--family belongs to a certified choice"),
        (["--max-drop", "0.5", "--budget", "0.4"], "Give one goal, not --max-drop and --budget"),
        (["--confidence", "0.9"], "--confidence qualifies a goal"),
        ([], "Give one goal"),
        (["--rule", "fixed_exit", "--budget", "0.5"], "--optimistic gives the solver's choice"),
        (["--max-drop", "0.5", "--confidence", "1.5"], "strictly between 0 and 1"),
        (["--max-drop", "0.01", "--confidence", "0.99"], "Allow a larger drop"),
    ],
)
def test_solve_goal_errors_are_one_clear_line(args, msg, capsys):
    from aep_core.cli.main import main

    assert main(["solve", str(SHIPPED), *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err
