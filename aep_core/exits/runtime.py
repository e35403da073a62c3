"""Inference that really stops: a sample that exits is no longer computed.

At batch size 1 the remaining segments are simply skipped; in a batch, samples that exit are removed
and the rest continue through the next segment. Decisions use the same `ExitRule` as the replayed
rule (scores from exits 0..k only), so on the same per-exit outputs they agree exactly.

By default every function here runs a copy of the model prepared for inference (BatchNorm folded,
channels-last; `models.inference`), and the network without exits gets the same preparation, so
speed-ups compare like with like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from aep_core.analysis.calibration import check_temperatures, scale_logits
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import ExitRule, RuleResult, StepScorer, get_rule
from aep_core.models import EarlyExitNet
from aep_core.models.inference import as_model_input, prepare_for_inference
from aep_core.threads import cpu_threads


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

    def as_rule_result(
        self, labels: np.ndarray, cum_macs: np.ndarray, full_macs: int, num_classes: int, rule: str = ""
    ) -> RuleResult:
        """The same outcome with the replay's metrics (accuracy, expected MACs, ...)."""
        return RuleResult(
            self.exit_index,
            self.prediction,
            np.asarray(labels),
            np.asarray(cum_macs),
            int(full_macs),
            num_classes,
            rule,
        )


def _check_inputs(model: EarlyExitNet, x: torch.Tensor, batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"Batch size must be >= 1, got {batch_size}.")
    if x.ndim != 4 or len(x) == 0:
        raise ConfigError(
            f"Inputs must be a non-empty batch of images (n, channels, height, width), got shape {tuple(x.shape)}."
        )


