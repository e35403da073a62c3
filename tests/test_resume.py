"""Resuming: an interrupted and resumed run ends with the same weights as an uninterrupted one; states
load with weights_only; SIGTERM saves and exits cleanly; a failed write keeps the previous checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_cli import small_train_args

from aep_core.checkpoint import load_checkpoint, model_meta, read_checkpoint, save_checkpoint
from aep_core.checkpoint.sidecars import log_path, resume_path
from aep_core.errors import CheckpointError
from aep_core.models import ModelSpec, build_model
from aep_core.paths import PROJECT_DIR
from aep_core.training import MethodSettings, TrainConfig
from aep_core.training.job import TrainJob, run_train_job
from aep_core.training.loop import TrainingInterrupted

ROOT = PROJECT_DIR
SMALL = {"widths": [8, 16, 32]}
STEPS = 4  # limit 128 / batch 32


def _job(out: Path, resume: str | None = None, **method) -> TrainJob:
    return TrainJob(
        out=str(out),
        dataset="fashion-mnist-slice",
        limit=128,
        model_config=SMALL,
        method=MethodSettings(**(method or {"method": "aep", "weighting": "learned"})),
        train=TrainConfig(epochs=2, batch_size=32, threads=1, progress=False, seed=3),
        resume=resume,
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).state_dict


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return run_train_job(_job(tmp_path_factory.mktemp("ref") / "ref.pt"), log=lambda s: None)


def _interrupt_at(epoch: int, step: int):
    def on_batch(e: int, s: int, steps: int) -> None:
        if (e, s) == (epoch, step):
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler turns it into a stop after this step

    return on_batch


@pytest.mark.parametrize("epoch,step", [(0, STEPS), (0, 2), (1, 1)], ids=["epoch-end", "mid-epoch-1", "mid-epoch-2"])
def test_interrupted_then_resumed_run_matches_uninterrupted(tmp_path, uninterrupted, epoch, step):
    out = tmp_path / "m.pt"
    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        run_train_job(_job(out), on_batch=_interrupt_at(epoch, step), log=lambda s: None)
    assert (info.value.epoch, info.value.step) == (epoch, step)
    state_file = resume_path(out)
    assert state_file.exists() and not out.exists()
    payload = torch.load(state_file, map_location="cpu", weights_only=True)  # plain types and tensors only
    assert payload["extra"]["train_state"]["epoch"] == epoch and payload["extra"]["train_state"]["step"] == step
    assert read_checkpoint(state_file).meta.training.resume_of == out.name

    history = []
    run_train_job(_job(out, resume=str(state_file)), callback=history.append, log=lambda s: None)
    assert not state_file.exists(), "the finished run removes its resumable state"
    ref, got = _weights(uninterrupted), _weights(out)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    ref_log = json.loads(log_path(uninterrupted).read_text())["history"]
    got_log = json.loads(log_path(out).read_text())["history"]
    assert [h["loss"] for h in got_log] == pytest.approx([h["loss"] for h in ref_log], rel=1e-6)
    assert [h["val_acc"] for h in got_log] == [h["val_acc"] for h in ref_log]
    assert [s.epoch for s in history] == list(range(epoch + 1, 3))  # the interrupted epoch is reported once done


def test_resume_refuses_a_checkpoint_without_state_or_for_another_model(tmp_path, uninterrupted):
    with pytest.raises(CheckpointError, match="no training state"):
        run_train_job(_job(tmp_path / "a.pt", resume=str(uninterrupted)), log=lambda s: None)
    out = tmp_path / "b.pt"
    with pytest.raises(TrainingInterrupted):
        run_train_job(_job(out), on_batch=_interrupt_at(0, 1), log=lambda s: None)
    other = _job(tmp_path / "c.pt", resume=str(resume_path(out)))
    other.model_config = {"widths": [8, 16, 48]}
    with pytest.raises(Exception, match="another model"):
        run_train_job(other, log=lambda s: None)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    spec = ModelSpec(backbone="compact_cnn", backbone_config=SMALL, in_channels=1, image_size=28)
    model = build_model(spec)
    old = model_meta(spec, model)
    save_checkpoint(path, model, old)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of what it is given, then fails like a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="the disk is full"):
        save_checkpoint(path, model, replace(old, created="later"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_checkpoint(path).meta == old
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "no temporary file is left behind"


def test_sigterm_saves_state_and_resume_finishes(tmp_path):
    out = tmp_path / "m.pt"
    args = [sys.executable, "-m", "aep_core", *small_train_args(out, 512, 3, "--batch-size", "8")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.time() + 60
    for line in proc.stdout:  # wait until the first epoch has been reported
        lines.append(line)
        if line.startswith("epoch 1:") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Training stopped in epoch" in err and f"--resume {resume_path(out)}" in err
    assert "Traceback" not in err
    assert resume_path(out).exists() and not out.exists()
    done = subprocess.run(
        [*args, "--resume", str(resume_path(out)), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    _, meta = load_checkpoint(out)
    assert meta.training.resumed_from == str(resume_path(out))
    assert len(json.loads(log_path(out).read_text())["history"]) == 3
    assert not resume_path(out).exists()


def test_fp16_on_cpu_is_a_clear_error():
    cfg = TrainConfig(amp="fp16", device="cpu")
    with pytest.raises(Exception, match="needs a GPU"):
        cfg.validate()
