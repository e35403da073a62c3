"""Checkpoints: weights plus metadata in one file, loaded with weights_only=True, written atomically.

File layout (a plain dict): {"format": FORMAT, "version": VERSION, "meta": {...}, "state_dict": {...}}.
meta["model"] is a ModelSpec dict, enough to rebuild the network before loading its weights.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from aep_core.errors import CheckpointError, ConfigError
from aep_core.models import EarlyExitNet, ModelSpec, build_model

FORMAT = "aep-core-checkpoint"
VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, model: EarlyExitNet, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Save weights and metadata atomically. `extra` holds further state (e.g. optimiser, for resuming)."""
    payload = {"format": FORMAT, "version": VERSION, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if extra:
        payload["extra"] = extra
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises CheckpointError with a clear message otherwise."""
    name = "uploaded file" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise CheckpointError(f"Checkpoint {name} does not exist.")
    try:
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        payload = torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        text = str(e)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(f"{name} was refused: it contains pickled code or objects, not only weights and plain metadata.") from None
        raise CheckpointError(f"{name} is not a readable PyTorch checkpoint: the file is corrupt, truncated or of another kind.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a PyTorch file but not an aep_core checkpoint (no '{FORMAT}' header).")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{name} has checkpoint version {payload.get('version')}; this aep_core reads version {VERSION}.")
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{name} lacks its metadata or weights.")
    return payload


def model_from_payload(payload: dict[str, Any], name: str = "checkpoint") -> EarlyExitNet:
    """Rebuild the model described in a checkpoint's metadata and load its weights."""
    try:
        spec = ModelSpec.from_dict(dict(payload["meta"]["model"]))
        model = build_model(spec)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its model description is invalid: {e}") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{name}: the weights do not match the model it describes ({first}).") from None
    model.eval()
    return model


def load_checkpoint(source: str | Path | bytes) -> tuple[EarlyExitNet, dict[str, Any]]:
    """Load a model and its metadata from a path or raw bytes (untrusted input: weights_only loading)."""
    payload = read_checkpoint(source)
    name = "uploaded file" if isinstance(source, (bytes, bytearray)) else str(source)
    return model_from_payload(payload, name), payload["meta"]
