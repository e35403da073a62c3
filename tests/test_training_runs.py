"""One-epoch training run of every method on the shipped slice, through the same job the CLI runs."""
import json

import numpy as np
import pytest
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.evaluation import evaluation_path, load_evaluation
from aep_core.experiment import TrainJob, run_train_job
from aep_core.training import MethodSettings, TrainConfig

SMALL = {"widths": [8, 16, 32]}


def _job(tmp_path, name, **method):
    return TrainJob(out=str(tmp_path / f"{name}.pt"), dataset="fashion-mnist-slice", limit=256, model_config=SMALL,
                    method=MethodSettings(**method),
                    train=TrainConfig(epochs=2, batch_size=64, threads=1, progress=False, seed=0))


@pytest.mark.parametrize("method", [
    {"method": "baseline"},
    {"method": "aep", "weighting": "uniform"},
    {"method": "aep", "weighting": "learned"},
    {"method": "eenet", "eenet_loss": "v2", "lam": 0.5},
    {"method": "eenet", "eenet_loss": "v1", "two_stage": True},
    {"method": "classifier-wise"},
    {"method": "distillation"},
])
def test_each_method_trains_and_saves(tmp_path, method):
    stats = []
    path = run_train_job(_job(tmp_path, method["method"], **method), callback=stats.append, log=lambda s: None)
    model, meta = load_checkpoint(path)
    assert len(stats) == 2 and np.isfinite(stats[-1].loss)
    n_exits = 1 if method["method"] == "baseline" else 5
    assert model.num_exits == n_exits and model.has_confidence == (method["method"] == "eenet")
    assert meta["training"]["method"] == method["method"]
    assert len(meta["metrics"]["val"]["exit_acc"]) == n_exits
    w = meta["training"]["ensemble_weights"]
    assert len(w) == n_exits and abs(sum(w) - 1) < 1e-5
    for split in ("val", "test"):
        rec = load_evaluation(evaluation_path(path, split))
        assert rec.num_exits == n_exits
        assert np.allclose(rec.exit_accuracy(), meta["metrics"][split]["exit_acc"])
    log = json.loads(path.with_suffix(".log.json").read_text())
    assert len(log["history"]) == 2


def test_classifier_wise_freezes_the_backbone(tmp_path):
    job = _job(tmp_path, "cw", method="classifier-wise", freeze_epochs=0)
    torch.manual_seed(0)
    from aep_core.data import load_dataset
    from aep_core.experiment import build_for_job

    before, _ = build_for_job(job, load_dataset("fashion-mnist-slice"))
    path = run_train_job(job, log=lambda s: None)
    after, _ = load_checkpoint(path)
    torch.testing.assert_close(after.backbone.blocks[0][0].weight, before.backbone.blocks[0][0].weight)
    assert not torch.equal(after.heads[0].fc.weight, before.heads[0].fc.weight)


def test_learned_weights_move_during_training(tmp_path):
    path = run_train_job(_job(tmp_path, "learned", method="aep", weighting="learned"), log=lambda s: None)
    _, meta = load_checkpoint(path)
    assert not np.allclose(meta["training"]["ensemble_weights"], 0.2)


def test_training_is_repeatable(tmp_path):
    a = run_train_job(_job(tmp_path / "a", "m", method="aep"), log=lambda s: None)
    b = run_train_job(_job(tmp_path / "b", "m", method="aep"), log=lambda s: None)
    ma, _ = load_checkpoint(a)
    mb, _ = load_checkpoint(b)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
