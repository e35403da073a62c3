"""How long a training run takes and how accurate it gets, from measurement only: earlier runs of the same
settings recorded in a small JSON log in the output folder, or, when there is none, a few training batches of
the run's own configuration timed on this machine just before it starts. Every estimate says what it is based on.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from aep_core.checkpoint import atomic_write_bytes, read_checkpoint
from aep_core.cost import exit_costs
from aep_core.data import hold_out, load_dataset
from aep_core.models.torchvision_backbones import is_weights_name
from aep_core.training.job import TrainJob, build_for_job, ensemble_fit_size
from aep_core.training.loop import evaluate_exits, train
from aep_core.training.methods import build_method

RUN_LOG_NAME = "training_runs.json"
MAX_LOGGED_RUNS = 500
_log_lock = threading.Lock()


def run_settings(job: TrainJob) -> dict[str, Any]:
    """The settings of a job that decide its duration and accuracy (everything but where it writes); a weights file
    and an image folder count by their content, not by where they lie (each upload gets a folder of its own)."""
    settings = asdict(job)
    for key in ("out", "resume"):
        settings.pop(key)
    for key in ("progress", "save_every"):
        settings["train"].pop(key)
    settings["weights"] = weights_identity(job.weights)
    if job.dataset == "folder" and job.data_dir:
        settings["data_dir"] = folder_identity(job.data_dir)
    return json.loads(json.dumps(settings, sort_keys=True))  # tuples become lists, as after a JSON round trip


def weights_identity(weights: str | None) -> str | None:
    """Starting weights as runs are compared by: torchvision's weights name as it is, a weights file as the sha256
    of its bytes (its path when it cannot be read), None for none."""
    if not weights or is_weights_name(weights):
        return weights
    path = Path(weights)
    try:
        info = path.stat()
        return f"sha256:{_file_digest(str(path.resolve()), info.st_size, info.st_mtime_ns)}"
    except OSError:
        return weights


def folder_identity(folder: str) -> str:
    """An image folder as runs are compared by: the sha256 of its files' relative paths and sizes (its path when it
    cannot be read)."""
    root = Path(folder)
    try:
        return f"files-sha256:{_folder_digest(str(root.resolve()), root.stat().st_mtime_ns)}"
    except OSError:
        return folder


@functools.lru_cache(maxsize=16)
def _folder_digest(root: str, mtime_ns: int) -> str:
    """The sha256 of every file's path below `root` and its size, cached per folder and modification time."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """The sha256 of a file, cached per path, size and modification time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_log_path(folder: str | Path) -> Path:
    """The JSON log of finished runs in an output folder."""
    return Path(folder) / RUN_LOG_NAME


