"""The command line refuses an output it cannot write before doing any work (a directory in the way, a folder
that cannot be created or written, a full disk), and impossible option values, each with one line on stderr
and exit status 2, never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from aep_core.checkpoint.sidecars import evaluation_path, resume_path
from aep_core.cli.main import main
from aep_core.paths import shipped_models_dir

SHIPPED = shipped_models_dir() / "aep_hybrid.pt"
KINDS = ("directory", "under_a_file", "read_only")


def copy_shipped(folder: Path) -> Path:
    """The shipped default checkpoint and its evaluation files, copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        shutil.copy(evaluation_path(SHIPPED, split), evaluation_path(folder / "m.pt", split))
    return Path(shutil.copy(SHIPPED, folder / "m.pt"))


def read_only_folder(tmp_path: Path) -> Path:
    """A folder that refuses new files: chmod 0o500, or, where that does not stop this user (root), a path under
    a regular file, which nobody can create."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return folder
    (tmp_path / "a_file").write_bytes(b"")
    return tmp_path / "a_file" / "ro"


def bad_output(tmp_path: Path, kind: str, name: str) -> Path:
    """An output path called `name` that cannot be written, of the given kind."""
    if kind == "directory":
        (tmp_path / name).mkdir()
        return tmp_path / name
    if kind == "under_a_file":
        (tmp_path / "plain").write_bytes(b"")
        return tmp_path / "plain" / "sub" / name
    return read_only_folder(tmp_path) / name


@pytest.fixture(autouse=True)
def restore_permissions(tmp_path):
    yield
    for p in tmp_path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o700)


def refused(capsys, args: list[str], *words: str) -> str:
    """Run the command in-process; assert exit status 2 and one line on stderr holding `words`."""
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Training replaced by a recorder: a test fails if training starts when it should not."""
    import aep_core.training.job as job

    calls: list = []
    monkeypatch.setattr(job, "run_train_job", lambda j, *a, **k: calls.append(j))
    return calls


TRAIN = ["train", "--dataset", "fashion-mnist-slice", "--epochs", "1", "--widths", "8,16,32", "--quiet"]
OUT = "<output>"  # replaced by a path under the test's own folder: a test never writes beside shipped files


@pytest.mark.parametrize("kind", KINDS)
def test_train_refuses_an_unwritable_output_before_training(kind, tmp_path, capsys, no_training):
    out = bad_output(tmp_path, kind, "m.pt")
    start = time.perf_counter()
    refused(capsys, [*TRAIN, "--out", out], "m.pt")
    assert no_training == [] and time.perf_counter() - start < 5


def test_train_refuses_a_directory_where_its_resumable_state_goes(tmp_path, capsys, no_training):
    resume_path(tmp_path / "m.pt").mkdir()
    refused(capsys, [*TRAIN, "--out", tmp_path / "m.pt"], "m.resume.pt", "is a directory")
    assert no_training == []


def test_train_creates_a_missing_output_folder(tmp_path, capsys, no_training):
    out = tmp_path / "runs" / "new" / "m.pt"
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert out.parent.is_dir() and len(no_training) == 1 and no_training[0].out == str(out)


@pytest.mark.parametrize("kind", KINDS)
def test_run_out_refuses_an_unwritable_output(kind, tmp_path, capsys):
    out = bad_output(tmp_path, kind, "p.csv")
    refused(
        capsys,
        ["run", SHIPPED, "--dataset", "fashion-mnist-slice", "--limit", "8", "--thresholds", "0.9", "--out", out],
        "p.csv",
    )
    assert not out.is_file()


