"""End-to-end jobs shared by the CLI and the app: train -> checkpoint + evaluation files + log;
evaluate a checkpoint on a split."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from aep_core.analysis.calibration import calibration_meta, fit_temperatures
from aep_core.checkpoint import (
    CheckpointMeta,
    DatasetMeta,
    SplitMetrics,
    TrainingMeta,
    atomic_write_bytes,
    load_checkpoint,
    model_meta,
    read_checkpoint,
    save_checkpoint,
)
from aep_core.checkpoint.sidecars import evaluation_path, log_path, resume_path, training_outputs
from aep_core.cost import CostReport, exit_costs
from aep_core.data import DataBundle, hold_out, load_dataset
from aep_core.errors import CheckpointError, ConfigError
from aep_core.evaluation import ExitRecord, collect_outputs, save_evaluation
from aep_core.models import EarlyExitNet, ModelSpec, build_model
from aep_core.outputs import check_writable
from aep_core.training import EpochStats, MethodSettings, TrainConfig, build_method, get_method, train
from aep_core.training import distributed as dd
from aep_core.training.loop import TrainingInterrupted


@dataclass
class TrainJob:
    """Everything a training run needs: data, model, method and optimisation settings, output path."""

    out: str = "runs/model.pt"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int | None = None
    split_seed: int = 0  # the validation split: fixed across training seeds so that runs compare on the same data
    limit: int | None = None
    image_size: int = 32  # image folders only
    in_channels: int = 3  # image folders only
    model: str = "compact_cnn"
    model_config: dict[str, Any] = field(default_factory=dict)
    placement: str | list[int] = "blocks"
    num_early_exits: int | None = None
    head_pool: int = 4  # exit heads pool to a 4x4 grid: early exits keep where features are, not only what
    init: str | None = None  # start from this checkpoint's weights (matching layers)
    weights: str | None = None  # torchvision backbones: a state_dict file, or torchvision's pretrained weights' name
    mean: list[float] | None = None  # image folders: per-channel normalisation (default: the weights', else 0.5)
    std: list[float] | None = None
    method: MethodSettings = field(default_factory=MethodSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: str | None = None  # continue from this resumable state (`<stem>.resume.pt`)


def build_for_job(job: TrainJob, bundle: DataBundle) -> tuple[EarlyExitNet, ModelSpec]:
    """The model a job trains: baseline gets the final classifier only, other methods get exits."""
    method = get_method(job.method.method)
    if job.model == "cascade":
        raise ConfigError(
            "A cascade is built from networks trained on their own: train each, then join them with "
            "`python -m aep_core cascade --members SMALL.pt BIG.pt --out CASCADE.pt`."
        )
    spec = ModelSpec(
        backbone=job.model,
        backbone_config=dict(job.model_config),
        in_channels=bundle.in_channels,
        image_size=bundle.image_size,
        num_classes=len(bundle.class_names),
        head=method.head,
        placement=job.placement,
        num_early_exits=job.num_early_exits,
        head_pool=job.head_pool,
    )
    if not method.uses_early_exits:
        spec.placement, spec.num_early_exits = [], None
    model = build_model(spec)
    if job.weights:
        from aep_core.models.torchvision_backbones import load_torchvision_weights

        model.final_pretrained = load_torchvision_weights(model, job.weights).classifier_kept
    if job.init:
        init_model, _ = load_checkpoint(job.init)
        own = model.state_dict()
        # The final head of the initial model is this model's final head; other heads are new.
        src = dict(init_model.state_dict())
        last_src, last_dst = init_model.num_exits - 1, model.num_exits - 1
        src_head, dst_head = f"heads.{last_src}.", f"heads.{last_dst}."
        renamed = {
            k.replace(src_head, dst_head, 1) if k.startswith(src_head) else k: v
            for k, v in src.items()
            if k.startswith(("backbone.", src_head))
        }
        matching = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
        if not any(k.startswith("backbone.") for k in matching):
            raise CheckpointError(f"--init {job.init}: its backbone does not match the model being trained.")
        own.update(matching)
        model.load_state_dict(own)
        model.final_pretrained = any(k.startswith(dst_head) for k in matching)
    return model, spec


def job_normalisation(job: TrainJob) -> tuple[list[float] | None, list[float] | None]:
    """The per-channel mean and std an image folder is normalised with: the job's own, else those of the
    torchvision pretrained weights it starts from (None: the default)."""
    if job.mean or job.std or not job.weights or job.model != "torchvision":
        return job.mean, job.std
    from aep_core.models.torchvision_backbones import is_weights_name, torchvision_weights_file

    if not is_weights_name(job.weights):
        return None, None
    _, info = torchvision_weights_file(job.model_config.get("arch", ""), job.weights)
    if job.in_channels == 1:
        return [sum(info["mean"]) / 3], [sum(info["std"]) / 3]
    return info["mean"], info["std"]


def _read_resume_state(path: str, spec: ModelSpec, job: TrainJob) -> dict[str, Any]:
    """The training state saved in a resumable checkpoint, checked against the run it should continue."""
    stored = read_checkpoint(path)
    state = stored.extra.get("train_state")
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds weights but no training state: resume from a "
            f"`{resume_path('<name>.pt').name}` file written during training."
        )
    saved = stored.meta.model.to_dict()
    if saved != spec.to_dict():
        raise ConfigError(f"{path} was saved for another model ({saved}); resume with the same model options.")
    method = stored.meta.training.method
    if method != job.method.method:
        raise ConfigError(f"{path} was saved while training with --method {method}, not {job.method.method}.")
    return {**state, "model": stored.state_dict}


def job_meta(
    job: TrainJob,
    cfg: TrainConfig,
    spec: ModelSpec,
    model: EarlyExitNet,
    bundle: DataBundle,
    cost: CostReport,
    ensemble_weights: list[float],
    seconds: float,
    **training: Any,
) -> CheckpointMeta:
    """The metadata of a job's model after `seconds` of training with loop configuration `cfg`; `training` holds
    further entries of its training record (device, processes, ...)."""
    settings = {k: v for k, v in job.method.relevant().items() if k != "method"}
    record = TrainingMeta(
        job.method.method,
        settings,
        asdict(cfg),
        list(ensemble_weights),
        job.init,
        job.limit,
        seconds,
        weights=weights_record(job.weights),
        **training,
    )
    return model_meta(spec, model, DatasetMeta(**bundle.meta()), record, cost)


def weights_record(weights: str | None) -> str | None:
    """How a checkpoint records its starting weights: torchvision's weights name as it is, a file by its name and
    the sha256 of its bytes (not its path on the machine that trained)."""
    from aep_core.training.estimate import weights_identity

    if not weights or weights_identity(weights) == weights:
        return weights
    return f"{Path(weights).name} ({weights_identity(weights)})"


def ensemble_fit_size(train_size: int) -> int:
    """Training images held out to fit trainable ensemble weights: 5% of the training split, at most 2,500."""
    return min(2500, max(1, round(0.05 * train_size)))


def run_train_job(
    job: TrainJob,
    callback: Callable[[EpochStats], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, then save the checkpoint, its evaluation files on the validation and test splits, and a JSON log.
    Every `job.train.save_every` epochs, and on SIGINT/SIGTERM, a resumable state goes to `resume_path(job.out)`;
    `job.resume` continues from one. Under torchrun this runs on every rank; rank 0 writes the files."""
    job.train.validate()
    for path in training_outputs(job.out):  # before any epoch: a file that cannot be written fails now
        check_writable(path)
    env = dd.setup(job.train.device)
    try:
        return _run(job, env, callback, on_batch, log)
    finally:
        dd.teardown(env)