def read_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run recorded in the folder's log, oldest first ([] if there is no readable log)."""
    try:
        runs = json.loads(run_log_path(folder).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def record_run(folder: str | Path, job: TrainJob, seconds: float, checkpoint: str | Path) -> dict[str, Any]:
    """Add a finished run to the folder's log: its settings, wall-clock seconds and the per-exit validation
    accuracy stored in its checkpoint. Returns the entry."""
    meta = read_checkpoint(checkpoint).meta
    val = meta.metrics.get("val")
    entry = {
        "name": Path(checkpoint).stem,
        "settings": run_settings(job),
        "seconds": round(float(seconds), 2),
        "val_exit_acc": list(val.exit_acc) if val is not None else [],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with _log_lock:
        runs = [*read_runs(folder), entry][-MAX_LOGGED_RUNS:]
        atomic_write_bytes(run_log_path(folder), json.dumps(runs, indent=1).encode())
    return entry


def earlier_runs(folder: str | Path, job: TrainJob) -> list[dict[str, Any]]:
    """The logged runs with exactly this job's settings."""
    settings = run_settings(job)
    return [r for r in read_runs(folder) if r.get("settings") == settings]


@dataclass(frozen=True)
class StepTiming:
    """Measured costs of a job's configuration on this machine, and the run's size."""

    setup_seconds: float  # loading the data, building the model, counting its cost
    step_seconds: float  # one training batch: forward, backward, optimiser step
    image_seconds: float  # one image through the network without gradients (evaluation)
    batches_timed: int
    steps_per_epoch: int
    epochs: int
    eval_images: int  # validation after each epoch, then validation, test and held-out images at the end

    @property
    def seconds(self) -> float:
        """The whole run's estimated duration."""
        train_s = self.epochs * self.steps_per_epoch * self.step_seconds
        return self.setup_seconds + train_s + self.eval_images * self.image_seconds


def time_steps(job: TrainJob, batches: int = 2) -> StepTiming:
    """Time `batches` training batches (after one warm-up batch) and an evaluation pass of the job's own
    configuration, on a throw-away copy of its model."""
    t0 = time.perf_counter()
    bundle = load_dataset(
        job.dataset, job.data_dir, job.val_size, job.split_seed, job.limit, job.image_size, job.in_channels
    )
    torch.manual_seed(job.train.seed)
    model, _ = build_for_job(job, bundle)
    costs = exit_costs(model, (bundle.in_channels, bundle.image_size, bundle.image_size))
    method = build_method(job.method, model, [e.macs_fraction for e in costs.exits], job.train.epochs)
    held = ensemble_fit_size(len(bundle.train)) if method.fits_ensemble_weights else 0
    setup_seconds = time.perf_counter() - t0
    batch_size = job.train.batch_size
    _, sample = hold_out(bundle.train, (batches + 1) * batch_size, job.split_seed)
    _, one_image = hold_out(bundle.val, 1, job.split_seed)
    stamps: list[float] = []
    start = time.perf_counter()
    cfg = replace(job.train, epochs=1, progress=False, save_every=0)
    train(model, method, sample, one_image, cfg, on_batch=lambda *_: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]  # the first batch warms up and is left out
    step_seconds = statistics.median(gaps) if gaps else stamps[0] - start
    _, eval_sample = hold_out(bundle.val, 128, job.split_seed + 1)
    t1 = time.perf_counter()
    evaluate_exits(model, eval_sample, method.ensemble_weights())
    image_seconds = (time.perf_counter() - t1) / max(len(eval_sample), 1)
    n_val, n_test = len(bundle.val), len(bundle.test)
    return StepTiming(
        setup_seconds,
        step_seconds,
        image_seconds,
        max(len(gaps), 1),
        math.ceil((len(bundle.train) - held) / batch_size),
        job.train.epochs,
        job.train.epochs * n_val + n_val + n_test + held,
    )


@dataclass(frozen=True)
class RunEstimate:
    """Expected duration and final-exit validation accuracy of a run, each with what it is based on
    (None when there is nothing to base it on)."""

    seconds: float | None
    seconds_basis: str
    accuracy: float | None
    accuracy_basis: str

    def time_text(self) -> str:
        """The duration and its basis, in one sentence."""
        if self.seconds is None:
            return f"Time: {self.seconds_basis}."
        return f"Time: about {format_seconds(self.seconds)} ({self.seconds_basis})."

    def accuracy_text(self) -> str:
        """The accuracy and its basis, in one sentence."""
        if self.accuracy is None:
            return f"Accuracy: {self.accuracy_basis}."
        return f"Accuracy: about {100 * self.accuracy:.1f}% at the final exit ({self.accuracy_basis})."


def format_seconds(seconds: float) -> str:
    """Seconds as people read them: '13 s', '4 min 05 s', '2 h 10 min'."""
    s = round(seconds)
    if s < 120:
        return f"{max(s, 1)} s"
    if s < 7200:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _spread(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return "" if fmt.format(low) == fmt.format(high) else f", {fmt.format(low)} to {fmt.format(high)}"


def estimate_from_runs(runs: list[dict[str, Any]]) -> RunEstimate | None:
    """The median duration and final-exit validation accuracy of earlier runs of the same settings (None if
    there are none)."""
    seconds = [float(r["seconds"]) for r in runs if isinstance(r.get("seconds"), (int, float))]
    accuracy = [float(r["val_exit_acc"][-1]) for r in runs if r.get("val_exit_acc")]
    if not seconds:
        return None
    n = len(seconds)
    runs_text = "the one earlier run" if n == 1 else f"the median of {n} earlier runs"
    seconds_basis = f"{runs_text} of these settings on this server{_spread(seconds, '{:.0f} s')}"
    if not accuracy:
        return RunEstimate(statistics.median(seconds), seconds_basis, None, "not recorded for earlier runs")
    k = len(accuracy)
    acc_runs = "the one earlier run" if k == 1 else f"the median of {k} earlier runs"
    accuracy_basis = f"validation split, {acc_runs} of these settings{_spread([100 * a for a in accuracy], '{:.1f}%')}"
    return RunEstimate(statistics.median(seconds), seconds_basis, statistics.median(accuracy), accuracy_basis)


def estimate_from_timing(timing: StepTiming) -> RunEstimate:
    """The duration from batches timed just now; the accuracy is unknown."""
    basis = (
        f"from {timing.batches_timed} training batches timed on this machine just now: "
        f"{1000 * timing.step_seconds:.0f} ms per batch x {timing.steps_per_epoch} batches x {timing.epochs} "
        f"epochs, plus loading and evaluation"
    )
    return RunEstimate(timing.seconds, basis, None, "unknown until the first run of these settings")


def estimate_run(folder: str | Path, job: TrainJob, measure: bool = True) -> RunEstimate:
    """What to expect of `job`: from earlier runs of its settings logged in `folder`, else (with `measure`) from
    a few of its batches timed now, else unknown."""
    known = estimate_from_runs(earlier_runs(folder, job))
    if known is not None:
        return known
    if measure:
        return estimate_from_timing(time_steps(job))
    return RunEstimate(
        None,
        "measured when the run starts, by timing a few training batches first",
        None,
        "unknown until the first run of these settings",
    )
