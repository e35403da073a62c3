"""The command line: train, info, evaluate, and clear one-line errors for bad input."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, check_rc=0):
    p = subprocess.run([sys.executable, "-m", "aep_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == check_rc, p.stdout + p.stderr
    return p


def test_train_info_evaluate(tmp_path):
    out = tmp_path / "m.pt"
    run("train", "--dataset", "fashion-mnist-slice", "--limit", "128", "--epochs", "1", "--widths", "8,16,32",
        "--threads", "1", "--quiet", "--out", str(out))
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
