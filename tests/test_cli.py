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
    "policy",
    "sweep",
    "solve",
    "prune",
    "deploy",
    "export",
    "calibrate",
    "ood",
    "run",
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
