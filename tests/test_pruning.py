"""AEP pruning: the cut, the smaller loadable checkpoint, identical outputs at the kept exits."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from aep_core.analysis.pruning import choose_cut, prune_checkpoint, prune_model
from aep_core.checkpoint import PruningMeta, SplitMetrics, TrainingMeta, load_checkpoint, model_meta, save_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.rules import ModelExits, list_rules
from aep_core.models import ModelSpec, build_model
from aep_core.training import MethodSettings, TrainConfig
from aep_core.training.job import TrainJob, run_train_job


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("prune")
    job = TrainJob(
        out=str(d / "m.pt"),
        dataset="fashion-mnist-slice",
        limit=256,
        model_config={"widths": [8, 16, 32]},
        method=MethodSettings("aep", "hybrid"),
        train=TrainConfig(epochs=1, batch_size=64, threads=1, progress=False, seed=0),
    )
    return run_train_job(job, log=lambda s: None)


def _record(acc_per_exit_right):
    """A record whose exit k is right exactly on the samples marked in row k (confident one-hot logits)."""
    right = np.asarray(acc_per_exit_right, dtype=bool)  # (exits, n)
    e, n = right.shape
    labels = np.zeros(n, dtype=np.int64)
    logits = np.zeros((e, n, 3), dtype=np.float32)
    logits[..., 1] = 5.0
    logits[right, 0] = 10.0
    return ExitRecord(logits, labels, np.arange(1, e + 1), e, info={"ensemble_weights": [10.0**k for k in range(e)]})


def test_choose_cut_by_hand():
    # Each exit weighs ten times the one before and is confident, so the ensemble of exits 0..k follows
    # exit k: accuracies per cut are 1/4, 3/4, 3/4, 4/4.
    rec = _record([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert choose_cut(rec) == 3
    assert choose_cut(rec, tolerance=0.25) == 1  # smallest cut within a quarter of the best
    rec = _record([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    assert choose_cut(rec) == 1  # the best cut is not the last exit


def test_bad_cut_settings():
    rec = _record([[1, 0], [1, 1]])
    with pytest.raises(AepError, match="tolerance"):
        choose_cut(rec, tolerance=2)
    with pytest.raises(AepError, match="ensemble weight"):
        choose_cut(rec, weights=[1.0])
    bare = ExitRecord(rec.logits, rec.labels, rec.cum_macs, rec.full_macs)  # a record without trained weights
    with pytest.raises(AepError, match="ensemble weight"):
        choose_cut(bare)
    assert choose_cut(bare, weights=[1.0, 1.0]) == choose_cut(rec, weights=[1.0, 1.0])


def test_the_records_trained_weights_choose_the_cut_unless_weights_are_given():
    # exit 0 is right on 3 samples and sure of it, exit 1 on all 4 and barely sure: with little weight on exit 1
    # the ensemble of exits 0..1 follows exit 0, with much it follows exit 1
    rec = _record([[1, 1, 1, 0], [1, 1, 1, 1]])
    rec.logits[1] = np.where(rec.logits[1] == 10.0, 5.5, rec.logits[1])
    rec.info["ensemble_weights"] = [0.01, 1.0]  # uniform weights would follow exit 0 too
    assert choose_cut(rec) == 1
    assert choose_cut(rec, weights=[1.0, 0.01]) == 0
    assert choose_cut(rec, weights=[1.0, 1.0]) == 0


def test_pruned_checkpoint_is_smaller_loadable_and_equal_at_kept_exits(trained, tmp_path):
    model, meta = load_checkpoint(trained)
    out, report = prune_checkpoint(trained, tmp_path / "p.pt", cut=2)
    pruned, pmeta = load_checkpoint(out)
    assert pruned.num_exits == 3 and len(pruned.backbone.blocks) == model.exit_blocks[2] + 1
    assert pmeta.model.exit_blocks == model.exit_blocks[:3]
    assert pmeta.model.num_blocks == model.exit_blocks[2] + 1
    assert pmeta.training.ensemble_weights == meta.training.ensemble_weights[:3]
    assert pmeta.pruning == PruningMeta(2, model.exit_blocks, len(model.backbone.blocks), trained.name, 0.0)
    assert pmeta.calibration.temperatures == meta.calibration.temperatures[:3]
    assert (pmeta.dataset, pmeta.training.settings) == (meta.dataset, meta.training.settings)
    n_params = sum(p.numel() for p in pruned.parameters())
    assert n_params == report.params_pruned < report.params_with_exits
    assert report.macs_pruned == meta.cost.exits[2].cum_macs < report.macs_full
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        a, b = model(x), pruned(x)
    for k in range(3):
        assert torch.equal(a.logits[k], b.logits[k])
    val = load_evaluation(evaluation_path(out, "val"))
    assert val.num_exits == 3 and val.full_macs == pmeta.cost.full_macs
    assert report.test_acc_pruned == pytest.approx(
        load_evaluation(evaluation_path(trained, "test")).ensemble_accuracy(meta.training.ensemble_weights)[2]
    )


def test_prune_chooses_the_best_validation_cut(trained, tmp_path):
    _, meta = load_checkpoint(trained)
    val = load_evaluation(evaluation_path(trained, "val"))
    expected = choose_cut(val, meta.training.ensemble_weights)
    _, report = prune_checkpoint(trained, tmp_path / "best.pt")
    assert report.cut == expected
    assert "parameters" in report.format()


def test_prune_model_direct_and_bad_cut():
    torch.manual_seed(0)
    spec = ModelSpec(backbone_config={"widths": [8, 16, 32]})
    m = build_model(spec).eval()
    meta = model_meta(
        spec,
        m,
        training=TrainingMeta("aep", ensemble_weights=[0.2] * 5),
        metrics={"val": SplitMetrics([0.1, 0.2, 0.3, 0.4, 0.5], n=3)},
    )
    p, pm = prune_model(m, meta, 0)
    assert p.num_exits == 1 and pm.metrics["val"] == SplitMetrics([0.1], n=3)
    assert pm.training.ensemble_weights == [0.2] and pm.cost.cum_macs == meta.cost.cum_macs[:1]
    with pytest.raises(AepError, match="does not exist"):
        prune_model(m, meta, 5)


def test_prune_refuses_eenet_models(trained, tmp_path):
    _, meta = load_checkpoint(trained)
    spec = replace(meta.model, head="eenet")
    m = build_model(spec)
    save_checkpoint(tmp_path / "ee.pt", m, replace(meta, model=spec))
    with pytest.raises(AepError, match="AEP model"):
        prune_checkpoint(tmp_path / "ee.pt", tmp_path / "x.pt")


def test_cli_prune_and_policy_commands(trained, tmp_path, capsys):
    assert (
        main(
            [
                "prune",
                str(trained),
                "--out",
                str(tmp_path / "c.pt"),
                "--cut",
                "1",
                "--latency-repeats",
                "3",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "latency batch 1" in out and "latency batch 256" in out and "saved" in out
    pruned_test = load_evaluation(evaluation_path(tmp_path / "c.pt", "test"))
    for name in list_rules(model=ModelExits.of_record(pruned_test)):  # every rule replays on the pruned outputs
        assert main(["policy", str(tmp_path / "c.pt"), "--rule", name]) == 0
        assert "accuracy" in capsys.readouterr().out
    assert main(["solve", str(trained), "--budget", "0.6", "--optimistic"]) == 0
    assert "test:" in capsys.readouterr().out
    assert main(["sweep", str(trained), "--points", "20"]) == 0
    assert main(["solve", str(trained), "--budget", "0.01", "--optimistic"]) == 2
    assert "cheapest reachable" in capsys.readouterr().err
    assert main(["policy", str(tmp_path / "missing.npz")]) == 2
    assert main(["prune", str(trained), "--cut", "9", "--out", str(tmp_path / "d.pt")]) == 2
