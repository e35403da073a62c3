"""Inference that really stops: a sample that exits is no longer computed.

At batch size 1 the remaining segments are simply skipped; in a batch, samples that exit are removed
and the rest continue through the next segment. Decisions use the same `ExitRule` as the replayed
policy (scores from exits 0..k only), so on the same per-exit outputs they agree exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .evaluation import ExitRecord
from .models import EarlyExitNet
from .policies import ExitRule, PolicyResult


@dataclass
class RunResult:
    """Where each sample stopped and what it predicted, and how long the whole run took."""

    exit_index: np.ndarray  # (n,) int
    prediction: np.ndarray  # (n,) int
    seconds: float
    batch_size: int

    @property
    def samples_per_s(self) -> float:
        """Throughput of the run."""
        return len(self.exit_index) / self.seconds if self.seconds > 0 else float("inf")

    def as_policy_result(self, labels: np.ndarray, cum_macs: np.ndarray, full_macs: int, num_classes: int,
                         policy: str = "") -> PolicyResult:
        """The same outcome with the replay's metrics (accuracy, expected MACs, ...)."""
        return PolicyResult(self.exit_index, self.prediction, np.asarray(labels), np.asarray(cum_macs), int(full_macs),
                            num_classes, policy)


def _check_inputs(model: EarlyExitNet, x: torch.Tensor, batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"Batch size must be >= 1, got {batch_size}.")
    if x.ndim != 4 or len(x) == 0:
        raise ConfigError(f"Inputs must be a non-empty batch of images (n, channels, height, width), got shape {tuple(x.shape)}.")


class EarlyExitRunner:
    """Runs a model under an exit rule, computing each sample only up to the exit it stops at."""

    def __init__(self, model: EarlyExitNet, rule: ExitRule) -> None:
        if len(rule.thresholds) != model.num_exits - 1:
            raise ConfigError(f"The rule is for {len(rule.thresholds) + 1} exits; the model has {model.num_exits}.")
        if rule.name == "eenet_confidence" and not model.has_confidence:
            raise ConfigError("eenet_confidence needs a model with confidence branches (trained with --method eenet).")
        self.model = model.eval()
        self.rule = rule

    @torch.inference_mode()
    def run_batch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(b,) exit index and prediction for one batch; exited samples leave the batch."""
        b = len(x)
        exit_index = np.full(b, -1, dtype=np.int64)
        prediction = np.full(b, -1, dtype=np.int64)
        alive = np.arange(b)  # positions in x of the samples still running
        logits: list[np.ndarray] = []  # per visited exit: (len(alive), classes)
        confs: list[np.ndarray] = []
        h = x
        for k in range(self.model.num_exits):
            h = self.model.forward_segment(h, k)
            z, c = self.model.forward_head(h, k)
            if self.rule.local:  # only this exit's outputs matter: keep no history
                logits, confs = [], []
            logits.append(z.float().cpu().numpy())
            if c is not None:
                confs.append(c.float().cpu().numpy())
            score, pred = self.rule.scores(np.stack(logits), np.stack(confs) if confs else None)  # (visited, alive)
            stop = self.rule.passes(score[-1], k)
            exit_index[alive[stop]] = k
            prediction[alive[stop]] = pred[-1, stop]
            if stop.all():
                break
            if stop.any():
                keep = ~stop
                alive = alive[keep]
                h = h[torch.from_numpy(keep).to(h.device)]
                logits = [a[keep] for a in logits]
                confs = [a[keep] for a in confs]
        return exit_index, prediction

    def run(self, x: torch.Tensor, batch_size: int = 1) -> RunResult:
        """Exit index and prediction of every input, processed in batches of `batch_size`, with wall time."""
        _check_inputs(self.model, x, batch_size)
        idx, pred = [], []
        t0 = time.perf_counter()
        for i in range(0, len(x), batch_size):
            a, p = self.run_batch(x[i:i + batch_size])
            idx.append(a)
            pred.append(p)
        seconds = time.perf_counter() - t0
        return RunResult(np.concatenate(idx), np.concatenate(pred), seconds, batch_size)


@torch.inference_mode()
def run_without_exits(model: EarlyExitNet, x: torch.Tensor, batch_size: int = 1) -> tuple[np.ndarray, float]:
    """Predictions of the network without exits (all blocks, final classifier) and the wall time."""
    _check_inputs(model, x, batch_size)
    model.eval()
    preds = []
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        preds.append(model.forward_final(x[i:i + batch_size]).argmax(1).cpu().numpy())
    return np.concatenate(preds), time.perf_counter() - t0


@torch.inference_mode()
def record_outputs(model: EarlyExitNet, x: torch.Tensor, labels: np.ndarray | torch.Tensor, cum_macs: list[int] | np.ndarray,
                   full_macs: int, batch_size: int = 1, info: dict | None = None) -> ExitRecord:
    """Every exit's outputs for the inputs, computed in batches of `batch_size` (to replay policies on the
    very numbers a runner at that batch size sees)."""
    _check_inputs(model, x, batch_size)
    model.eval()
    logits, confs = [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size])
        logits.append(torch.stack(out.logits).float().cpu().numpy())
        if out.confidences is not None:
            confs.append(torch.stack(out.confidences).float().cpu().numpy())
    return ExitRecord(np.concatenate(logits, 1), np.asarray(labels, dtype=np.int64), np.asarray(cum_macs, dtype=np.int64),
                      int(full_macs), np.concatenate(confs, 1) if confs else None, dict(info or {}))