class EarlyExitRunner:
    """Runs a model under an exit rule, computing each sample only up to the exit it stops at (on a copy
    prepared for inference unless `optimize` is False)."""

    def __init__(
        self,
        model: EarlyExitNet,
        rule: ExitRule,
        optimize: bool = True,
        temperatures: list[float] | np.ndarray | None = None,
    ) -> None:
        if len(rule.thresholds) != model.num_exits - 1:
            raise ConfigError(f"The rule is for {len(rule.thresholds) + 1} exits; the model has {model.num_exits}.")
        if get_rule(rule.name).needs_confidence and not model.has_confidence:
            raise ConfigError(f"{rule.name} needs a model with confidence branches (trained with --method eenet).")
        self.model = prepare_for_inference(model) if optimize else model.eval()
        self.optimize = optimize
        self.rule = rule
        # Per-exit temperatures (calibrated outputs): exit k's logits are divided by temperatures[k] before
        # the rule sees them, as `calibration.scale_record` does for the replay.
        self.temperatures = None if temperatures is None else check_temperatures(temperatures, model.num_exits)

    def _logits(self, z: torch.Tensor, k: int) -> np.ndarray:
        """Exit k's logits (n, classes) as the rule sees them."""
        a = z.float().cpu().numpy()
        return a if self.temperatures is None else scale_logits(a[None], self.temperatures[k : k + 1])[0]

    def _visit(self, h: torch.Tensor, k: int, scorer: StepScorer) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Run segment k and exit k's head on the samples in h: their features, scores and predictions."""
        h = self.model.forward_segment(h, k)
        z, c = self.model.forward_head(h, k)
        score, pred = scorer.step(self._logits(z, k), None if c is None else c.float().cpu().numpy())
        return h, score, pred

    @torch.inference_mode()
    def run_batch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(b,) exit index and prediction for one batch; exited samples leave the batch."""
        if len(x) == 1:
            return self._run_one(x)
        b = len(x)
        exit_index = np.full(b, -1, dtype=np.int64)
        prediction = np.full(b, -1, dtype=np.int64)
        alive = np.arange(b)  # positions in x of the samples still running
        scorer = self.rule.scorer()
        h = x
        for k in range(self.model.num_exits):
            h, score, pred = self._visit(h, k, scorer)
            stop = self.rule.passes(score, k)
            exit_index[alive[stop]] = k
            prediction[alive[stop]] = pred[stop]
            if stop.all():
                break
            if stop.any():
                keep = ~stop
                alive = alive[keep]
                h = h[torch.from_numpy(keep).to(h.device)]
                scorer.keep(keep)
        return exit_index, prediction

    def _run_one(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """run_batch for a single sample, without the bookkeeping of removing samples from a batch."""
        scorer = self.rule.scorer()
        h = x
        for k in range(self.model.num_exits):
            h, score, pred = self._visit(h, k, scorer)
            if self.rule.passes(score, k)[0]:
                break
        return np.array([k]), pred.astype(np.int64)

    def run(self, x: torch.Tensor, batch_size: int = 1) -> RunResult:
        """Exit index and prediction of every input, processed in batches of `batch_size`, with wall time."""
        _check_inputs(self.model, x, batch_size)
        idx, pred = [], []
        t0 = time.perf_counter()
        x = as_model_input(x, self.optimize)
        for i in range(0, len(x), batch_size):
            a, p = self.run_batch(x[i : i + batch_size])
            idx.append(a)
            pred.append(p)
        seconds = time.perf_counter() - t0
        return RunResult(np.concatenate(idx), np.concatenate(pred), seconds, batch_size)


@torch.inference_mode()
def run_without_exits(
    model: EarlyExitNet, x: torch.Tensor, batch_size: int = 1, optimize: bool = True
) -> tuple[np.ndarray, float]:
    """Predictions of the network without exits (all blocks, final classifier) and the wall time."""
    _check_inputs(model, x, batch_size)
    model = prepare_for_inference(model) if optimize else model.eval()
    preds = []
    t0 = time.perf_counter()
    x = as_model_input(x, optimize)
    for i in range(0, len(x), batch_size):
        preds.append(model.forward_final(x[i : i + batch_size]).argmax(1).cpu().numpy())
    return np.concatenate(preds), time.perf_counter() - t0


@dataclass
class SpeedMeasurement:
    """Throughput of the early-exit runner and of the network without exits on the same inputs."""

    batch_size: int
    samples: int
    without_exits_per_s: float
    early_exit_per_s: float
    exit_index: np.ndarray  # (n,) from the early-exit run
    prediction: np.ndarray  # (n,) from the early-exit run
    prediction_without_exits: np.ndarray  # (n,)

    @property
    def speed_up(self) -> float:
        """Early-exit throughput over the throughput without exits."""
        return self.early_exit_per_s / self.without_exits_per_s


def measure_speedup(
    model: EarlyExitNet,
    rule: ExitRule,
    x: torch.Tensor,
    batch_size: int,
    rounds: int = 2,
    temperatures: list[float] | np.ndarray | None = None,
    threads: int | None = None,
) -> SpeedMeasurement:
    """Best-of-`rounds` throughput of the early-exit runner and of the same weights without exits on inputs
    `x`, at `batch_size`; the two alternate so background load hits both alike. One untimed pass of each
    over all of `x` comes first: the early-exit batches shrink to sizes of their own, and the first pass
    at a new size pays for setting up its kernels. `threads` sets torch's CPU threads for the measurement
    only (None: the current setting)."""
    _check_inputs(model, x, batch_size)
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")
    with cpu_threads(threads):
        return _measure(model, rule, x, batch_size, rounds, temperatures)


def _measure(
    model: EarlyExitNet,
    rule: ExitRule,
    x: torch.Tensor,
    batch_size: int,
    rounds: int,
    temperatures: list[float] | np.ndarray | None,
) -> SpeedMeasurement:
    runner = EarlyExitRunner(model, rule, temperatures=temperatures)
    plain = prepare_for_inference(model)
    x = as_model_input(x)  # once, for both
    run_without_exits(plain, x, batch_size, optimize=False)
    runner.run(x, batch_size)
    full_t, ee_t = [], []
    for _ in range(rounds):
        full_pred, t = run_without_exits(plain, x, batch_size, optimize=False)
        full_t.append(t)
        res = runner.run(x, batch_size)
        ee_t.append(res.seconds)
    return SpeedMeasurement(
        batch_size, len(x), len(x) / min(full_t), len(x) / min(ee_t), res.exit_index, res.prediction, full_pred
    )


@torch.inference_mode()
def record_outputs(
    model: EarlyExitNet,
    x: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    cum_macs: list[int] | np.ndarray,
    full_macs: int,
    batch_size: int = 1,
    info: dict | None = None,
    optimize: bool = True,
) -> ExitRecord:
    """Every exit's outputs for the inputs, computed in batches of `batch_size` (to replay rules on the
    very numbers a runner at that batch size, with the same `optimize`, sees)."""
    _check_inputs(model, x, batch_size)
    model = prepare_for_inference(model) if optimize else model.eval()
    x = as_model_input(x, optimize)
    logits, confs = [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        logits.append(torch.stack(out.logits).float().cpu().numpy())
        if out.confidences is not None:
            confs.append(torch.stack(out.confidences).float().cpu().numpy())
    return ExitRecord(
        np.concatenate(logits, 1),
        np.asarray(labels, dtype=np.int64),
        np.asarray(cum_macs, dtype=np.int64),
        int(full_macs),
        np.concatenate(confs, 1) if confs else None,
        dict(info or {}),
    )
