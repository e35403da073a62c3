"""Typed checkpoint metadata, as torchvision's `Weights.meta`: what a checkpoint says about its network (the
model spec), its data (class names, normalisation, splits), its cost per exit, how it was trained (method,
settings, ensemble weights), its accuracy per exit, and, when present, its calibration and pruning.

`CheckpointMeta.to_dict()` is what the file stores (plain types only, so `weights_only` loading reads it);
`CheckpointMeta.from_dict(d, version)` reads it back, migrating older layouts, and refuses a malformed one
with one clear message. `model_meta` describes a model built in this process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from aep_core import __version__
from aep_core.cost import CostReport, ExitCost, exit_costs
from aep_core.errors import AepError, CheckpointError
from aep_core.models import EarlyExitNet, ModelSpec

META_VERSION = 2
READABLE_VERSIONS = (1, META_VERSION)


@dataclass
class DatasetMeta:
    """The data a model reads: class names, input shape, normalisation, and how the splits were made."""

    name: str
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    sizes: dict[str, int] = field(default_factory=dict)  # images per split
    val_seed: int = 0  # seed of the validation split carved from the training data
    val_size: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input."""
        return self.in_channels, self.image_size, self.image_size

    @classmethod
    def unnamed(cls, spec: ModelSpec) -> DatasetMeta:
        """The data a model reads when nothing more is known than its spec: numbered classes, no normalisation."""
        return cls(
            "unnamed",
            [str(k) for k in range(spec.num_classes)],
            spec.in_channels,
            spec.image_size,
            [0.0] * spec.in_channels,
            [1.0] * spec.in_channels,
        )


@dataclass
class SplitMetrics:
    """Accuracy of every exit alone and of the AEP ensemble of exits 0..k, on one split."""

    exit_acc: list[float]
    ensemble_acc: list[float] = field(default_factory=list)
    n: int = 0


@dataclass
class TrainingMeta:
    """How the weights were trained: method and its settings, loop configuration, ensemble weights."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)  # the method's own settings (weighting, lam, ...)
    config: dict[str, Any] = field(default_factory=dict)  # the training loop's configuration (epochs, seed, ...)
    ensemble_weights: list[float] = field(default_factory=list)
    init: str | None = None
    limit: int | None = None
    seconds: float | None = None
    weights: str | None = None  # the torchvision backbone's starting weights: a file or torchvision's name
    resumed_from: str | None = None  # the resumable state this run continued
    resume_of: str | None = None  # in a resumable state: the checkpoint file the run will write
    processes: int = 1
    device: str = "cpu"


UNKNOWN_TRAINING = "unknown"  # TrainingMeta.method of a model whose training is not recorded


@dataclass
class CalibrationMeta:
    """Per-exit temperatures and where they were fitted."""

    temperatures: list[float]
    method: str = "temperature scaling (per exit, minimum validation NLL)"
    fitted_on: str = "val"
    samples: int = 0
    created: str = ""


@dataclass
class PruningMeta:
    """Where an AEP-pruned model was cut, and what it was cut from."""

    cut: int
    original_exit_blocks: list[int]
    original_num_blocks: int
    source: str | None = None
    tolerance: float | None = None


def now() -> str:
    """The current UTC time as the metadata stores it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class CheckpointMeta:
    """Everything a checkpoint says besides its weights."""

    model: ModelSpec
    dataset: DatasetMeta
    cost: CostReport
    training: TrainingMeta
    metrics: dict[str, SplitMetrics] = field(default_factory=dict)  # split -> accuracy per exit
    aep_core_version: str = ""
    created: str = ""
    calibration: CalibrationMeta | None = None
    pruning: PruningMeta | None = None

    @property
    def class_names(self) -> list[str]:
        """The classes the model predicts, in output order."""
        return list(self.dataset.class_names)

    @property
    def ensemble_weights(self) -> list[float] | None:
        """The trained AEP ensemble weights, one per exit (None: none stored)."""
        return [float(w) for w in self.training.ensemble_weights] or None

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view stored in the checkpoint file."""
        d: dict[str, Any] = {
            "model": self.model.to_dict(),
            "dataset": asdict(self.dataset),
            "cost": self.cost.to_dict(),
            "training": asdict(self.training),
            "metrics": {split: asdict(m) for split, m in self.metrics.items()},
            "aep_core_version": self.aep_core_version,
            "created": self.created,
        }
        if self.calibration is not None:
            d["calibration"] = asdict(self.calibration)
        if self.pruning is not None:
            d["pruning"] = asdict(self.pruning)
        return d

    @classmethod
    def from_dict(cls, d: Any, version: Any = META_VERSION, name: str = "checkpoint") -> CheckpointMeta:
        """Read stored metadata (migrating a version-1 layout); CheckpointError naming what is wrong otherwise."""
        if version not in READABLE_VERSIONS:
            raise CheckpointError(
                f"{name} has checkpoint version {version}; this aep_core reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}."
            )
        if not isinstance(d, dict):
            raise CheckpointError(f"{name} lacks its metadata.")
        try:
            if version == 1:
                d = migrate_v1(d)
            _check_keys("metadata", d, {f.name for f in fields(cls)}, required=("model", "dataset", "cost", "training"))
            return cls(
                model=_model_spec(d["model"]),
                dataset=_build(DatasetMeta, d["dataset"], "dataset"),
                cost=_cost(d["cost"]),
                training=_build(TrainingMeta, d["training"], "training"),
                metrics={
                    str(k): _build(SplitMetrics, v, f"'{k}' metrics")
                    for k, v in _mapping(d.get("metrics") or {}, "metrics").items()
                },
                aep_core_version=str(d.get("aep_core_version") or ""),
                created=str(d.get("created") or ""),
                calibration=_build(CalibrationMeta, d["calibration"], "calibration") if d.get("calibration") else None,
                pruning=_build(PruningMeta, d["pruning"], "pruning") if d.get("pruning") else None,
            )
        except _Malformed as e:
            raise CheckpointError(f"{name}: its metadata is malformed ({e}).") from None


def model_meta(
    spec: ModelSpec,
    model: EarlyExitNet,
    dataset: DatasetMeta | None = None,
    training: TrainingMeta | None = None,
    cost: CostReport | None = None,
    metrics: dict[str, SplitMetrics] | None = None,
) -> CheckpointMeta:
    """The metadata of `model`, built from `spec`: the data it reads (default: `DatasetMeta.unnamed`), its cost
    per exit (counted now unless given), how it was trained (default: not recorded) and its accuracy per split,
    stamped with this aep_core's version and the current time."""
    dataset = dataset if dataset is not None else DatasetMeta.unnamed(spec)
    return CheckpointMeta(
        spec,
        dataset,
        cost if cost is not None else exit_costs(model, dataset.input_shape),
        training if training is not None else TrainingMeta(UNKNOWN_TRAINING),
        dict(metrics or {}),
        __version__,
        now(),
    )


