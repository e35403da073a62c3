"""The checkpoint format: weights plus typed metadata in one file, its one reader and writer, and its sidecar
files."""

from aep_core.checkpoint.format import (
    FORMAT,
    VERSION,
    StoredCheckpoint,
    atomic_write_bytes,
    checkpoint_bytes,
    load_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    rewrite_meta,
    save_checkpoint,
)
from aep_core.checkpoint.meta import (
    CalibrationMeta,
    CheckpointMeta,
    DatasetMeta,
    PruningMeta,
    SplitMetrics,
    TrainingMeta,
    model_meta,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "CalibrationMeta",
    "CheckpointMeta",
    "DatasetMeta",
    "PruningMeta",
    "SplitMetrics",
    "StoredCheckpoint",
    "TrainingMeta",
    "atomic_write_bytes",
    "checkpoint_bytes",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_meta",
    "read_checkpoint",
    "rewrite_meta",
    "save_checkpoint",
]
