"""Cascades: separate networks run one after another, as one early-exit model.

A cascade of N member networks is an EarlyExitNet whose backbone (`CascadeBackbone`) has an identity stem and N
identity blocks, so the features a segment hands on are the input image itself, and whose exit k is member k's
whole network without its early exits (its final exit). Exit k's cost is then member k's MACs and reaching it
costs members 0..k, which is what a cascade pays; the runtimes stop for real (member k+1 never runs on an input
member k answered); each segment exports to ONNX on its own; pruning after exit k keeps members 0..k; and exit
rules, certified thresholds, calibration and deployment treat it as any other early-exit model. The network
without exits, the reference a speed-up or a MACs budget is measured against, is the last member.

Members are any models of this package, each described in the cascade's config by the model spec of its network
without early exits. `make_cascade` builds a cascade from member checkpoints, with its evaluation files stacked
from the members' (each member's final exit) or, when a member has none, computed by evaluating the cascade.
Members are not trained together, so the ensemble weights stored are uniform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aep_core.analysis.calibration import calibration_meta, fit_temperatures
from aep_core.checkpoint import CheckpointMeta, DatasetMeta, SplitMetrics, TrainingMeta, model_meta, save_checkpoint
from aep_core.checkpoint.format import load_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cost import CostReport, exit_costs
from aep_core.errors import AepError, ConfigError
from aep_core.evaluation import ExitRecord, collect_outputs, load_evaluation, record_disagreement, save_evaluation
from aep_core.models.backbones import Backbone
from aep_core.models.early_exit import EarlyExitNet
from aep_core.models.registry import ModelSpec, build_model

CASCADE = "cascade"  # the backbone's registered name, and the training method recorded for a cascade
SPLITS = ("val", "test")
SHARED = ("in_channels", "num_classes", "image_size")  # what every member must agree on with the cascade
# The default cascade: the quarter-width compact CNN, then the compact CNN (the backbones of the shipped
# static_w025 and baseline).
DEFAULT_MEMBERS: list[dict[str, Any]] = [
    {"backbone": "compact_cnn", "backbone_config": {"widths": [8, 16, 32]}, "placement": []},
    {"backbone": "compact_cnn", "placement": []},
]


class CascadeMember(nn.Module):
    """A member network run whole, without its early exits: image (b, c, h, w) -> its final exit's logits
    (b, classes)."""

    def __init__(self, net: EarlyExitNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_final(x)


def member_descriptions(backbone_config: dict[str, Any]) -> list[str]:
    """Each member network of a cascade's backbone config in words: its backbone and that backbone's settings."""
    return [
        f"{m.get('backbone', '?')} {m.get('backbone_config') or ''}".strip() for m in backbone_config.get("members", [])
    ]


def network_spec(spec: ModelSpec) -> ModelSpec:
    """`spec` without its early exits: the same network, answering at its final exit only."""
    last = [spec.exit_blocks[-1]] if spec.exit_blocks else None
    return replace(spec, placement=[], num_early_exits=None, exit_blocks=last)


def _member_settings(member: Any, k: int) -> dict[str, Any]:
    if isinstance(member, ModelSpec):
        return member.to_dict()
    if not isinstance(member, dict):
        raise ConfigError(f"Cascade member {k} is not a model description (a mapping of model settings).")
    return dict(member)


class CascadeBackbone(Backbone):
    """The backbone of a cascade: an identity stem and one identity block per member (block k hands the image to
    exit k, member k's network, built by `exit_classifiers`). `members` are the members' model specs, as
    plain dicts; a member that leaves out its input channels, classes or input size takes the cascade's."""

    def __init__(self, members: Sequence[dict[str, Any] | ModelSpec] | None, in_channels: int = 1) -> None:
        super().__init__()
        members = DEFAULT_MEMBERS if members is None else members
        if not isinstance(members, (list, tuple)) or len(members) < 2:
            raise ConfigError("A cascade needs at least two member networks ('members': a list of model specs).")
        self.members = [_member_settings(m, k) for k, m in enumerate(members)]
        self.in_channels = in_channels
        for key in SHARED:
            _agreed(self.members, key, in_channels if key == "in_channels" else None)
        self.stem = nn.Identity()
        self.blocks = nn.ModuleList(nn.Identity() for _ in self.members)
        self.block_channels = [in_channels] * len(self.members)  # every block hands on the image
        self.block_stage = list(range(len(self.members)))  # one stage per member: exits follow every block

    def member_spec(self, k: int, spec: ModelSpec) -> ModelSpec:
        """Member k's network without early exits, as a cascade built from `spec` runs it."""
        settings = dict(self.members[k])
        for key in SHARED:
            settings[key] = _agreed([settings], key, getattr(spec, key), first=k)
        return network_spec(ModelSpec.from_dict(settings))

    def exit_classifiers(self, spec: ModelSpec) -> list[nn.Module]:
        """The classifier of each exit of the cascade `spec` describes: member k's network at exit k (the members
        after its last exit, cut away by pruning, are not built)."""
        return [CascadeMember(build_model(self.member_spec(b, spec))) for b in spec.exit_blocks]


def _agreed(members: list[dict[str, Any]], key: str, value: Any = None, first: int = 0) -> Any:
    """The value of `key` every member that states it agrees on (and `value`, when given); ConfigError naming
    the first member that differs."""
    for k, m in enumerate(members, start=first):
        if key not in m or m[key] is None:
            continue
        if value is None:
            value = m[key]
        elif m[key] != value:
            what = {"in_channels": "input channels", "num_classes": "classes", "image_size": "input size"}[key]
            raise ConfigError(
                f"Cascade member {k} has {m[key]} {what} where the cascade has {value}: every member must read "
                "the same inputs and predict the same classes."
            )
    return value


# ---- building a cascade from networks ----------------------------------------------------------------


def network_without_exits(model: EarlyExitNet, spec: ModelSpec) -> tuple[EarlyExitNet, ModelSpec]:
    """A model's network without its early exits (a copy of its backbone and final exit, in eval mode), and the
    spec that rebuilds it."""
    net_spec = network_spec(replace(spec, exit_blocks=list(model.exit_blocks), num_blocks=len(model.backbone.blocks)))
    net = build_model(net_spec)
    net.backbone.load_state_dict(model.backbone.state_dict())
    net.heads[0].load_state_dict(model.heads[-1].state_dict())
    return net.eval(), net_spec


def cascade_spec(member_specs: Sequence[ModelSpec]) -> ModelSpec:
    """The spec of a cascade of networks described by `member_specs` (small first), every member at its own
    exit (building it refuses members that read other inputs or predict other classes)."""
    first = member_specs[0]
    config = {"members": [network_spec(s).to_dict() for s in member_specs]}
    return ModelSpec(
        backbone=CASCADE,
        backbone_config=config,
        in_channels=first.in_channels,
        image_size=first.image_size,
        num_classes=first.num_classes,
        head="aep",
        placement="blocks",
    )


def build_cascade(members: Sequence[tuple[EarlyExitNet, ModelSpec]]) -> tuple[EarlyExitNet, ModelSpec]:
    """The cascade of trained models (small first; each runs without its early exits) with their weights, in
    eval mode, and its spec."""
    if len(members) < 2:
        raise ConfigError("A cascade needs at least two member networks.")
    nets = [network_without_exits(model, spec) for model, spec in members]
    spec = cascade_spec([s for _, s in nets])
    cascade = build_model(spec)
    for head, (net, _) in zip(cascade.heads, nets, strict=True):
        head.classifier.net.load_state_dict(net.state_dict())
    return cascade.eval(), spec


# ---- a cascade checkpoint from member checkpoints --------------------------------------------------


def _shared_data(metas: list[CheckpointMeta], names: list[str]) -> DatasetMeta:
    """The data every member reads (its sizes: of the validation and test splits only); ConfigError naming the
    first difference."""
    first = metas[0].dataset
    compared = [f.name for f in fields(DatasetMeta) if f.name != "sizes"]
    for meta, name in zip(metas[1:], names[1:], strict=True):
        d = meta.dataset
        differ = [f for f in compared if getattr(d, f) != getattr(first, f)]
        differ += [
            f"{s} size"
            for s in SPLITS
            if None not in (d.sizes.get(s), first.sizes.get(s)) and d.sizes[s] != first.sizes[s]
        ]
        if differ:
            what = "classes" if "class_names" in differ else ", ".join(differ)
            raise ConfigError(
                f"{name} and {names[0]} read different data ({what} differ): a cascade's members must share "
                "their data, classes and normalisation."
            )
    return replace(first, sizes={s: first.sizes[s] for s in SPLITS if s in first.sizes})


def _member_record(path: Path, model: EarlyExitNet, meta: CheckpointMeta, split: str) -> ExitRecord | None:
    """A member's evaluation record on `split`, None when it has none that matches it."""
    try:
        rec = load_evaluation(evaluation_path(path, split))
    except AepError:
        return None
    return rec if record_disagreement(rec, model.num_classes, meta.cost.cum_macs) is None else None


def stacked_record(
    records: list[ExitRecord], names: list[str], cost: CostReport, info: dict[str, Any] | None = None
) -> ExitRecord:
    """The cascade's record from its members' records on one split: exit k's logits are member k's final exit's,
    the costs the cascade's; ConfigError unless every record holds the same samples (equal labels)."""
    first = records[0]
    for rec, name in zip(records[1:], names[1:], strict=True):
        if rec.num_samples != first.num_samples or not np.array_equal(rec.labels, first.labels):
            split = (info or {}).get("split", "")
            raise ConfigError(
                f"The members' {split} evaluation files are not on the same samples in the same order: "
                f"{names[0]} holds {first.num_samples:,} and {name} {rec.num_samples:,}, and their labels do not "
                "match. Evaluate every member on the same data (`python -m aep_core evaluate CHECKPOINT`)."
            )
    logits = np.stack([rec.logits[-1] for rec in records])  # (members, n, classes)
    cum_macs = np.asarray(cost.cum_macs, dtype=np.int64)
    return ExitRecord(logits, first.labels, cum_macs, cost.full_macs, None, dict(info or {}))


def _uniform(n: int) -> list[float]:
    return [1.0 / n] * n


def _record_info(meta: CheckpointMeta, split: str, checkpoint: str) -> dict[str, Any]:
    return {
        "split": split,
        "checkpoint": checkpoint,
        "class_names": meta.class_names,
        "ensemble_weights": list(meta.training.ensemble_weights),
    }


def _members_record(
    paths: list[Path], loaded: list[tuple[EarlyExitNet, CheckpointMeta]], meta: CheckpointMeta, split: str, out: str
) -> ExitRecord | None:
    """The cascade's record on `split` stacked from its members' evaluation files; None when a member has none."""
    found = [_member_record(p, m, mt, split) for p, (m, mt) in zip(paths, loaded, strict=True)]
    if any(r is None for r in found):
        return None
    names = [p.name for p in paths]
    return stacked_record(found, names, meta.cost, {**_record_info(meta, split, out), "members": names})


def _evaluated_records(model: EarlyExitNet, meta: CheckpointMeta, splits: list[str], out: str) -> dict[str, ExitRecord]:
    """The cascade's records on `splits`, computed on its dataset."""
    from aep_core.training.job import checkpoint_dataset

    bundle = checkpoint_dataset(meta)
    cost = meta.cost
    return {
        split: collect_outputs(
            model,
            getattr(bundle, split),
            cost.cum_macs,
            cost.full_macs,
            info={**_record_info(meta, split, out), "dataset": bundle.name},
        )
        for split in splits
    }


def _with_results(meta: CheckpointMeta, val: ExitRecord, test: ExitRecord) -> CheckpointMeta:
    """The metadata with the accuracy per exit on both splits and temperatures fitted on validation."""
    weights = list(meta.training.ensemble_weights)
    metrics = {split: _split_metrics(rec, weights) for split, rec in (("val", val), ("test", test))}
    return replace(meta, metrics=metrics, calibration=calibration_meta(fit_temperatures(val), val))


def _split_metrics(rec: ExitRecord, weights: list[float]) -> SplitMetrics:
    return SplitMetrics(rec.exit_accuracy().tolist(), rec.ensemble_accuracy(weights).tolist(), rec.num_samples)


def make_cascade(
    member_paths: Sequence[str | Path], out: str | Path, log: Callable[[str], None] = lambda _msg: None
) -> tuple[Path, CheckpointMeta]:
    """Write the checkpoint of the cascade of the member checkpoints (small first) to `out`, with its validation
    and test evaluation files beside it: stacked from the members' own, or computed by evaluating the cascade on
    its dataset where a member has none. Returns the path and the metadata written."""
    paths, out = [Path(p) for p in member_paths], Path(out)
    if len(paths) < 2:
        raise ConfigError("A cascade needs at least two member checkpoints, small first.")
    if any(out.resolve() == p.resolve() for p in paths):
        raise ConfigError(f"{out} is one of the members: write the cascade to another file.")
    loaded = [load_checkpoint(p) for p in paths]
    dataset = _shared_data([meta for _, meta in loaded], [p.name for p in paths])
    model, spec = build_cascade([(m, meta.model) for m, meta in loaded])
    epochs = [meta.training.config.get("epochs") for _, meta in loaded]
    settings = {"members": [p.name for p in paths], "member_epochs": epochs}
    training = TrainingMeta(CASCADE, settings, ensemble_weights=_uniform(len(paths)))
    meta = model_meta(spec, model, dataset, training, exit_costs(model, dataset.input_shape))
    records = {split: _members_record(paths, loaded, meta, split, out.name) for split in SPLITS}
    missing = [split for split, rec in records.items() if rec is None]
    if missing:
        log(f"a member has no {' or '.join(missing)} evaluation file: evaluating the cascade on its dataset")
        records.update(_evaluated_records(model, meta, missing, out.name))
    meta = _with_results(meta, records["val"], records["test"])
    save_checkpoint(out, model, meta)
    for split, rec in records.items():
        save_evaluation(evaluation_path(out, split), rec)
    return out, meta
