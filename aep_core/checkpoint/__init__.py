"""The checkpoint format: weights plus typed metadata in one file, its one writer and its sidecar files."""

from aep_core.checkpoint.format import (
    FORMAT,
    VERSION,
    atomic_write_bytes,
    load_checkpoint,
    model_from_payload,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "atomic_write_bytes",
    "load_checkpoint",
    "model_from_payload",
    "read_checkpoint",
    "save_checkpoint",
]