def _run(
    job: TrainJob,
    env: dd.DistEnv,
    callback: Callable[[EpochStats], None] | None,
    on_batch: Callable[[int, int, int], None] | None,
    log: Callable[[str], None],
) -> Path:
    rank_log = log
    log = log if env.is_main else (lambda _msg: None)
    cfg = replace(job.train, device=env.device)
    mean, std = job_normalisation(job)
    bundle = load_dataset(
        job.dataset, job.data_dir, job.val_size, job.split_seed, job.limit, job.image_size, job.in_channels, mean, std
    )
    torch.manual_seed(cfg.seed)
    model, spec = build_for_job(job, bundle)
    input_shape = (bundle.in_channels, bundle.image_size, bundle.image_size)
    costs = exit_costs(model, input_shape)
    cost_rates = [e.macs_fraction for e in costs.exits]
    method = build_method(job.method, model, cost_rates, cfg.epochs)
    if method.fits_ensemble_weights:  # the ensemble weights are fitted on training images kept out of training
        rest, held = hold_out(bundle.train, ensemble_fit_size(len(bundle.train)), job.split_seed)
        bundle = replace(bundle, train=rest, held_out=held)
    resume = _read_resume_state(job.resume, spec, job) if job.resume else None
    out = Path(job.out)
    state_path = resume_path(out)
    log(
        f"training {spec.backbone} with {job.method.method} on {bundle.name}: exits after blocks {spec.exit_blocks}, "
        f"{len(bundle.train)} train / {len(bundle.val)} val / {len(bundle.test)} test images"
        + (f", {env.world_size} processes ({env.device})" if env.active else "")
        + (f", resuming from {job.resume} (epoch {resume['epoch'] + 1}, step {resume['step']})" if resume else "")
    )

    meta_after = partial(job_meta, job, cfg, spec, model, bundle, costs)  # (ensemble weights, seconds, **training)

    def save_state(state: dict[str, Any]) -> None:
        meta = meta_after(method.ensemble_weights(), state["seconds"], device=cfg.device, resume_of=out.name)
        train_state = {k: v for k, v in state.items() if k != "model"}
        save_checkpoint(state_path, model, meta, extra={"train_state": train_state})

    try:
        result = train(
            model, method, bundle.train, bundle.val, cfg, callback, on_batch, resume=resume, save_state=save_state
        )
    except TrainingInterrupted as e:
        raise TrainingInterrupted(
            e.epoch,
            e.step,
            e.steps,
            e.saved,
            f"Saved {state_path}; continue with the same command plus `--resume {state_path}`.",
        ) from None
    if env.active:
        rank_log(f"rank {env.rank}/{env.world_size}: parameter digest {dd.parameter_digest(model, method)}")
    if not env.is_main:
        dd.barrier()  # rank 0 is writing the files
        return out
    model.cpu()
    if bundle.held_out is not None:
        held = collect_outputs(model, bundle.held_out, costs.cum_macs, costs.full_macs)
        method.weighting.fit(torch.from_numpy(held.logits), torch.from_numpy(held.labels).long())
        fitted = ", ".join(f"{w:.3f}" for w in method.ensemble_weights())
        log(f"ensemble weights fitted on {held.num_samples} held-out training images: {fitted}")
    weights = method.ensemble_weights()
    records: dict[str, ExitRecord] = {}
    for split in ("val", "test"):
        info = {"split": split, "checkpoint": out.name, "class_names": bundle.class_names, "ensemble_weights": weights}
        records[split] = collect_outputs(model, getattr(bundle, split), costs.cum_macs, costs.full_macs, info=info)
    processes = f" x {env.world_size} processes" if env.active else ""
    cpu = platform.processor() or platform.machine()
    device = f"{cfg.device} ({cpu}, {torch.get_num_threads()} threads{processes})"
    meta = replace(
        meta_after(weights, result.seconds, resumed_from=job.resume, processes=env.world_size, device=device),
        metrics={
            split: SplitMetrics(rec.exit_accuracy().tolist(), rec.ensemble_accuracy(weights).tolist(), rec.num_samples)
            for split, rec in records.items()
        },
        calibration=calibration_meta(fit_temperatures(records["val"]), records["val"]),  # per-exit temperatures
    )
    save_checkpoint(out, model, meta)
    for split, rec in records.items():
        save_evaluation(evaluation_path(out, split), rec)
    log_text = json.dumps({"job": asdict(job), **result.to_dict()}, indent=1)
    atomic_write_bytes(log_path(out), log_text.encode())
    if state_path.exists():
        state_path.unlink()  # the run finished: its final checkpoint supersedes the resumable state
    sidecars = [evaluation_path(out, "val").name, evaluation_path(out, "test").name, log_path(out).name]
    log(f"saved {out} (+ {', '.join(sidecars)})")
    dd.barrier()
    return out


