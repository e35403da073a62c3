"""End-to-end jobs shared by the CLI and the app: train -> checkpoint + evaluation files + log;
evaluate a checkpoint on a split."""
from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from .cost import exit_costs
from .data import DataBundle, load_dataset
from .errors import CheckpointError, ConfigError
from .evaluation import ExitRecord, collect_outputs, evaluation_path, save_evaluation
from .models import EarlyExitNet, ModelSpec, build_model
from .training import EpochStats, Method, MethodSettings, TrainConfig, head_for, train


@dataclass
class TrainJob:
    """Everything a training run needs: data, model, method and optimisation settings, output path."""

    out: str = "runs/model.pt"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int | None = None
    limit: int | None = None
    image_size: int = 32  # image folders only
    in_channels: int = 3  # image folders only
    model: str = "compact_cnn"
    model_config: dict[str, Any] = field(default_factory=dict)
    placement: str | list[int] = "blocks"
    num_early_exits: int | None = None
    init: str | None = None  # start from this checkpoint's weights (matching layers)
    method: MethodSettings = field(default_factory=MethodSettings)
    train: TrainConfig = field(default_factory=TrainConfig)


def build_for_job(job: TrainJob, bundle: DataBundle) -> tuple[EarlyExitNet, ModelSpec]:
    """The model a job trains: baseline gets the final classifier only, other methods get exits."""
    spec = ModelSpec(backbone=job.model, backbone_config=dict(job.model_config), in_channels=bundle.in_channels,
                     image_size=bundle.image_size, num_classes=len(bundle.class_names),
                     head=head_for(job.method.method), placement=job.placement, num_early_exits=job.num_early_exits)
    if job.method.method == "baseline":
        spec.placement, spec.num_early_exits = [], None
    model = build_model(spec)
    if job.init:
        init_model, _ = load_checkpoint(job.init)
        own = model.state_dict()
        # The final head of the initial model is this model's final head; other heads are new.
        src = dict(init_model.state_dict())
        last_src, last_dst = init_model.num_exits - 1, model.num_exits - 1
        renamed = {k.replace(f"heads.{last_src}.", f"heads.{last_dst}.", 1) if k.startswith(f"heads.{last_src}.") else k: v
                   for k, v in src.items() if k.startswith("backbone.") or k.startswith(f"heads.{last_src}.")}
        matching = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
        if not any(k.startswith("backbone.") for k in matching):
            raise CheckpointError(f"--init {job.init}: its backbone does not match the model being trained.")
        own.update(matching)
        model.load_state_dict(own)
    return model, spec


def run_train_job(job: TrainJob, callback: Callable[[EpochStats], None] | None = None,
                  on_batch: Callable[[int, int, int], None] | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """Train, then save the checkpoint, its evaluation files on the validation and test splits, and a JSON log."""
    job.train.validate()
    bundle = load_dataset(job.dataset, job.data_dir, job.val_size, job.train.seed, job.limit, job.image_size, job.in_channels)
    torch.manual_seed(job.train.seed)
    model, spec = build_for_job(job, bundle)
    input_shape = (bundle.in_channels, bundle.image_size, bundle.image_size)
    costs = exit_costs(model, input_shape)
    cost_rates = [e.macs_fraction for e in costs.exits]
    method = Method(job.method, model, cost_rates, job.train.epochs)
    log(f"training {spec.backbone} with {job.method.method} on {bundle.name}: exits after blocks {spec.exit_blocks}, "
        f"{len(bundle.train)} train / {len(bundle.val)} val / {len(bundle.test)} test images")
    result = train(model, method, bundle.train, bundle.val, job.train, callback, on_batch)
    model.cpu()
    weights = method.ensemble_weights()
    out = Path(job.out)
    records: dict[str, ExitRecord] = {}
    for split in ("val", "test"):
        records[split] = collect_outputs(model, getattr(bundle, split), costs.cum_macs, costs.full_macs,
                                         info={"split": split, "checkpoint": out.name, "class_names": bundle.class_names,
                                               "ensemble_weights": weights})
    metrics = {split: {"exit_acc": rec.exit_accuracy().tolist(), "ensemble_acc": rec.ensemble_accuracy(weights).tolist(),
                       "n": rec.num_samples} for split, rec in records.items()}
    meta = {
        "model": spec.to_dict(),
        "dataset": bundle.meta(),
        "cost": costs.to_dict(),
        "training": {**job.method.relevant(), "config": asdict(job.train), "ensemble_weights": weights,
                     "init": job.init, "limit": job.limit, "seconds": result.seconds,
                     "device": f"{job.train.device} ({platform.processor() or platform.machine()}, "
                               f"{torch.get_num_threads()} threads)"},
        "metrics": metrics,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "aep_core_version": __version__,
    }
    save_checkpoint(out, model, meta)
    for split, rec in records.items():
        save_evaluation(evaluation_path(out, split), rec)
    atomic_write_bytes(out.with_suffix(".log.json"), json.dumps({"job": asdict(job), **result.to_dict()}, indent=1).encode())
    log(f"saved {out} (+ {evaluation_path(out, 'val').name}, {evaluation_path(out, 'test').name}, {out.with_suffix('.log.json').name})")
    return out


def evaluate_checkpoint(path: str | Path, split: str = "test", dataset: str | None = None, data_dir: str | None = None,
                        out: str | Path | None = None) -> tuple[ExitRecord, Path]:
    """Evaluate a checkpoint on a split of its own dataset (or another one with the same classes) and save the file."""
    model, meta = load_checkpoint(path)
    ds = meta["dataset"]
    name = dataset or ds["name"]
    if name.startswith("folder:"):
        data_dir, name = data_dir or name.split(":", 1)[1], "folder"
    if split not in ("train", "val", "test"):
        raise ConfigError(f"Split must be train, val or test, got '{split}'.")
    bundle = load_dataset(name, data_dir, ds.get("val_size") if name == ds["name"] else None, ds.get("val_seed", 0),
                          image_size=ds["image_size"], in_channels=ds["in_channels"])
    if len(bundle.class_names) != model.num_classes:
        raise ConfigError(f"{name} has {len(bundle.class_names)} classes, the model predicts {model.num_classes}.")
    c = meta["cost"]
    rec = collect_outputs(model, getattr(bundle, split), [e["cum_macs"] for e in c["exits"]], c["full_macs"],
                          info={"split": split, "checkpoint": Path(path).name, "class_names": bundle.class_names,
                                "ensemble_weights": meta["training"]["ensemble_weights"], "dataset": name})
    target = Path(out) if out else evaluation_path(path, split)
    save_evaluation(target, rec)
    return rec, target
