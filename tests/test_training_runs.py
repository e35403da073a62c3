"""One-epoch training run of every method on the shipped slice, through the same job the CLI runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path, log_path
from aep_core.evaluation import load_evaluation
from aep_core.training import METHODS, MethodSettings, TrainConfig, get_method
from aep_core.training.job import TrainJob, ensemble_fit_size, run_train_job

SMALL = {"widths": [8, 16, 32]}


def _job(tmp_path, name, **method):
    return TrainJob(
        out=str(tmp_path / f"{name}.pt"),
        dataset="fashion-mnist-slice",
        limit=256,
        model_config=SMALL,
        method=MethodSettings(**method),
        train=TrainConfig(epochs=2, batch_size=64, threads=1, progress=False, seed=0),
    )


@pytest.mark.parametrize(
    "method",
    [{"method": name} for name in METHODS]
    + [
        {"method": "aep", "weighting": "learned"},
        {"method": "eenet", "eenet_loss": "v1", "two_stage": True, "lam": 0.5},
    ],
    ids=lambda m: "-".join(str(v) for v in m.values()),
)
def test_each_method_trains_and_saves(tmp_path, method):
    stats = []
    cls = get_method(method["method"])
    epochs = 5 if method["method"] == "layer-wise" else 2  # layer-wise: at least one epoch per exit
    job = _job(tmp_path, method["method"], **method)
    job.train.epochs = epochs
    path = run_train_job(job, callback=stats.append, log=lambda s: None)
    model, meta = load_checkpoint(path)
    assert len(stats) == epochs and np.isfinite(stats[-1].loss)
    n_exits = 5 if cls.uses_early_exits else 1
    assert model.num_exits == n_exits and model.head_kind == cls.head
    assert {"method": meta.training.method, **meta.training.settings} == MethodSettings(**method).relevant()
    assert len(meta.metrics["val"].exit_acc) == n_exits
    w = meta.training.ensemble_weights
    assert len(w) == n_exits and abs(sum(w) - 1) < 1e-5
    for split in ("val", "test"):
        rec = load_evaluation(evaluation_path(path, split))
        assert rec.num_exits == n_exits
        assert np.allclose(rec.exit_accuracy(), meta.metrics[split].exit_acc)
    log = json.loads(log_path(path).read_text())
    assert len(log["history"]) == epochs


def test_classifier_wise_freezes_the_backbone(tmp_path):
    job = _job(tmp_path, "cw", method="classifier-wise", freeze_epochs=0)
    torch.manual_seed(0)
    from aep_core.data import load_dataset
    from aep_core.training.job import build_for_job

    before, _ = build_for_job(job, load_dataset("fashion-mnist-slice"))
    path = run_train_job(job, log=lambda s: None)
    after, _ = load_checkpoint(path)
    torch.testing.assert_close(after.backbone.blocks[0][0].weight, before.backbone.blocks[0][0].weight)
    assert not torch.equal(after.heads[0].fc.weight, before.heads[0].fc.weight)


def test_trainable_weights_are_fitted_on_training_images_held_out_of_training(tmp_path):
    path = run_train_job(_job(tmp_path, "learned", method="aep", weighting="learned"), log=lambda s: None)
    _, meta = load_checkpoint(path)
    assert not np.allclose(meta.training.ensemble_weights, 0.2)
    sizes = meta.dataset.sizes
    assert sizes["ensemble_fit"] == ensemble_fit_size(256) and sizes["train"] + sizes["ensemble_fit"] == 256
    _, fixed = load_checkpoint(
        run_train_job(_job(tmp_path, "uniform", method="aep", weighting="uniform"), log=lambda s: None)
    )
    assert "ensemble_fit" not in fixed.dataset.sizes and fixed.dataset.sizes["train"] == 256


def test_training_is_repeatable(tmp_path):
    a = run_train_job(_job(tmp_path / "a", "m", method="aep"), log=lambda s: None)
    b = run_train_job(_job(tmp_path / "b", "m", method="aep"), log=lambda s: None)
    ma, _ = load_checkpoint(a)
    mb, _ = load_checkpoint(b)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_layer_wise_trains_one_exit_at_a_time_and_freezes_what_came_before(tmp_path):
    from aep_core.data import load_dataset
    from aep_core.training import build_method, train
    from aep_core.training.job import build_for_job

    job = _job(tmp_path, "lw", method="layer-wise")
    job.train.epochs = 5
    data = load_dataset("fashion-mnist-slice", limit=128)
    torch.manual_seed(0)
    model, _ = build_for_job(job, data)
    method = build_method(job.method, model, [0.2, 0.4, 0.6, 0.8, 1.0], 5)
    assert [method.stage(e) for e in range(5)] == [0, 1, 2, 3, 4]
    snapshots = []  # after each epoch: a copy of every parameter and BatchNorm statistic

    def snap(stats):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = train(model, method, data.train, data.val, job.train, callback=snap)
    for epoch, stats in enumerate(result.history):
        assert [a is None for a in stats.train_acc] == [k > epoch for k in range(5)]  # later exits not run
    for k in range(5):
        before = start if k == 0 else snapshots[k - 1]
        changed = {name for name, v in snapshots[k].items() if not torch.equal(v, before[name])}
        trained = {f"backbone.blocks.{b}." for b in model.segment_blocks(k)} | {f"heads.{k}."}
        if k == 0:
            trained.add("backbone.stem.")
        assert changed and all(any(name.startswith(t) for t in trained) for name in changed), (k, changed)
    with pytest.raises(Exception, match="at least one epoch"):
        build_method(job.method, model, [0.2, 0.4, 0.6, 0.8, 1.0], 3)


def test_learning_rate_schedule_restarts_for_each_layer_wise_stage():
    from aep_core.models import ModelSpec, build_model
    from aep_core.training import build_method

    model = build_model(ModelSpec(backbone_config=SMALL))
    joint = build_method(MethodSettings("aep"), model, [0.2, 0.4, 0.6, 0.8, 1.0], 10)
    assert joint.schedule_fraction(0, 10) == 0 and joint.schedule_fraction(50, 10) == 0.5
    lw = build_method(MethodSettings("layer-wise"), model, [0.2, 0.4, 0.6, 0.8, 1.0], 10)  # 2 epochs per exit
    assert [lw.stage(e) for e in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [lw.schedule_fraction(s, 10) for s in (0, 10, 19, 20, 30, 99)] == [0.0, 0.5, 0.95, 0.0, 0.5, 0.95]


def test_training_writes_its_checkpoint_once_with_the_temperatures_in_it(tmp_path, monkeypatch):
    from aep_core.analysis.calibration import fit_temperatures
    from aep_core.checkpoint import format as checkpoint_format
    from aep_core.checkpoint import read_checkpoint

    written: list[tuple[Path, bytes]] = []
    write = checkpoint_format.atomic_write_bytes

    def recording(path, data):
        written.append((Path(path), data))
        write(path, data)

    monkeypatch.setattr(checkpoint_format, "atomic_write_bytes", recording)
    path = run_train_job(_job(tmp_path, "once", method="aep"), log=lambda s: None)
    finals = [data for p, data in written if p == path]
    assert len(finals) == 1, "the checkpoint is written once"
    stored = read_checkpoint(finals[0]).meta.calibration
    val = load_evaluation(evaluation_path(path, "val"))
    assert stored is not None and stored.samples == val.num_samples
    assert stored.temperatures == pytest.approx(fit_temperatures(val).tolist())