def checkpoint_dataset(meta: CheckpointMeta, dataset: str | None = None, data_dir: str | None = None) -> DataBundle:
    """The dataset a checkpoint was trained on, with the same validation split (or another dataset with the
    same number of classes). Raises ConfigError or DataError with a clear message."""
    ds = meta.dataset
    name = dataset or ds.name
    if name.startswith("folder:"):
        data_dir, name = data_dir or name.split(":", 1)[1], "folder"
    bundle = load_dataset(
        name,
        data_dir,
        ds.val_size if name == ds.name else None,
        ds.val_seed,
        image_size=ds.image_size,
        in_channels=ds.in_channels,
        mean=ds.mean,  # an image folder is normalised as the model was trained (others keep their own)
        std=ds.std,
    )
    classes = meta.model.num_classes
    if len(bundle.class_names) != classes:
        raise ConfigError(f"{name} has {len(bundle.class_names)} classes, the model predicts {classes}.")
    return bundle


def evaluate_checkpoint(
    path: str | Path,
    split: str = "test",
    dataset: str | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
) -> tuple[ExitRecord, Path]:
    """Evaluate a checkpoint on a split of its own dataset (or another one with the same classes) and save the file."""
    model, meta = load_checkpoint(path)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"Split must be train, val or test, got '{split}'.")
    bundle = checkpoint_dataset(meta, dataset, data_dir)
    name = bundle.name
    rec = collect_outputs(
        model,
        getattr(bundle, split),
        meta.cost.cum_macs,
        meta.cost.full_macs,
        info={
            "split": split,
            "checkpoint": Path(path).name,
            "class_names": bundle.class_names,
            "ensemble_weights": meta.training.ensemble_weights,
            "dataset": name,
        },
    )
    target = Path(out) if out else evaluation_path(path, split)
    save_evaluation(target, rec)
    return rec, target