class _Malformed(ValueError):
    """What is wrong with one entry of stored metadata, as a phrase."""


def _mapping(d: Any, entry: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _Malformed(f"the {entry} entry is not a mapping")
    return d


def _check_keys(entry: str, d: Any, known: set[str], required: tuple[str, ...] | list[str]) -> None:
    d = _mapping(d, entry)
    unknown = sorted(set(d) - known)
    if unknown:
        raise _Malformed(f"the {entry} entry has unknown keys {unknown}")
    missing = [k for k in required if k not in d]
    if missing:
        raise _Malformed(f"the {entry} entry lacks {', '.join(repr(k) for k in missing)}")


def _build(kind: type, d: Any, entry: str) -> Any:
    """A metadata dataclass from a plain dict; unknown or missing keys are malformed metadata."""
    required = [f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    _check_keys(entry, d, {f.name for f in fields(kind)}, required)
    return kind(**d)


def _model_spec(d: Any) -> ModelSpec:
    try:
        return ModelSpec.from_dict(dict(_mapping(d, "model")))
    except AepError as e:
        raise _Malformed(f"the model entry: {str(e).rstrip('.')}") from None


def _cost(d: Any) -> CostReport:
    _check_keys(
        "cost",
        d,
        {"exits", "full_macs", "full_params", "with_exits_params"},
        ("exits", "full_macs", "full_params", "with_exits_params"),
    )
    if not isinstance(d["exits"], list):
        raise _Malformed("the cost entry's exits are not a list")
    try:
        totals = int(d["full_macs"]), int(d["full_params"]), int(d["with_exits_params"])
    except (TypeError, ValueError):
        raise _Malformed("the cost entry's totals are not numbers") from None
    return CostReport([_build(ExitCost, e, f"cost of exit {k}") for k, e in enumerate(d["exits"])], *totals)


def migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """The version-2 layout of version-1 metadata: the method's settings, stored flat in the training entry,
    move under `training.settings`; a pruned model keeps the temperatures of its kept exits only."""
    out = dict(d)
    training = dict(_mapping(d.get("training") or {}, "training"))
    common = {f.name for f in fields(TrainingMeta)} - {"settings"}
    settings = {k: training.pop(k) for k in list(training) if k not in common}
    out["training"] = {**training, "settings": settings}
    calibration, cost = d.get("calibration"), d.get("cost")
    if d.get("pruning") and isinstance(calibration, dict) and isinstance(cost, dict):
        temperatures, exits = calibration.get("temperatures"), cost.get("exits")
        if isinstance(temperatures, list) and isinstance(exits, list) and len(temperatures) > len(exits):
            out["calibration"] = {**calibration, "temperatures": temperatures[: len(exits)]}
    return out
