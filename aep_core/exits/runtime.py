"""Inference that really stops: a sample that exits is no longer computed.

At batch size 1 the remaining segments are simply skipped; in a batch, samples that exit are removed
and the rest continue through the next segment. Decisions use the same `ExitRule` as the replayed
rule (scores from exits 0..k only), so on the same per-exit outputs they agree exactly.

An engine runs the segments: PyTorch here, ONNX Runtime in `aep_core.exits.onnx_runtime`. Every engine shares
one decision loop (`SegmentRunner`): it only says how to run segment k and its exit head and how to keep some
samples of a batch. `ENGINES` is the registry every consumer reads, and each engine also runs the network
without exits, so a speed-up is measured against the faster static engine (`best_static`).

By default the PyTorch engine runs a copy of the model prepared for inference (BatchNorm folded,
channels-last; `models.inference`), and the network without exits gets the same preparation, so
speed-ups compare like with like.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aep_core.analysis.calibration import check_temperatures, scale_logits
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord, record_from_batches
from aep_core.exits.rules import ExitRule, RuleResult, StepScorer, get_rule
from aep_core.models import EarlyExitNet
from aep_core.models.inference import as_model_input, prepare_for_inference
from aep_core.registry import Registry
from aep_core.threads import cpu_threads

Inputs = torch.Tensor | np.ndarray  # images (n, channels, height, width)


@dataclass
class RunResult:
    """Where each sample stopped and what it predicted, and how long the whole run took."""

    exit_index: np.ndarray  # (n,) int
    prediction: np.ndarray  # (n,) int
    seconds: float
    batch_size: int
    engine: str = "torch"

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


def check_inputs(x: Inputs, batch_size: int) -> None:
    """ConfigError unless `x` is a non-empty batch of images (n, channels, height, width) and the batch size >= 1."""
    if batch_size < 1:
        raise ConfigError(f"Batch size must be >= 1, got {batch_size}.")
    if x.ndim != 4 or len(x) == 0:
        raise ConfigError(
            f"Inputs must be a non-empty batch of images (n, channels, height, width), got shape {tuple(x.shape)}."
        )


def _check_rule(model: EarlyExitNet, rule: ExitRule) -> None:
    if len(rule.thresholds) != model.num_exits - 1:
        raise ConfigError(f"The rule is for {len(rule.thresholds) + 1} exits; the model has {model.num_exits}.")
    if get_rule(rule.name).needs_confidence and not model.has_confidence:
        raise ConfigError(f"{rule.name} needs a model with confidence branches (trained with --method eenet).")


class SegmentRunner:
    """Runs a model under an exit rule, computing each sample only up to the exit it stops at: the decision
    loop every engine shares. An engine says what input it takes (`as_input`), how to run segment k and exit
    k's head on the samples still running (`_advance`) and how to keep some of them (`_take`)."""

    engine = ""

    def __init__(
        self, model: EarlyExitNet, rule: ExitRule, temperatures: list[float] | np.ndarray | None = None
    ) -> None:
        _check_rule(model, rule)
        self.rule = rule
        self.num_exits = model.num_exits
        # Per-exit temperatures (calibrated outputs): exit k's logits are divided by temperatures[k] before
        # the rule sees them, as `calibration.scale_record` does for the replay.
        self.temperatures = None if temperatures is None else check_temperatures(temperatures, model.num_exits)

    def as_input(self, x: Inputs) -> Any:
        """The images in the form this engine runs on (a no-op on inputs already in that form)."""
        raise NotImplementedError

    def prepare(self, input_shape: tuple[int, ...]) -> None:
        """Get ready for inputs of this (channels, height, width), before any timing starts."""

    def _context(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def _advance(self, h: Any, k: int) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """Segment k and exit k's head on the samples in h: their features, logits (n, classes) and
        confidences (n,) or None."""
        raise NotImplementedError

    def _take(self, h: Any, keep: np.ndarray) -> Any:
        """The features of the samples where `keep` (n,) is true."""
        raise NotImplementedError

    def _logits(self, z: np.ndarray, k: int) -> np.ndarray:
        """Exit k's logits (n, classes) as the rule sees them."""
        return z if self.temperatures is None else scale_logits(z[None], self.temperatures[k : k + 1])[0]

    def _step(self, h: Any, k: int, scorer: StepScorer) -> tuple[Any, np.ndarray, np.ndarray]:
        h, z, c = self._advance(h, k)
        score, pred = scorer.step(self._logits(z, k), c)
        return h, score, pred

    def run_batch(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """(b,) exit index and prediction for one batch (in this engine's input form); exited samples leave
        the batch."""
        if len(x) == 1:
            return self._run_one(x)
        b = len(x)
        exit_index = np.full(b, -1, dtype=np.int64)
        prediction = np.full(b, -1, dtype=np.int64)
        alive = np.arange(b)  # positions in x of the samples still running
        scorer = self.rule.scorer()
        h = x
        for k in range(self.num_exits):
            h, score, pred = self._step(h, k, scorer)
            stop = self.rule.passes(score, k)
            exit_index[alive[stop]] = k
            prediction[alive[stop]] = pred[stop]
            if stop.all():
                break
            if stop.any():
                keep = ~stop
                alive = alive[keep]
                h = self._take(h, keep)
                scorer.keep(keep)
        return exit_index, prediction

    def _run_one(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """run_batch for a single sample, without the bookkeeping of removing samples from a batch."""
        scorer = self.rule.scorer()
        h = x
        for k in range(self.num_exits):
            h, score, pred = self._step(h, k, scorer)
            if self.rule.passes(score, k)[0]:
                break
        return np.array([k]), pred.astype(np.int64)

    def run(self, x: Inputs, batch_size: int = 1) -> RunResult:
        """Exit index and prediction of every input, processed in batches of `batch_size`, with wall time."""
        check_inputs(x, batch_size)
        self.prepare(tuple(x.shape[1:]))
        idx, pred = [], []
        with self._context():
            t0 = time.perf_counter()
            x = self.as_input(x)
            for i in range(0, len(x), batch_size):
                a, p = self.run_batch(x[i : i + batch_size])
                idx.append(a)
                pred.append(p)
            seconds = time.perf_counter() - t0
        return RunResult(np.concatenate(idx), np.concatenate(pred), seconds, batch_size, self.engine)


class _TorchModel:
    """What both PyTorch runners share: the model as a copy prepared for inference (unless `optimize` is False),
    inputs in its fastest memory layout, and inference mode."""

    engine = "torch"

    def _use(self, model: EarlyExitNet, optimize: bool) -> None:
        self.model = prepare_for_inference(model) if optimize else model.eval()
        self.optimize = optimize

    def as_input(self, x: Inputs) -> torch.Tensor:
        """Images as a tensor in the memory layout the model runs fastest on."""
        return as_model_input(torch.as_tensor(x), self.optimize)

    def _context(self) -> AbstractContextManager[Any]:
        return torch.inference_mode()


class EarlyExitRunner(_TorchModel, SegmentRunner):
    """The PyTorch engine: runs a model under an exit rule, computing each sample only up to the exit it stops
    at (on a copy prepared for inference unless `optimize` is False)."""

    def __init__(
        self,
        model: EarlyExitNet,
        rule: ExitRule,
        optimize: bool = True,
        temperatures: list[float] | np.ndarray | None = None,
    ) -> None:
        super().__init__(model, rule, temperatures)
        self._use(model, optimize)

    def _advance(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        h = self.model.forward_segment(h, k)
        z, c = self.model.forward_head(h, k)
        return h, z.float().cpu().numpy(), None if c is None else c.float().cpu().numpy()

    def _take(self, h: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
        return h[torch.from_numpy(keep).to(h.device)]

    @torch.inference_mode()
    def run_batch(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(b,) exit index and prediction for one batch; exited samples leave the batch."""
        return super().run_batch(x)


class StaticRunner:
    """The network without exits (every block, then the final classifier) on one engine."""

    engine = ""

    def as_input(self, x: Inputs) -> Any:
        """The images in the form this engine runs on (a no-op on inputs already in that form)."""
        raise NotImplementedError

    def prepare(self, input_shape: tuple[int, ...]) -> None:
        """Get ready for inputs of this (channels, height, width), before any timing starts."""

    def _context(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def predict(self, x: Any) -> np.ndarray:
        """(b,) predicted class of one batch in this engine's input form."""
        raise NotImplementedError

    def run(self, x: Inputs, batch_size: int = 1) -> tuple[np.ndarray, float]:
        """Predictions of every input, in batches of `batch_size`, and the wall time."""
        check_inputs(x, batch_size)
        self.prepare(tuple(x.shape[1:]))
        preds = []
        with self._context():
            t0 = time.perf_counter()
            x = self.as_input(x)
            for i in range(0, len(x), batch_size):
                preds.append(self.predict(x[i : i + batch_size]))
            seconds = time.perf_counter() - t0
        return np.concatenate(preds), seconds


class TorchStaticRunner(_TorchModel, StaticRunner):
    """The network without exits in PyTorch, on a copy prepared for inference unless `optimize` is False."""

    def __init__(self, model: EarlyExitNet, optimize: bool = True) -> None:
        self._use(model, optimize)

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """(b,) predicted class of one batch."""
        return self.model.forward_final(x).argmax(1).cpu().numpy()


def run_without_exits(
    model: EarlyExitNet, x: torch.Tensor, batch_size: int = 1, optimize: bool = True
) -> tuple[np.ndarray, float]:
    """Predictions of the network without exits (all blocks, final classifier) in PyTorch and the wall time."""
    check_inputs(x, batch_size)
    return TorchStaticRunner(model, optimize).run(x, batch_size)


# ---- engines: the registry every consumer reads --------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """One inference engine: names and help for people, and how to build its early-exit runner and its
    network without exits. `threads` is the engine's CPU threads where it owns them (None: torch's current
    count, so engines compare on the same number); the PyTorch engine runs on torch's current count."""

    name: str
    label: str
    help: str
    runner: Callable[..., SegmentRunner]  # (model, rule, temperatures=None, threads=None) -> SegmentRunner
    static: Callable[..., StaticRunner]  # (model, threads=None) -> StaticRunner
    requires: str | None = None  # the Python package the engine needs, if any

    def available(self) -> bool:
        """Whether the package the engine needs is installed."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


ENGINES: Registry[EngineSpec] = Registry("inference engine")


def get_engine(name: str) -> EngineSpec:
    """The registered engine called `name`, installed; ConfigError naming the choices or the missing package."""
    spec = ENGINES.lookup(name)
    if not spec.available():
        raise ConfigError(
            f"The {name} engine needs the {spec.requires} package: pip install 'aep-core[export]' "
            f"(or pip install {spec.requires})."
        )
    return spec


def list_engines(available: bool = False) -> list[str]:
    """Names of the registered engines, optionally only those whose package is installed."""
    return [n for n, s in ENGINES.items() if not available or s.available()]


def _torch_runner(
    model: EarlyExitNet,
    rule: ExitRule,
    temperatures: list[float] | np.ndarray | None = None,
    threads: int | None = None,
) -> SegmentRunner:
    return EarlyExitRunner(model, rule, temperatures=temperatures)


def _torch_static(model: EarlyExitNet, threads: int | None = None) -> StaticRunner:
    return TorchStaticRunner(model)


def _onnx_runner(
    model: EarlyExitNet,
    rule: ExitRule,
    temperatures: list[float] | np.ndarray | None = None,
    threads: int | None = None,
) -> SegmentRunner:
    from aep_core.exits.onnx_runtime import OnnxEarlyExitRunner

    return OnnxEarlyExitRunner(model, rule, temperatures=temperatures, threads=threads)


def _onnx_static(model: EarlyExitNet, threads: int | None = None) -> StaticRunner:
    from aep_core.exits.onnx_runtime import OnnxStaticRunner

    return OnnxStaticRunner(model, threads=threads)


ENGINES["torch"] = EngineSpec(
    "torch",
    "PyTorch",
    "PyTorch eager on a copy with BatchNorm folded and channels-last weights.",
    _torch_runner,
    _torch_static,
)
ENGINES["onnxruntime"] = EngineSpec(
    "onnxruntime",
    "ONNX Runtime",
    "One ONNX file per exit (exported once, cached), chained in ONNX Runtime sessions set for latency.",
    _onnx_runner,
    _onnx_static,
    requires="onnxruntime",
)


# ---- measured speed-ups against the best static engine ---------------------------------------------


@dataclass
class StaticBaseline:
    """Throughput of the network without exits on each engine at one batch size, measured in one run; the
    faster engine is the baseline a speed-up is measured against."""

    batch_size: int
    samples: int
    samples_per_s: dict[str, float]  # engine -> best-round throughput
    predictions: dict[str, np.ndarray]  # engine -> (n,)

    @property
    def engine(self) -> str:
        """The faster engine."""
        return max(self.samples_per_s, key=self.samples_per_s.__getitem__)

    @property
    def best_per_s(self) -> float:
        """Throughput of the faster engine."""
        return self.samples_per_s[self.engine]

    @property
    def prediction(self) -> np.ndarray:
        """(n,) predictions of the faster engine."""
        return self.predictions[self.engine]

    def describe(self) -> str:
        """One line: every engine's throughput and which was faster."""
        each = ", ".join(f"{name} {v:.0f}/s" for name, v in self.samples_per_s.items())
        return f"without exits: {each} (best: {self.engine})"


@dataclass
class SpeedMeasurement:
    """Throughput of an early-exit engine and of the network without exits on the same inputs; the latter on
    the fastest static engine of the same run (`static` holds every static engine's figure)."""

    batch_size: int
    samples: int
    without_exits_per_s: float
    early_exit_per_s: float
    exit_index: np.ndarray  # (n,) from the early-exit run
    prediction: np.ndarray  # (n,) from the early-exit run
    prediction_without_exits: np.ndarray  # (n,)
    engine: str = "torch"
    static: StaticBaseline | None = field(default=None, repr=False)

    @property
    def speed_up(self) -> float:
        """Early-exit throughput over the throughput without exits."""
        return self.early_exit_per_s / self.without_exits_per_s

    @property
    def static_engine(self) -> str:
        """The static engine the speed-up is measured against."""
        return self.static.engine if self.static is not None else "torch"


def _check_measurement(x: Inputs, batch_size: int, rounds: int, threads: int | None) -> None:
    check_inputs(x, batch_size)
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")


def _static_engines(static_engines: list[str] | tuple[str, ...] | None) -> list[str]:
    names = list_engines(available=True) if static_engines is None else list(static_engines)
    if not names:
        raise ConfigError("Give at least one static engine to compare with.")
    for name in names:
        get_engine(name)
    return names


def _warm_batches(x: Any, batch_size: int) -> Iterator[Any]:
    """The first batch and the last, shorter one: every batch size a static run meets."""
    yield x[:batch_size]
    if len(x) > batch_size and len(x) % batch_size:
        yield x[len(x) - len(x) % batch_size :]


def _statics(model: EarlyExitNet, names: list[str], x: Inputs, batch_size: int) -> dict[str, tuple[StaticRunner, Any]]:
    """Each static engine with the inputs in its form, warmed up at every batch size it will meet."""
    out = {}
    for name in names:
        runner = get_engine(name).static(model)
        runner.prepare(tuple(x.shape[1:]))
        xs = runner.as_input(x)
        for part in _warm_batches(xs, batch_size):
            runner.run(part, batch_size)
        out[name] = (runner, xs)
    return out


def _baseline(times: dict[str, list[float]], preds: dict[str, np.ndarray], n: int, batch_size: int) -> StaticBaseline:
    return StaticBaseline(batch_size, n, {k: n / min(t) for k, t in times.items()}, preds)


def best_static(
    model: EarlyExitNet,
    x: Inputs,
    batch_size: int,
    rounds: int = 2,
    engines: list[str] | tuple[str, ...] | None = None,
    threads: int | None = None,
) -> StaticBaseline:
    """Best-of-`rounds` throughput of the network without exits on each engine (None: every installed one) at
    `batch_size`, the engines alternating so background load hits them alike; the faster one is the baseline.
    `threads` sets the CPU threads for the measurement only (None: the current setting)."""
    _check_measurement(x, batch_size, rounds, threads)
    names = _static_engines(engines)
    with cpu_threads(threads):
        statics = _statics(model, names, x, batch_size)
        times: dict[str, list[float]] = {name: [] for name in names}
        preds: dict[str, np.ndarray] = {}
        for _ in range(rounds):
            for name, (runner, xs) in statics.items():
                preds[name], t = runner.run(xs, batch_size)
                times[name].append(t)
    return _baseline(times, preds, len(x), batch_size)


def measure_speedup(
    model: EarlyExitNet,
    rule: ExitRule,
    x: torch.Tensor,
    batch_size: int,
    rounds: int = 2,
    temperatures: list[float] | np.ndarray | None = None,
    threads: int | None = None,
    engine: str = "torch",
    static_engines: list[str] | tuple[str, ...] | None = None,
) -> SpeedMeasurement:
    """Best-of-`rounds` throughput of the early-exit runner on `engine` and of the same weights without exits on
    every static engine (None: every installed one) on inputs `x`, at `batch_size`; the speed-up is against the
    fastest static engine. The runs alternate so background load hits all alike. One untimed pass of the
    early-exit runner over all of `x` comes first: its batches shrink to sizes of their own, and the first pass
    at a new size pays for setting up its kernels. `threads` sets the CPU threads for the measurement only
    (None: the current setting)."""
    return measure_engines(model, rule, x, batch_size, (engine,), rounds, temperatures, threads, static_engines)[engine]


def measure_engines(
    model: EarlyExitNet,
    rule: ExitRule,
    x: torch.Tensor,
    batch_size: int,
    engines: list[str] | tuple[str, ...] = ("torch",),
    rounds: int = 2,
    temperatures: list[float] | np.ndarray | None = None,
    threads: int | None = None,
    static_engines: list[str] | tuple[str, ...] | None = None,
) -> dict[str, SpeedMeasurement]:
    """`measure_speedup` for several early-exit engines in one run, all against the same static baseline:
    engine -> its measurement."""
    _check_measurement(x, batch_size, rounds, threads)
    names = _static_engines(static_engines)
    if not engines:
        raise ConfigError("Give at least one early-exit engine to measure.")
    for name in engines:
        get_engine(name)
    with cpu_threads(threads):
        return _measure(model, rule, x, batch_size, list(engines), rounds, temperatures, names)


def _measure(
    model: EarlyExitNet,
    rule: ExitRule,
    x: torch.Tensor,
    batch_size: int,
    engines: list[str],
    rounds: int,
    temperatures: list[float] | np.ndarray | None,
    static_engines: list[str],
) -> dict[str, SpeedMeasurement]:
    statics = _statics(model, static_engines, x, batch_size)
    runners = {}
    for name in engines:
        runner = get_engine(name).runner(model, rule, temperatures=temperatures)
        runner.prepare(tuple(x.shape[1:]))
        xs = runner.as_input(x)
        runner.run(xs, batch_size)
        runners[name] = (runner, xs)
    static_t: dict[str, list[float]] = {name: [] for name in static_engines}
    ee_t: dict[str, list[float]] = {name: [] for name in engines}
    static_pred: dict[str, np.ndarray] = {}
    results: dict[str, RunResult] = {}
    for _ in range(rounds):
        for name, (static, xs) in statics.items():
            static_pred[name], t = static.run(xs, batch_size)
            static_t[name].append(t)
        for name, (runner, xs) in runners.items():
            results[name] = runner.run(xs, batch_size)
            ee_t[name].append(results[name].seconds)
    base = _baseline(static_t, static_pred, len(x), batch_size)
    return {
        name: SpeedMeasurement(
            batch_size,
            len(x),
            base.best_per_s,
            len(x) / min(ee_t[name]),
            res.exit_index,
            res.prediction,
            base.prediction,
            name,
            base,
        )
        for name, res in results.items()
    }


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
    check_inputs(x, batch_size)
    model = prepare_for_inference(model) if optimize else model.eval()
    x = as_model_input(x, optimize)
    logits, confs = [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        logits.append(torch.stack(out.logits).float().cpu().numpy())
        if out.confidences is not None:
            confs.append(torch.stack(out.confidences).float().cpu().numpy())
    return record_from_batches(logits, confs, labels, cum_macs, full_macs, info)
