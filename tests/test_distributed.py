"""Training on two CPU processes with torchrun (gloo): the ranks agree, rank 0 writes a checkpoint that
loads, every method trains under DDP, and a DDP run stopped on one rank resumes to the same weights.

Run as a script under torchrun, this file is the worker of `test_every_method_under_ddp`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_cli import small_train_args

from aep_core.paths import PROJECT_DIR

ROOT = PROJECT_DIR
SMALL = {"widths": [8, 16, 32]}


def _torchrun(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "torchrun"
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the worker runs as a script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    return subprocess.run(
        [*launcher, "--standalone", "--nproc_per_node=2", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _digests(text: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d)/2: parameter digest ([0-9a-f]{16})", text))


def test_torchrun_two_cpu_processes_agree_and_rank0_saves(tmp_path):
    from aep_core.checkpoint import load_checkpoint
    from aep_core.checkpoint.sidecars import log_path, resume_path

    out = tmp_path / "m.pt"
    options = ("--batch-size", "32", "--weighting", "learned", "--quiet")
    r = _torchrun(["-m", "aep_core", *small_train_args(out, 256, 1, *options)])
    assert r.returncode == 0, r.stderr[-3000:]
    digests = _digests(r.stdout)
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], r.stdout
    assert r.stdout.count("saved ") == 1, "only rank 0 writes"
    model, meta = load_checkpoint(out)
    assert meta.training.processes == 2 and model.num_exits == 5
    assert log_path(out).exists() and not resume_path(out).exists()
    from aep_core.training.distributed import parameter_digest

    assert parameter_digest(model) != ""  # the saved weights are readable and hashable


def _make_folder(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(root / c / f"{i}.png")


CASES = {
    "baseline": {"method": "baseline"},
    "aep-learned": {"method": "aep", "weighting": "learned"},
    "eenet-two-stage": {"method": "eenet", "two_stage": True},
    "classifier-wise": {"method": "classifier-wise", "freeze_epochs": 1},
    "layer-wise": {"method": "layer-wise"},
    "distillation": {"method": "distillation"},
}
PLACEMENT = {"layer-wise": [2, 4]}  # two exits, so the two epochs give each its own


def test_every_method_under_ddp(tmp_path):
    _make_folder(tmp_path / "images")
    r = _torchrun([str(Path(__file__)), str(tmp_path)], timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    found: dict[str, dict[str, str]] = {}
    for rank, name, digest in re.findall(r"^RESULT (\d) (\S+) (\w+)$", r.stdout, re.M):
        found.setdefault(name, {})[rank] = digest
    expected = set(CASES) | {
        "folder-workers",
        "resumed",
        "uninterrupted",
        "frozen-backbone-unchanged",
        "torchvision-backbone-first",
    }
    assert set(found) == expected, r.stdout
    for name, by_rank in found.items():
        assert set(by_rank) == {"0", "1"} and by_rank["0"] == by_rank["1"], (name, by_rank)
    assert found["resumed"]["0"] == found["uninterrupted"]["0"]
    assert found["frozen-backbone-unchanged"]["0"] == "True"


def _worker(tmp: Path) -> None:
    """Each case trains 2 epochs on 2 ranks and prints `RESULT rank case digest`."""
    import torch

    from aep_core.cost import exit_costs
    from aep_core.data import load_dataset
    from aep_core.training import MethodSettings, TrainConfig, build_method, train
    from aep_core.training import distributed as dd
    from aep_core.training.job import TrainJob, build_for_job
    from aep_core.training.loop import StopRequest, TrainingInterrupted

    env = dd.setup("cpu")
    assert env.world_size == 2
    slice_data = load_dataset("fashion-mnist-slice", limit=64, seed=0)
    folder = load_dataset("folder", str(tmp / "images"), image_size=12, in_channels=1, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=16, threads=1, progress=False, seed=1)

    def build(settings: dict, bundle, placement: str | list[int] = "blocks", **model):
        model = model or {"model_config": SMALL}
        job = TrainJob(method=MethodSettings(**settings), placement=placement, **model)
        torch.manual_seed(0)
        model, _ = build_for_job(job, bundle)
        shape = (bundle.in_channels, bundle.image_size, bundle.image_size)
        rates = [e.macs_fraction for e in exit_costs(model, shape).exits]
        return model, build_method(job.method, model, rates, cfg.epochs)

    def report(name: str, value: str) -> None:
        sys.stdout.write(f"RESULT {env.rank} {name} {value}\n")  # one write: ranks share the pipe
        sys.stdout.flush()

    for name, settings in CASES.items():
        model, method = build(settings, slice_data, PLACEMENT.get(name, "blocks"))
        if name == "classifier-wise":
            before = [p.detach().clone() for p in model.backbone.parameters()]
            snap: dict[int, list[torch.Tensor]] = {}

            def keep_backbone(stats, snap=snap, backbone=model.backbone):
                snap.setdefault(stats.epoch, [p.detach().clone() for p in backbone.parameters()])

            train(model, method, slice_data.train, slice_data.val, cfg, callback=keep_backbone)
            if env.rank == 0:  # the backbone trains in epoch 1 and stays frozen in epoch 2
                after_1 = snap[1]
                unchanged = all(torch.equal(a, p) for a, p in zip(after_1, model.backbone.parameters(), strict=True))
                moved = any(not torch.equal(a, b) for a, b in zip(after_1, before, strict=True))
                report("frozen-backbone-unchanged", str(unchanged and moved))
            else:
                report("frozen-backbone-unchanged", "True")
        else:
            train(model, method, slice_data.train, slice_data.val, cfg)
        report(name, dd.parameter_digest(model, method))

    model, method = build({"method": "aep"}, folder)
    train(
        model,
        method,
        folder.train,
        folder.val,
        TrainConfig(epochs=1, batch_size=4, threads=1, workers=1, progress=False, augment=False),
    )
    report("folder-workers", dd.parameter_digest(model, method))

    # a torchvision classifier, its backbone and classifier first, then every exit jointly
    model, method = build(
        {"method": "aep", "backbone_epochs": 1},
        slice_data,
        "stages",
        model="torchvision",
        model_config={"arch": "mobilenet_v3_small"},
    )
    train(model, method, slice_data.train, slice_data.val, cfg)
    report("torchvision-backbone-first", dd.parameter_digest(model, method))

    model, method = build({"method": "aep", "weighting": "hybrid"}, slice_data)
    train(model, method, slice_data.train, slice_data.val, cfg)
    report("uninterrupted", dd.parameter_digest(model, method))
    model, method = build({"method": "aep", "weighting": "hybrid"}, slice_data)
    stop, state_file = StopRequest(), tmp / "state.pt"
    try:  # on_batch runs on rank 0 only: the stop must still reach rank 1 after the same step
        train(
            model,
            method,
            slice_data.train,
            slice_data.val,
            cfg,
            on_batch=lambda e, s, n: stop.set() if (e, s) == (0, 1) else None,
            save_state=lambda st: torch.save(st, state_file),
            stop=stop,
        )
        raise AssertionError("training was not interrupted")
    except TrainingInterrupted:
        pass
    dd.barrier()
    state = torch.load(state_file, weights_only=True)
    model, method = build({"method": "aep", "weighting": "hybrid"}, slice_data)
    train(model, method, slice_data.train, slice_data.val, cfg, resume=state)
    report("resumed", dd.parameter_digest(model, method))
    dd.teardown(env)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
