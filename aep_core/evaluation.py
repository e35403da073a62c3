"""Per-exit outputs of a model on a split, saved as an evaluation file (.npz) so exit policies can be
replayed later without running the network again.

An evaluation file holds: logits (exits, n, classes) float32, confidences (exits, n) float32 or
absent, labels (n,) int64, cum_macs (exits,), full_macs, and a JSON header (split, class names,
ensemble weights, checkpoint name).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from aep_core.checkpoint.format import atomic_write_bytes
from aep_core.data import make_loader
from aep_core.errors import AepError
from aep_core.models import EarlyExitNet


@dataclass
class ExitRecord:
    """All exits' outputs for n samples of one split."""

    logits: np.ndarray  # (exits, n, classes)
    labels: np.ndarray  # (n,)
    cum_macs: np.ndarray  # (exits,) MACs spent by a sample answered at each exit
    full_macs: int  # MACs of the network without exits
    confidences: np.ndarray | None = None  # (exits, n) EENet confidence branch outputs
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_exits(self) -> int:
        return self.logits.shape[0]

    @property
    def num_samples(self) -> int:
        return self.logits.shape[1]

    def probs(self) -> np.ndarray:
        """Softmax of the logits, (exits, n, classes)."""
        z = self.logits - self.logits.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    def exit_accuracy(self) -> np.ndarray:
        """Accuracy of each exit on its own, (exits,)."""
        return (self.logits.argmax(-1) == self.labels[None]).mean(1)

    def ensemble_accuracy(self, weights: list[float] | np.ndarray) -> np.ndarray:
        """Accuracy of the AEP ensemble of exits 0..k for each k, (exits,)."""
        w = np.asarray(weights, dtype=np.float64)[:, None, None]
        cum = np.cumsum(w * self.probs(), axis=0)  # unnormalised: argmax is unaffected by sum(w)
        return (cum.argmax(-1) == self.labels[None]).mean(1)


@torch.no_grad()
def collect_outputs(
    model: EarlyExitNet,
    dataset: Dataset,
    cum_macs: list[int],
    full_macs: int,
    batch_size: int = 500,
    info: dict[str, Any] | None = None,
) -> ExitRecord:
    """Run the model over a dataset once and keep every exit's outputs."""
    model.eval()
    logits, confs, labels = [], [], []
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        out = model(x)
        logits.append(torch.stack(out.logits).numpy())
        if out.confidences is not None:
            confs.append(torch.stack(out.confidences).numpy())
        labels.append(y.numpy())
    if not labels:
        raise AepError("The split is empty: nothing to evaluate.")
    return record_from_batches(logits, confs, np.concatenate(labels), cum_macs, full_macs, info)


def record_from_batches(
    logits: list[np.ndarray],
    confidences: list[np.ndarray],
    labels: np.ndarray | list[int],
    cum_macs: list[int] | np.ndarray,
    full_macs: int,
    info: dict[str, Any] | None = None,
) -> ExitRecord:
    """An evaluation record from per-batch outputs: logits (exits, b, classes) and, for EENets, confidences
    (exits, b) of each batch in order (an empty list: none)."""
    return ExitRecord(
        np.concatenate(logits, 1).astype(np.float32),
        np.asarray(labels, dtype=np.int64),
        np.asarray(cum_macs, dtype=np.int64),
        int(full_macs),
        np.concatenate(confidences, 1).astype(np.float32) if confidences else None,
        dict(info or {}),
    )


def save_evaluation(path: str | Path, rec: ExitRecord) -> None:
    """Write an evaluation file atomically."""
    arrays = {
        "logits": rec.logits,
        "labels": rec.labels,
        "cum_macs": rec.cum_macs,
        "full_macs": np.asarray(rec.full_macs, dtype=np.int64),
        "info": np.frombuffer(json.dumps(rec.info).encode(), dtype=np.uint8),
    }
    if rec.confidences is not None:
        arrays["confidences"] = rec.confidences
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_evaluation(path: str | Path) -> ExitRecord:
    """Read an evaluation file; raises AepError with a clear message if it is missing, empty or malformed."""
    p = Path(path)
    if not p.is_file():
        raise AepError(f"Evaluation file {p} does not exist; create it with `python -m aep_core evaluate CHECKPOINT`.")
    try:
        with np.load(p, allow_pickle=False) as z:
            rec = ExitRecord(
                z["logits"],
                z["labels"],
                z["cum_macs"],
                z["full_macs"].item(),  # an int for MACs; a float for costs measured in milliseconds
                z.get("confidences"),
                json.loads(bytes(z["info"]).decode()) if "info" in z else {},
            )
    except Exception as e:
        raise AepError(f"{p} is not a valid evaluation file: {e}") from None
    if rec.logits.ndim != 3 or rec.num_samples == 0:
        raise AepError(f"{p} holds no samples.")
    if rec.labels.shape != (rec.num_samples,) or rec.cum_macs.shape != (rec.num_exits,):
        raise AepError(f"{p} is inconsistent: its arrays disagree in size.")
    if (
        not np.issubdtype(rec.labels.dtype, np.integer)
        or rec.labels.min() < 0
        or rec.labels.max() >= rec.logits.shape[2]
    ):
        raise AepError(f"{p} is inconsistent: its labels are not class indices below {rec.logits.shape[2]}.")
    if rec.confidences is not None and rec.confidences.shape != rec.logits.shape[:2]:
        raise AepError(f"{p} is inconsistent: its confidences are not one per exit and sample.")
    return rec


def record_disagreement(record: ExitRecord, num_classes: int, cum_macs: list[int]) -> str | None:
    """Why an evaluation record cannot be the outputs of a model with `num_classes` outputs and these per-exit
    costs (None when it can): a record left beside a checkpoint that was replaced or pruned since."""
    if record.num_exits != len(cum_macs):
        return f"it holds {record.num_exits} exits but the model has {len(cum_macs)}"
    if record.logits.shape[2] != num_classes:
        return f"it holds {record.logits.shape[2]} classes but the model predicts {num_classes}"
    if [int(m) for m in record.cum_macs] != [int(m) for m in cum_macs]:
        return "its per-exit costs differ from the model's"
    return None
