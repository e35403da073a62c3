"""Checkpoints: weights plus typed metadata in one file, read with weights_only=True, written atomically
(`aep_core.outputs.atomic_write_bytes`). This module is the one reader and the one writer of checkpoint files.

File layout (a plain dict): {"format": FORMAT, "version": VERSION, "meta": CheckpointMeta.to_dict(),
"state_dict": {...}, ["extra": {...}]}. The metadata's model spec is enough to rebuild the network before
loading its weights; metadata that disagrees with the weights (classes, exits, input channels) is refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from aep_core.checkpoint.consistency import check_agreement, check_model_agreement
from aep_core.checkpoint.meta import META_VERSION, CheckpointMeta
from aep_core.errors import CheckpointError, ConfigError
from aep_core.models import EarlyExitNet, build_model
from aep_core.outputs import atomic_write_bytes

FORMAT = "aep-core-checkpoint"
VERSION = META_VERSION  # the version written; older ones are migrated on read


@dataclass
class StoredCheckpoint:
    """What a checkpoint file holds: typed metadata, the weights, and further state (e.g. for resuming)."""

    meta: CheckpointMeta
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


def _serialise(meta: CheckpointMeta, state_dict: dict[str, torch.Tensor], extra: dict[str, Any] | None) -> bytes:
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION, "meta": meta.to_dict(), "state_dict": state_dict}
    if extra:
        payload["extra"] = extra
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def checkpoint_bytes(
    model: EarlyExitNet, meta: CheckpointMeta, extra: dict[str, Any] | None = None, name: str = "checkpoint"
) -> bytes:
    """The checkpoint file of a model and its metadata, as bytes (CheckpointError if they disagree)."""
    check_model_agreement(meta, model, name)
    return _serialise(meta, {k: v.detach().cpu() for k, v in model.state_dict().items()}, extra)


def save_checkpoint(
    path: str | Path, model: EarlyExitNet, meta: CheckpointMeta, extra: dict[str, Any] | None = None
) -> None:
    """Save weights and metadata atomically. `extra` holds further state (e.g. optimiser, for resuming)."""
    atomic_write_bytes(path, checkpoint_bytes(model, meta, extra, str(path)))


def rewrite_meta(path: str | Path, meta: CheckpointMeta) -> None:
    """Replace the metadata of the checkpoint at `path`, keeping its weights and further state (atomically;
    CheckpointError if the new metadata disagrees with the weights)."""
    stored = read_checkpoint(path)
    model_from_checkpoint(replace(stored, meta=meta), str(path))
    atomic_write_bytes(path, _serialise(meta, stored.state_dict, stored.extra))


def _source_name(source: str | Path | bytes) -> str:
    return "uploaded file" if isinstance(source, (bytes, bytearray)) else str(source)


def read_checkpoint(source: str | Path | bytes) -> StoredCheckpoint:
    """The metadata, weights and further state of a checkpoint file (path or raw bytes; untrusted input,
    loaded with weights_only); version-1 metadata is migrated. CheckpointError with a clear message otherwise."""
    name = _source_name(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise CheckpointError(f"Checkpoint {name} does not exist.")
    try:
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        payload = torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for bad files
        text = str(e)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{name} was refused: it contains pickled code or objects, not only weights and plain metadata."
            ) from None
        raise CheckpointError(
            f"{name} is not a readable PyTorch checkpoint: the file is corrupt, truncated or of another kind."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a PyTorch file but not an aep_core checkpoint (no '{FORMAT}' header).")
    meta = CheckpointMeta.from_dict(payload.get("meta"), payload.get("version"), name)
    state_dict, extra = payload.get("state_dict"), payload.get("extra", {})
    if not isinstance(state_dict, dict) or not isinstance(extra, dict):
        raise CheckpointError(f"{name} lacks its weights.")
    spec = meta.model
    check_agreement(meta, spec.num_classes, spec.exit_blocks, spec.in_channels, name)
    return StoredCheckpoint(meta, state_dict, extra)


def model_from_checkpoint(stored: StoredCheckpoint, name: str = "checkpoint") -> EarlyExitNet:
    """Rebuild the model a checkpoint's metadata describes and load its weights (in eval mode)."""
    try:
        model = build_model(replace(stored.meta.model))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its model description is invalid: {e}") from None
    try:
        model.load_state_dict(stored.state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{name}: the weights do not match the model it describes ({first}).") from None
    check_model_agreement(stored.meta, model, name)
    model.eval()
    return model


def load_checkpoint(source: str | Path | bytes) -> tuple[EarlyExitNet, CheckpointMeta]:
    """A model and its metadata from a path or raw bytes (untrusted input: weights_only loading)."""
    stored = read_checkpoint(source)
    return model_from_checkpoint(stored, _source_name(source)), stored.meta
