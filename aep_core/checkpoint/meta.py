"""Typed checkpoint metadata, as torchvision's `Weights.meta`: what a checkpoint says about its network (the
model spec), its data (class names, normalisation, splits), its cost per exit, how it was trained (method,
settings, ensemble weights), its accuracy per exit, and, when present, its calibration and pruning.

`CheckpointMeta.to_dict()` is what the file stores (plain types only, so `weights_only` loading reads it);
`CheckpointMeta.from_dict(d, version)` reads it back, migrating older layouts, and refuses a malformed one
with one clear message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aep_core.cost import CostReport, ExitCost
from aep_core.errors import CheckpointError
from aep_core.models import ModelSpec

META_VERSION = 2

# Keys of the version-1 "training" entry that are not method settings.
_TRAINING_COMMON = ("method", "config", "ensemble_weights", "init", "limit", "seconds", "resumed_from", "processes",
                    "device")


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
    val_seed: int | None = None  # seed of the validation split carved from the training data
    val_size: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input."""
        return self.in_channels, self.image_size, self.image_size


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
    resumed_from: str | None = None
    processes: int = 1
    device: str = "cpu"


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
    def ensemble_weights(self) -> list[float]:
        """The trained AEP ensemble weights, one per exit."""
        return list(self.training.ensemble_weights)

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
    def from_dict(cls, d: Any, version: int = META_VERSION, name: str = "checkpoint") -> CheckpointMeta:
        """Read stored metadata (migrating a version-1 layout); CheckpointError naming what is wrong otherwise."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{name}: its metadata is not a mapping.")
        if version == 1:
            d = migrate_v1(d)
        elif version != META_VERSION:
            raise CheckpointError(f"{name} has checkpoint version {version}; this aep_core reads versions 1 and "
                                  f"{META_VERSION}.")
        try:
            return cls(
                model=ModelSpec.from_dict(dict(d["model"])),
                dataset=_build(DatasetMeta, d["dataset"]),
                cost=CostReport([_build(ExitCost, e) for e in d["cost"]["exits"]], int(d["cost"]["full_macs"]),
                                int(d["cost"]["full_params"]), int(d["cost"]["with_exits_params"])),
                training=_build(TrainingMeta, d["training"]),
                metrics={str(k): _build(SplitMetrics, v) for k, v in (d.get("metrics") or {}).items()},
                aep_core_version=str(d.get("aep_core_version", "")),
                created=str(d.get("created", "")),
                calibration=_build(CalibrationMeta, d["calibration"]) if d.get("calibration") else None,
                pruning=_build(PruningMeta, d["pruning"]) if d.get("pruning") else None,
            )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"{name}: its metadata is malformed ({what}).") from None


def _build(kind: type, d: Any) -> Any:
    """A metadata dataclass from a plain dict; unknown or missing keys are a CheckpointError."""
    if not isinstance(d, dict):
        raise CheckpointError(f"its {kind.__name__} entry is not a mapping")
    names = {f.name for f in fields(kind)}
    unknown = set(d) - names
    if unknown:
        raise CheckpointError(f"its {kind.__name__} entry has unknown keys {sorted(unknown)}")
    return kind(**d)


def migrate_v1(d: dict[str, Any]) -> dict[str, Any]:
    """The version-2 layout of version-1 metadata: the method's settings, stored flat in the training entry,
    move under `training.settings`."""
    out = dict(d)
    training = dict(d.get("training") or {})
    settings = {k: training.pop(k) for k in list(training) if k not in _TRAINING_COMMON}
    out["training"] = {**training, "settings": settings}
    return out
