"""Calibration of the exits: how far each exit's confidence is from its accuracy, and per-exit
temperature scaling fitted on the validation split.

Metrics of one exit (logits (n, classes), labels (n,)): expected calibration error (ECE) over
equal-width confidence bins, maximum calibration error (MCE), negative log-likelihood (NLL), Brier
score, and the reliability-diagram data (confidence vs accuracy per bin, with counts).

Temperature scaling divides exit k's logits by T_k (T > 1 softens, T < 1 sharpens); the prediction
of every exit is unchanged, only its probabilities move. `scale_record` applies the temperatures to a
whole evaluation record, so every exit policy (the AEP ensemble averages the scaled softmaxes)
replays on calibrated outputs without knowing about calibration. Fitted temperatures are stored in
the checkpoint's metadata (`CheckpointMeta.calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from aep_core.checkpoint import CalibrationMeta, CheckpointMeta, read_checkpoint, rewrite_meta
from aep_core.checkpoint.meta import now
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.errors import CheckpointError, ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation

DEFAULT_BINS = 15
T_MIN, T_MAX = 0.01, 100.0  # temperatures are searched in this range


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not float(n_bins).is_integer() or int(n_bins) < 1:
        raise ConfigError(f"The number of calibration bins must be a whole number >= 1, got {n_bins}.")
    return int(n_bins)


def _check_pair(logits: np.ndarray, labels: np.ndarray) -> None:
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ConfigError(
            f"Calibration needs logits (n, classes) and labels (n,) with n > 0; got {logits.shape} and {labels.shape}."
        )


@dataclass
class ReliabilityBins:
    """Reliability-diagram data: equal-width confidence bins with their counts, mean confidence and accuracy."""

    edges: np.ndarray  # (bins + 1,) from 0 to 1
    count: np.ndarray  # (bins,) samples whose top probability falls in the bin
    confidence: np.ndarray  # (bins,) mean top probability in the bin (nan where empty)
    accuracy: np.ndarray  # (bins,) fraction right in the bin (nan where empty)

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per bin: lo, hi, count, confidence, accuracy (None where empty)."""

        def f(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return [
            {
                "lo": float(self.edges[b]),
                "hi": float(self.edges[b + 1]),
                "count": int(self.count[b]),
                "confidence": f(self.confidence[b]),
                "accuracy": f(self.accuracy[b]),
            }
            for b in range(len(self.count))
        ]


@dataclass
class CalibrationMetrics:
    """Calibration of one exit's probabilities on one split."""

    ece: float  # expected calibration error: sum over bins of (bin share) * |accuracy - confidence|
    mce: float  # maximum calibration error: the largest |accuracy - confidence| over non-empty bins
    nll: float  # mean negative log-likelihood of the true class
    brier: float  # mean over samples of sum over classes of (p_c - [c == label])^2
    accuracy: float
    bins: ReliabilityBins

    def summary(self) -> dict[str, Any]:
        """Plain-type metrics and bins."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "bins"} | {"bins": self.bins.rows()}


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Bin samples by confidence into `n_bins` equal-width bins (lo, hi] (the first also holds 0)."""
    n_bins = _check_bins(n_bins)
    conf = np.asarray(confidence, dtype=np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (n,) bin of each sample
    count = np.bincount(idx, minlength=n_bins)
    s_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    s_acc = np.bincount(idx, weights=np.asarray(correct, dtype=np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityBins(
            np.linspace(0.0, 1.0, n_bins + 1),
            count,
            np.where(count > 0, s_conf / count, np.nan),
            np.where(count > 0, s_acc / count, np.nan),
        )


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> CalibrationMetrics:
    """ECE, MCE, NLL, Brier score, accuracy and reliability bins of one exit (logits (n, classes), labels (n,))."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    _check_pair(logits, labels)
    logp = _log_softmax(logits)  # (n, c)
    p = np.exp(logp)
    n = len(labels)
    pred = p.argmax(-1)
    conf = p[np.arange(n), pred]
    correct = pred == labels
    bins = reliability_bins(conf, correct, n_bins)
    gap = np.abs(bins.accuracy - bins.confidence)  # nan where empty
    filled = bins.count > 0
    onehot = np.zeros_like(p)
    onehot[np.arange(n), labels] = 1.0
    return CalibrationMetrics(
        ece=float((bins.count[filled] / n * gap[filled]).sum()),
        mce=float(gap[filled].max()),
        nll=float(-logp[np.arange(n), labels].mean()),
        brier=float(((p - onehot) ** 2).sum(-1).mean()),
        accuracy=float(correct.mean()),
        bins=bins,
    )


def exit_calibration(rec: ExitRecord, n_bins: int = DEFAULT_BINS) -> list[CalibrationMetrics]:
    """Calibration metrics of every exit of a record, in exit order."""
    _check_bins(n_bins)
    return [calibration_metrics(rec.logits[k], rec.labels, n_bins) for k in range(rec.num_exits)]


# ---- temperature scaling ------------------------------------------------------------------------


def _nll_slope(z: np.ndarray, zy: np.ndarray, beta: float) -> float:
    """d NLL / d beta for logits scaled by beta = 1/T: mean over samples of E_p[z] - z_y (increasing in beta)."""
    s = beta * z
    s -= s.max(-1, keepdims=True)
    e = np.exp(s)
    return float(((e * z).sum(-1) / e.sum(-1) - zy).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on these labels.

    NLL is convex in 1/T, so its slope is increasing: bisection on the slope's sign in log(1/T) finds
    the minimum, clipped to [T_MIN, T_MAX]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    _check_pair(logits, labels)
    z = logits.astype(np.float64)
    zy = z[np.arange(len(labels)), labels]
    lo, hi = math.log(1 / T_MAX), math.log(1 / T_MIN)  # bounds on log beta
    if _nll_slope(z, zy, math.exp(lo)) >= 0:
        return T_MAX
    if _nll_slope(z, zy, math.exp(hi)) <= 0:
        return T_MIN
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _nll_slope(z, zy, math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return float(1.0 / math.exp(0.5 * (lo + hi)))


def fit_temperatures(rec: ExitRecord) -> np.ndarray:
    """One temperature per exit, (exits,), each fitted by minimising that exit's NLL on the record."""
    if rec.num_samples == 0:
        raise ConfigError("The evaluation record holds no samples: no temperature can be fitted.")
    return np.array([fit_temperature(rec.logits[k], rec.labels) for k in range(rec.num_exits)])


def check_temperatures(temperatures: Any, num_exits: int) -> np.ndarray:
    """(exits,) float64 temperatures, one positive finite number per exit; ConfigError otherwise."""
    t = np.asarray(temperatures, dtype=np.float64).ravel()
    if t.size != num_exits:
        raise ConfigError(f"Got {t.size} temperatures for {num_exits} exits: give one per exit.")
    if not np.isfinite(t).all() or (t <= 0).any():
        raise ConfigError(f"Temperatures must be positive numbers, got {t.tolist()}.")
    return t


def scale_logits(logits: np.ndarray, temperatures: Any) -> np.ndarray:
    """Per-exit logits (exits, ..., classes) divided by their exit's temperature, same dtype."""
    t = check_temperatures(temperatures, logits.shape[0])
    return (logits / t.reshape((-1,) + (1,) * (logits.ndim - 1))).astype(logits.dtype)


def scale_record(rec: ExitRecord, temperatures: Any) -> ExitRecord:
    """A new record whose logits of exit k are divided by temperatures[k]; labels, costs and EENet
    confidences are shared, and info records the temperatures used."""
    t = check_temperatures(temperatures, rec.num_exits)
    return replace(rec, logits=scale_logits(rec.logits, t), info={**rec.info, "temperatures": t.tolist()})


# ---- temperatures in a checkpoint ---------------------------------------------------------------


def stored_temperatures(meta: CheckpointMeta) -> list[float] | None:
    """The per-exit temperatures stored in a checkpoint's metadata, or None if it has none.
    Raises CheckpointError if they are there but malformed."""
    if meta.calibration is None:
        return None
    try:
        return check_temperatures(meta.calibration.temperatures, len(meta.cost.exits)).tolist()
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"The checkpoint's stored calibration is malformed ({e}); run "
            "`python -m aep_core calibrate CHECKPOINT` again."
        ) from None


def calibration_meta(temperatures: Any, val: ExitRecord) -> CalibrationMeta:
    """The metadata entry describing temperatures fitted on a validation record."""
    return CalibrationMeta(
        [float(t) for t in temperatures], fitted_on=val.info.get("split", "val"), samples=val.num_samples, created=now()
    )


def calibrate_checkpoint(path: str | Path, val: ExitRecord | None = None) -> list[float]:
    """Fit one temperature per exit on the checkpoint's validation evaluation file (or `val`) and store
    them in its metadata; weights and all other metadata are kept. Returns the temperatures."""
    meta = read_checkpoint(path).meta
    if val is None:
        vpath = evaluation_path(path, "val")
        if not vpath.is_file():
            raise ConfigError(
                f"{path} has no validation evaluation file ({vpath.name}); temperatures are fitted on "
                f"the validation split. Create it with `python -m aep_core evaluate {path} --split val`."
            )
        val = load_evaluation(vpath)
    exits = len(meta.cost.exits)
    if val.num_exits != exits:
        raise ConfigError(f"The validation outputs have {val.num_exits} exits; the checkpoint has {exits}.")
    temps = fit_temperatures(val)
    rewrite_meta(path, replace(meta, calibration=calibration_meta(temps, val)))
    return temps.tolist()


@dataclass
class TemperatureSource:
    """A model's per-exit temperatures (None: none to be had) and a sentence saying where they come from."""

    temperatures: list[float] | None
    description: str


def resolve_temperatures(
    meta: CheckpointMeta, val: ExitRecord | None, checkpoint: str | Path | None = None
) -> TemperatureSource:
    """The temperatures a model's outputs are scaled with: the ones stored in its checkpoint, else fitted now
    on its validation record, else none; with a sentence saying which (naming `checkpoint` in the command
    that stores them). Raises CheckpointError if stored ones are malformed."""
    stored = stored_temperatures(meta)
    if stored is not None:
        return TemperatureSource(stored, "fitted on the validation split and stored in the checkpoint")
    if val is None:
        return TemperatureSource(None, "no stored temperatures and no validation outputs to fit them on")
    fitted = fit_temperatures(val).tolist()
    command = f"`python -m aep_core calibrate {checkpoint or 'CHECKPOINT'}`"
    return TemperatureSource(
        fitted, f"fitted now on the validation split (the checkpoint stores none; {command} stores them)"
    )
