"""`python -m aep_core run`: real early-exit inference from the command line on a split or a folder of images."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import ROOT, run

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.data import load_dataset, load_slice
from aep_core.evaluation import load_evaluation
from aep_core.exits.rules import ModelExits, get_rule, list_rules, make_rule, replay_rule
from aep_core.exits.runtime import record_outputs

CKPT = ROOT / "assets" / "models" / "aep_hybrid.pt"
DEFAULT_RULE = list_rules(deployable=True)[0]  # what `run` uses without --rule
NO_THRESHOLDS = next(n for n in list_rules(deployable=True) if not get_rule(n).has_thresholds)
NEEDS_CONFIDENCE = next(n for n in list_rules(deployable=True) if get_rule(n).needs_confidence)
ENSEMBLE_RULES = [n for n in list_rules(deployable=True) if get_rule(n).uses_ensemble_weights]


def run_on_slice(*args: str, check_rc: int = 0):
    """`run` of the shipped checkpoint on the Fashion-MNIST slice, with `args` added."""
    return run("run", str(CKPT), "--dataset", "fashion-mnist-slice", *args, check_rc=check_rc)


def test_run_on_a_split_matches_the_replayed_rule():
    out = json.loads(
        run_on_slice(
            "--split",
            "test",
            "--limit",
            "200",
            "--thresholds",
            "0.9",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--compare",
            "--json",
        ).stdout
    )
    model, meta = load_checkpoint(CKPT)
    torch.set_num_threads(1)
    x, y = load_dataset("fashion-mnist-slice").test[list(range(200))]
    rec = record_outputs(model, x, y.numpy(), meta.cost.cum_macs, meta.cost.full_macs, batch_size=32)
    replay = make_rule(DEFAULT_RULE, ModelExits.of_model(model, None), thresholds=0.9).replay(rec)
    assert out["samples"] == 200 and out["batch_size"] == 32
    assert np.allclose(out["exit_distribution"], replay.exit_distribution)
    assert out["accuracy"] == pytest.approx(replay.accuracy)
    assert out["macs_ratio"] == pytest.approx(replay.macs_ratio)
    assert out["without_exits"]["samples_per_s"] > 0 and out["speed_up"] > 0
    assert 0.9 <= out["same_prediction_as_without_exits"] <= 1.0


@pytest.mark.parametrize("name", ENSEMBLE_RULES)
def test_run_decides_with_the_trained_ensemble_weights_as_the_replay_does(name, tmp_path, capsys):
    """`run` without --weights stops each input where the replay of the checkpoint's evaluation file (which uses
    the trained ensemble weights) stops it. The shipped weights are far from uniform, and uniform weights decide
    differently on these inputs, so a run that fell back to uniform weights fails here."""
    rec = load_evaluation(evaluation_path(CKPT, "test"))  # the whole test split, in order
    trained = np.asarray(ModelExits.of_record(rec).ensemble_weights)
    assert np.abs(trained - 1 / len(trained)).max() > 0.5
    n, t = 300, 0.9
    out_csv = tmp_path / "run.csv"
    assert (
        main(
            [
                "run",
                str(CKPT),
                "--rule",
                name,
                "--thresholds",
                str(t),
                "--split",
                "test",
                "--limit",
                str(n),
                "--threads",
                "1",
                "--out",
                str(out_csv),
                "--json",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert [int(r["label"]) for r in rows] == rec.labels[:n].tolist()  # --limit: the first n of the split, in order
    replay = replay_rule(rec, name, thresholds=t)
    assert [int(r["exit"]) for r in rows] == replay.exit_index[:n].tolist()
    assert [int(r["prediction"]) for r in rows] == replay.prediction[:n].tolist()
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == n and out["settings"]["weights"] == pytest.approx(trained.tolist())
    uniform = replay_rule(rec, name, thresholds=t, weights=[1 / len(trained)] * len(trained))
    assert not np.array_equal(uniform.exit_index[:n], replay.exit_index[:n])


def test_run_chooses_thresholds_on_validation_for_a_goal():
    p = run_on_slice("--limit", "64", "--rule", "entropy", "--max-drop", "0.5", "--threads", "1")
    assert "certified on validation" in p.stdout and "accuracy" in p.stdout and "samples/s" in p.stdout
    assert "reference: the final exit; confidence 90%; family per_exit" in p.stdout
    assert "certified bounds: expected drop <= 0.5 points" in p.stdout


@pytest.mark.parametrize(
    "goal", [["--budget", "0.5"], ["--max-drop", "0.5", "--optimistic", "--reference", "ensemble"]]
)
def test_run_json_carries_the_operating_point_that_solve_prints(goal, capsys):
    """`run --json` with a goal runs the thresholds of the operating point it reports, and that operating point
    is the one `solve --json` gives for the same goal."""
    args = ["--rule", "aep_ensemble", *goal]
    assert main(["solve", str(CKPT), *args, "--json"]) == 0
    solved = json.loads(capsys.readouterr().out)
    limit = ["--dataset", "fashion-mnist-slice", "--limit", "32", "--threads", "1"]
    assert main(["run", str(CKPT), *args, *limit, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["operating_point"] == solved
    assert out["settings"] == solved["settings"]
    certified = "--optimistic" not in goal
    assert solved["certified"] is certified and (solved["confidence"] is None) is not certified
    assert out["settings_from"].startswith("certified" if certified else "optimistic")


def test_run_on_a_folder_writes_one_row_per_image_and_skips_unreadable_files(tmp_path):
    images = load_slice()["images"]
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(images[i]).save(tmp_path / "imgs" / f"img{i}.png")
    (tmp_path / "imgs" / "sub" / "broken.png").write_bytes(b"not an image")
    out_csv = tmp_path / "preds.csv"
    p = run(
        "run",
        str(CKPT),
        "--images",
        str(tmp_path / "imgs"),
        "--thresholds",
        "0.8",
        "--batch-size",
        "2",
        "--out",
        str(out_csv),
    )
    assert "5 inputs from images" in p.stdout and "skipped sub/broken.png" in p.stderr
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert [r["input"] for r in rows] == [f"img{i}.png" for i in range(5)]
    assert all(0 <= int(r["exit"]) <= 4 and r["class"] for r in rows)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--limit", "5"], "needs --thresholds"),
        (["--rule", NO_THRESHOLDS, "--max-drop", "0.5"], f"{NO_THRESHOLDS} has none"),
        (["--thresholds", "0.9", "--max-drop", "0.5"], "not both"),
        (["--thresholds", "0.9", "--batch-size", "0"], "at least 1"),
        (["--thresholds", "0.9", "--images", "/nonexistent"], "is not a folder"),
        (["--rule", NEEDS_CONFIDENCE, "--thresholds", "0.5"], "confidence branch"),
        (["--max-drop", "0.5", "--budget", "0.5"], "Give one goal"),
        (["--thresholds", "0.9", "--confidence", "0.9"], "--confidence qualifies a goal"),
        (["--max-drop", "0.5", "--optimistic", "--family", "global"], "--family belongs to a certified choice"),
    ],
)
def test_run_bad_inputs_are_one_clear_line(args, msg):
    p = run_on_slice(*args, check_rc=2)
    assert msg in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_run_says_when_its_thresholds_are_optimistic():
    p = run_on_slice("--limit", "32", "--max-drop", "0.5", "--optimistic", "--threads", "1")
    assert "optimistic: chosen on validation without a guarantee" in p.stdout
    assert "OPTIMISTIC (not certified)" in p.stdout and "confidence: none" in p.stdout