def test_run_out_creates_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "new" / "p.csv"
    assert (
        main(
            [
                "run",
                str(SHIPPED),
                "--dataset",
                "fashion-mnist-slice",
                "--limit",
                "8",
                "--thresholds",
                "0.9",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(out.read_text().splitlines()) == 9


@pytest.mark.parametrize("kind", KINDS)
def test_prune_refuses_an_unwritable_output(kind, tmp_path, capsys):
    src = copy_shipped(tmp_path / "src")
    out = bad_output(tmp_path, kind, "p.pt")
    refused(capsys, ["prune", src, "--out", out, "--latency-repeats", "0"], "p.pt")


def test_prune_refuses_a_directory_where_an_evaluation_file_of_its_output_goes(tmp_path, capsys):
    src = copy_shipped(tmp_path / "src")
    evaluation_path(tmp_path / "p.pt", "test").mkdir()
    refused(capsys, ["prune", src, "--out", tmp_path / "p.pt", "--latency-repeats", "0"], "p.test.npz", "directory")
    assert not (tmp_path / "p.pt").exists()


def test_evaluate_refuses_a_directory_where_its_evaluation_file_goes(tmp_path, capsys):
    ckpt = copy_shipped(tmp_path)
    evaluation_path(ckpt, "test").unlink()
    evaluation_path(ckpt, "test").mkdir()
    refused(capsys, ["evaluate", ckpt, "--split", "test"], "m.test.npz", "is a directory")


def test_evaluate_and_calibrate_refuse_a_read_only_folder(tmp_path, capsys):
    ckpt = copy_shipped(tmp_path / "models")
    (tmp_path / "models").chmod(0o500)
    if os.access(tmp_path / "models", os.W_OK):
        pytest.skip("running as root: a read-only folder is still writable (the full-disk test covers calibrate)")
    refused(capsys, ["evaluate", ckpt, "--split", "test"], "m.test.npz")
    refused(capsys, ["calibrate", ckpt], "m.pt")


@pytest.mark.parametrize("kind", ("under_a_file", "a_file"))
def test_export_refuses_an_unwritable_folder(kind, tmp_path, capsys):
    ckpt = copy_shipped(tmp_path / "src")
    if kind == "a_file":
        out = tmp_path / "export"
        out.write_bytes(b"")
    else:
        out = bad_output(tmp_path, kind, "export")
    refused(capsys, ["export", ckpt, "--out", out], "export")


@pytest.mark.parametrize("kind", KINDS)
def test_make_slice_refuses_an_unwritable_output(kind, tmp_path, capsys):
    out = bad_output(tmp_path, kind, "slice.npz")
    refused(capsys, ["make-slice", "--out", out, "--data-dir", tmp_path], "slice.npz")


def disk_full(monkeypatch) -> None:
    """Every file write fails the way a full disk makes it fail."""

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_a_full_disk_is_one_line_and_leaves_the_checkpoint_whole(tmp_path, capsys, monkeypatch):
    ckpt = copy_shipped(tmp_path)
    before = ckpt.read_bytes()
    disk_full(monkeypatch)
    refused(capsys, ["calibrate", ckpt], "m.pt", "full")
    assert ckpt.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_leaves_no_partial_predictions(tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.csv"
    disk_full(monkeypatch)
    refused(
        capsys,
        ["run", SHIPPED, "--dataset", "fashion-mnist-slice", "--limit", "8", "--thresholds", "0.9", "--out", out],
        "full",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_exporting_is_one_line(tmp_path, capsys, monkeypatch):
    import aep_core.deploy.export as export

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "export" / "segment_0.onnx"))

    monkeypatch.setattr(export, "export_onnx", full)
    refused(capsys, ["export", copy_shipped(tmp_path / "src"), "--out", tmp_path / "export"], "segment_0.onnx", "full")


def test_info_on_a_directory_names_the_checkpoints_in_it(tmp_path, capsys):
    copy_shipped(tmp_path)
    refused(capsys, ["info", tmp_path], "is a directory", "m.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(capsys, ["info", empty], "is a directory", "no checkpoint")


@pytest.mark.parametrize(
    "args,flag",
    [
        (["solve", SHIPPED, "--budget", "7"], "--budget"),
        (["solve", SHIPPED, "--budget", "0"], "--budget"),
        (["solve", SHIPPED, "--max-drop", "-3", "--optimistic"], "--max-drop"),
        (["solve", SHIPPED, "--max-drop", "nan"], "--max-drop"),
        (["solve", SHIPPED, "--max-drop", "100"], "--max-drop"),
        (["solve", SHIPPED, "--max-drop", "0.5", "--confidence", "1"], "--confidence"),
        (["solve", SHIPPED, "--min-accuracy", "1.5"], "--min-accuracy"),
        (["run", SHIPPED, "--budget", "2"], "--budget"),
        (["run", SHIPPED, "--batch-size", "0"], "--batch-size"),
        (["run", SHIPPED, "--limit", "-1"], "--limit"),
        ([*TRAIN, "--epochs", "-2"], "--epochs"),
        ([*TRAIN, "--lr", "0"], "--lr"),
        ([*TRAIN, "--alpha", "1.5"], "--alpha"),
        ([*TRAIN, "--threads", "0"], "--threads"),
        ([*TRAIN, "--widths", "8,x"], "--widths"),
        (["sweep", SHIPPED, "--points", "0"], "--points"),
        (["prune", SHIPPED, "--tolerance", "-1", "--out", OUT], "--tolerance"),
        (["deploy", SHIPPED, "--deadline-ms", "-5"], "--deadline-ms"),
        (["ood", SHIPPED, "--quantile", "1"], "--quantile"),
        (["ood", SHIPPED, "--weight", "inf"], "--weight"),
        (["calibrate", SHIPPED, "--bins", "0"], "--bins"),
        (["export", SHIPPED, "--out", OUT, "--batch", "0"], "--batch"),
        (["make-slice", "--size", "0", "--out", OUT], "--size"),
        (
            ["policy", SHIPPED, "--rule", "entropy", "--t", "5"],
            "--t is not a setting of entropy (it takes --thresholds)",
        ),
        (["policy", SHIPPED, "--rule", "entropy", "--t", "0.5"], "it takes --thresholds"),
        (["policy", SHIPPED, "--rule", "patience", "--k", "1"], "it takes --t"),
        (["policy", SHIPPED, "--rule", "patience", "--t", "2.5"], "whole number"),
    ],
)
def test_impossible_option_values_are_one_line(args, flag, tmp_path, capsys, no_training):
    args = [tmp_path / "out" if a == OUT else a for a in args]
    if args[0] == "train":
        args += ["--out", tmp_path / "m.pt"]
    refused(capsys, args, flag)
    assert no_training == [] and list(tmp_path.iterdir()) == []
