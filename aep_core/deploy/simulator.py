"""Split computing over tiers (device, edge, cloud): an early-exit network cut into contiguous groups
of exits, one group per tier. A sample leaves at the first exit whose rule is confident enough; a
sample that passes the last exit of a tier sends that exit's feature map over the link to the next
tier; the last exit answers whoever is left. A tier may hold no exits: the first tier then sends the
input image itself (a cloud-only or edge-only deployment), a later one relays what it received, and
tiers after the last exit are never reached.

Everything is replayed from saved per-exit outputs (an ExitRecord): the exit each sample stops at is
the exit rule's decision (`aep_core.exits.rules`), and the cost of stopping at exit e under a deployment
is fixed, so a whole split costs a lookup per sample:

- compute on tier t: the MACs of the exits it ran (from `cum_macs`, heads included) / its MACs per second;
  or, with measured segment times (`SegmentTimes`: segment k = the blocks and head of exit k, timed at batch 1
  on one engine on a reference machine whose speed is `reference_macs_per_s`), the measured seconds of the
  segments it ran x reference speed / its speed. Each segment is then costed as the MACs the reference machine
  does in its measured time, so every tier keeps the relative speed its MACs per second says, a tier at the
  reference speed takes exactly the measured times, and the time spent outside the MACs (per-call overhead,
  memory-bound layers, the engine) is carried over to every tier in proportion;
- each link crossed: feature bytes * 8 / bandwidth + the link's latency;
- energy (when powers are given): power * busy time of each tier, plus the radio power of a link
  while it transmits.

Percentiles are nearest-rank (the smallest latency that at least q of the samples do not exceed).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aep_core.cost import count_macs, measure_latency
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import ModelExits, RuleResult, get_rule, group_means, make_rule, replay_rule
from aep_core.exits.runtime import get_engine
from aep_core.models import EarlyExitNet
from aep_core.models.inference import as_model_input, prepare_for_inference
from aep_core.threads import cpu_threads

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
# Costs in measured milliseconds: a tier as fast as the machine that measured them does 1000 ms of that work a
# second, so a tier's speed is a multiple of that machine.
MS_WORK_PER_S = 1e3
MAX_TIERS = 4
STATS = ("mean", "p50", "p95", "p99")
TIER_NAMES = {
    1: ("device",),
    2: ("device", "cloud"),
    3: ("device", "edge", "cloud"),
    4: ("device", "edge", "fog", "cloud"),
}


# ---- the model's side: feature sizes and the local tier's speed ----------------------------------


@dataclass(frozen=True)
class FeatureSizes:
    """Shapes (channels, height, width) of the model's input and of the feature map at each exit's block."""

    input_shape: tuple[int, ...]
    exit_shapes: tuple[tuple[int, ...], ...]

    @property
    def num_exits(self) -> int:
        return len(self.exit_shapes)

    def exit_bytes(self, precision: str = "fp32") -> np.ndarray:
        """(exits,) bytes of one sample's feature map at each exit, at fp32, fp16 or int8."""
        b = _precision_bytes(precision)
        return np.array([math.prod(s) * b for s in self.exit_shapes], dtype=np.int64)

    def input_bytes(self, precision: str = "fp32") -> int:
        """Bytes of one input image at the given precision."""
        return math.prod(self.input_shape) * _precision_bytes(precision)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view: shapes and bytes at every precision."""
        return {
            "input_shape": list(self.input_shape),
            "exit_shapes": [list(s) for s in self.exit_shapes],
            "exit_bytes": {p: self.exit_bytes(p).tolist() for p in PRECISION_BYTES},
        }


def _precision_bytes(precision: str) -> int:
    if precision not in PRECISION_BYTES:
        raise ConfigError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISION_BYTES)}.")
    return PRECISION_BYTES[precision]


@torch.no_grad()
def feature_sizes(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> FeatureSizes:
    """The feature map shape at every exit, measured by running one zero image through the segments."""
    was_training = model.training
    model.eval()
    h = torch.zeros(1, *input_shape)
    shapes = []
    for k in range(model.num_exits):
        h = model.forward_segment(h, k)
        shapes.append(tuple(h.shape[1:]))
    model.train(was_training)
    return FeatureSizes(tuple(input_shape), tuple(shapes))


def measure_macs_per_second(
    model: torch.nn.Module, input_shape: tuple[int, int, int], repeats: int = 10, threads: int | None = 1
) -> float:
    """This machine's speed on the model in MACs per second: MACs of one image through every exit divided
    by the median time of that forward pass (batch 1, on `threads` CPU threads; None: the current setting).
    An early-exit network is timed as the runtime runs it: a copy prepared for inference."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    macs = count_macs(model, x)
    timed, x_timed = model, x
    if isinstance(model, EarlyExitNet):
        timed, x_timed = prepare_for_inference(model), as_model_input(x)
    try:
        with cpu_threads(threads):
            seconds = measure_latency(lambda: timed(x_timed), repeats=repeats, warmup=2)
    finally:
        model.train(was_training)
    return macs / max(seconds, 1e-9)


def measure_segment_latencies(
    model: EarlyExitNet,
    input_shape: tuple[int, ...],
    engine: str = "torch",
    threads: int | None = 1,
    rounds: int = 30,
    warmup: int = 3,
) -> list[float]:
    """Seconds of each segment (segment k: the blocks after exit k-1 up to exit k and exit k's head) for one
    image on `engine`, as its early-exit runtime runs it, on `threads` CPU threads (None: the current setting):
    the median of `rounds` rounds that each time every segment once, after `warmup` untimed rounds."""
    if rounds < 1 or warmup < 0:
        raise ConfigError(f"rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")
    spec = get_engine(engine)
    # the rule never decides here: every segment is timed on the features its predecessor produced
    rule = make_rule("max_probability", ModelExits.of_model(model, None))
    shape = tuple(int(v) for v in input_shape)
    with cpu_threads(threads):
        runner = spec.runner(model, rule, threads=threads)
        runner.prepare(shape)
        with runner._context():
            inputs = [runner.as_input(torch.zeros(1, *shape))]  # inputs[k]: what segment k reads
            for k in range(model.num_exits - 1):
                inputs.append(runner._advance(inputs[k], k)[0])
            times: list[list[float]] = [[] for _ in inputs]
            for r in range(warmup + rounds):
                for k, h in enumerate(inputs):
                    t0 = time.perf_counter()
                    runner._advance(h, k)
                    if r >= warmup:
                        times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


@dataclass(frozen=True)
class SegmentTimes:
    """Measured seconds of each segment for one image (segment k ends at exit k, its head included) on a
    reference machine whose speed, in the unit of the tiers' speeds, is `reference_macs_per_s`."""

    seconds: tuple[float, ...]
    reference_macs_per_s: float

    def check(self, num_exits: int) -> None:
        """Raise ConfigError unless there is one positive time per exit and the reference speed is positive."""
        if len(self.seconds) != num_exits:
            raise ConfigError(f"The segment times cover {len(self.seconds)} exits; the model has {num_exits}.")
        if not all(math.isfinite(s) and s > 0 for s in self.seconds):
            raise ConfigError(f"Segment times must be positive seconds, got {list(self.seconds)}.")
        if not (math.isfinite(self.reference_macs_per_s) and self.reference_macs_per_s > 0):
            raise ConfigError(
                f"The reference speed must be a positive number of MACs per second, got {self.reference_macs_per_s}."
            )

    def cum_work(self) -> np.ndarray:
        """(exits,) work done up to each exit in MACs of the reference machine: what it computes in the
        measured time."""
        return np.cumsum(np.asarray(self.seconds, dtype=np.float64)) * self.reference_macs_per_s


# ---- the deployment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """A machine running a segment: its speed in MACs per second, and its power in watts if known."""

    name: str
    macs_per_s: float
    power_w: float | None = None


@dataclass(frozen=True)
class Link:
    """A network link between two tiers: bandwidth in Mbit/s, one-way latency in ms, and the sender's
    radio power in watts while it transmits, if known."""

    bandwidth_mbps: float
    latency_ms: float = 0.0
    power_w: float | None = None

    def transfer_s(self, nbytes: float | np.ndarray) -> float | np.ndarray:
        """Seconds to push `nbytes` through the link (no latency)."""
        return np.asarray(nbytes, dtype=np.float64) * 8 / (self.bandwidth_mbps * 1e6)


@dataclass(frozen=True)
class Deployment:
    """Tiers in order (device first), the links between consecutive tiers, the split points, and the
    precision features travel at. Split t is the last exit on tier t (-1: none yet, so the input itself
    is sent); tier t holds the exits after splits[t-1] up to and including splits[t], the last tier the
    rest. Splits never decrease; equal splits leave a tier empty."""

    tiers: tuple[Tier, ...]
    links: tuple[Link, ...]
    splits: tuple[int, ...]
    precision: str = "fp32"

    @property
    def num_tiers(self) -> int:
        return len(self.tiers)

    def tier_exits(self, num_exits: int) -> list[range]:
        """The exits each tier holds."""
        bounds = [-1, *self.splits, num_exits - 1]
        return [range(bounds[t] + 1, bounds[t + 1] + 1) for t in range(self.num_tiers)]

    def check(self, num_exits: int) -> None:
        """Raise ConfigError if the deployment does not fit a model with `num_exits` exits."""
        k = self.num_tiers
        if not 1 <= k <= MAX_TIERS:
            raise ConfigError(f"A deployment has 1 to {MAX_TIERS} tiers; got {k}.")
        if len(self.links) != k - 1:
            raise ConfigError(f"{k} tiers need {k - 1} links between them; got {len(self.links)}.")
        s = list(self.splits)
        if len(s) != k - 1:
            raise ConfigError(f"{k} tiers need {k - 1} split points; got {len(s)} ({s}).")
        if s != sorted(s) or any(not -1 <= v <= num_exits - 1 for v in s):
            raise ConfigError(
                f"Split points are non-decreasing exit indices in -1..{num_exits - 1} (the last exit "
                f"on each tier but the last; -1: the first tier sends the input); got {s}."
            )
        for t in self.tiers:
            if not t.macs_per_s > 0:
                raise ConfigError(
                    f"Tier '{t.name}': its speed must be a positive number of MACs per second, got {t.macs_per_s}."
                )
            if t.power_w is not None and not t.power_w >= 0:
                raise ConfigError(f"Tier '{t.name}': its power must be >= 0 W, got {t.power_w}.")
        for i, link in enumerate(self.links):
            if not link.bandwidth_mbps > 0:
                raise ConfigError(f"Link {i}: bandwidth must be positive (Mbit/s), got {link.bandwidth_mbps}.")
            if not link.latency_ms >= 0:
                raise ConfigError(f"Link {i}: latency must be >= 0 ms, got {link.latency_ms}.")
            if link.power_w is not None and not link.power_w >= 0:
                raise ConfigError(f"Link {i}: power must be >= 0 W, got {link.power_w}.")
        _precision_bytes(self.precision)

    def with_splits(self, splits: Sequence[int]) -> Deployment:
        """The same tiers and links with other split points."""
        return Deployment(self.tiers, self.links, tuple(int(v) for v in splits), self.precision)


def make_deployment(
    speeds: Sequence[float],
    bandwidth_mbps: Sequence[float],
    latency_ms: Sequence[float],
    splits: Sequence[int],
    precision: str = "fp32",
    power_w: Sequence[float | None] | None = None,
    names: Sequence[str] | None = None,
) -> Deployment:
    """A deployment from plain lists: one speed (MACs/s) per tier, one bandwidth and latency per link."""
    k = len(speeds)
    if not 1 <= k <= MAX_TIERS:
        raise ConfigError(f"A deployment has 1 to {MAX_TIERS} tiers; got {k} tier speeds.")
    if len(bandwidth_mbps) != k - 1 or len(latency_ms) != k - 1:
        raise ConfigError(
            f"{k} tiers need {k - 1} link bandwidths and latencies; got {len(bandwidth_mbps)} and {len(latency_ms)}."
        )
    names = list(names) if names is not None else list(TIER_NAMES[k])
    power = list(power_w) if power_w is not None else [None] * k
    if len(power) != k or len(names) != k:
        raise ConfigError(f"{k} tiers need {k} names and {k} powers; got {len(names)} and {len(power)}.")
    tiers = tuple(
        Tier(n, float(s), None if p is None else float(p)) for n, s, p in zip(names, speeds, power, strict=True)
    )
    links = tuple(Link(float(b), float(lat)) for b, lat in zip(bandwidth_mbps, latency_ms, strict=True))
    return Deployment(tiers, links, tuple(int(v) for v in splits), precision)


# Starting points for the remote tiers (GMAC/s; the device's speed is measured) and links (Mbit/s, ms), by tier count:
# a device, an edge box on the local network, a cloud server across the internet.
DEFAULT_GMACS = {1: [], 2: [1000.0], 3: [100.0, 1000.0], 4: [50.0, 200.0, 1000.0]}
DEFAULT_LINKS = {
    1: [],
    2: [(20.0, 30.0)],
    3: [(20.0, 5.0), (100.0, 30.0)],
    4: [(20.0, 2.0), (100.0, 5.0), (1000.0, 30.0)],
}


def default_splits(num_exits: int, num_tiers: int) -> list[int]:
    """Split points spreading the exits evenly over the tiers."""
    k = max(1, min(num_tiers, MAX_TIERS))
    return [(i + 1) * num_exits // k - 1 for i in range(k - 1)]


# ---- the cost of stopping at each exit ------------------------------------------------------------


@dataclass
class ExitTimings:
    """What a sample answered at exit e pays under one deployment (every array indexed by exit)."""

    tier: np.ndarray  # (exits,) tier holding each exit
    compute_s: np.ndarray  # (exits, tiers) seconds of compute on each tier
    transfer_s: np.ndarray  # (exits, links) seconds pushing data through each link
    link_latency_s: np.ndarray  # (exits, links) latency of each link crossed
    bytes_sent: np.ndarray  # (exits,) bytes sent over all links crossed
    energy_j: np.ndarray | None  # (exits,) joules, when any power is given

    @property
    def latency_s(self) -> np.ndarray:
        """(exits,) end-to-end latency of a sample answered at each exit."""
        return self.compute_s.sum(1) + self.transfer_s.sum(1) + self.link_latency_s.sum(1)


def exit_timings(
    cum_macs: Sequence[float] | np.ndarray,
    sizes: FeatureSizes,
    dep: Deployment,
    segments: SegmentTimes | None = None,
) -> ExitTimings:
    """The latency, bytes and energy of a sample answered at each exit under a deployment; compute from the MACs
    and the tiers' speeds, or from measured segment times scaled to each tier's speed when `segments` is given."""
    cum = np.asarray(cum_macs, dtype=np.float64)
    e = len(cum)
    if sizes.num_exits != e:
        raise ConfigError(f"The feature sizes cover {sizes.num_exits} exits; the evaluation record has {e}.")
    dep.check(e)
    if segments is not None:
        segments.check(e)
        cum = segments.cum_work()
    k = dep.num_tiers
    ends = np.array([*dep.splits, e - 1])  # (tiers,) last exit done when each tier hands over (-1: none)
    done = np.concatenate([[0.0], cum])[ends + 1]  # (tiers,) MACs done when each tier hands over
    start = np.concatenate([[0.0], done[:-1]])  # (tiers,) MACs done when each tier starts
    handover = np.concatenate([[sizes.input_bytes(dep.precision)], sizes.exit_bytes(dep.precision)])[ends[:-1] + 1]
    speed = np.array([t.macs_per_s for t in dep.tiers])
    tier = np.searchsorted(ends, np.arange(e), side="left")  # (exits,) first tier whose last exit is at or after e
    compute = np.zeros((e, k))
    transfer = np.zeros((e, k - 1))
    latency = np.zeros((e, k - 1))
    for x in range(e):  # exits, not samples
        t_x = tier[x]
        compute[x, :t_x] = (done[:t_x] - start[:t_x]) / speed[:t_x]
        compute[x, t_x] = (cum[x] - start[t_x]) / speed[t_x]
        for t in range(t_x):
            transfer[x, t] = dep.links[t].transfer_s(handover[t])
            latency[x, t] = dep.links[t].latency_ms / 1e3
    crossed = np.array([handover[:t].sum() for t in tier], dtype=np.float64)  # (exits,)
    energy = None
    powers = [t.power_w for t in dep.tiers]
    radios = [link.power_w for link in dep.links]
    if any(p is not None for p in [*powers, *radios]):
        energy = compute @ np.array([p or 0.0 for p in powers]) + transfer @ np.array([p or 0.0 for p in radios])
    return ExitTimings(tier.astype(np.int64), compute, transfer, latency, crossed, energy)


def percentile(values: np.ndarray, q: float) -> float:
    """Nearest-rank percentile: the smallest value that at least a fraction q of `values` do not exceed."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    rank = max(1, math.ceil(q * len(v) - 1e-9))
    return float(v[min(rank, len(v)) - 1])


def latency_stat(latency_s: np.ndarray, stat: str) -> float:
    """Mean, p50, p95 or p99 of per-sample latencies."""
    if stat not in STATS:
        raise ConfigError(f"Unknown latency statistic '{stat}'. Choose one of: {', '.join(STATS)}.")
    return float(np.mean(latency_s)) if stat == "mean" else percentile(latency_s, int(stat[1:]) / 100)


# ---- simulating one configuration -----------------------------------------------------------------


@dataclass
class DeployResult:
    """Per-sample outcome of one deployment and exit rule: the rule's replay (where each sample stopped and
    whether it was right) under the deployment's timings; where each sample was answered, its latency, bytes
    sent and energy, and the aggregates as properties."""

    deployment: Deployment
    timings: ExitTimings
    replay: RuleResult

    @property
    def exit_index(self) -> np.ndarray:
        """(n,) exit each sample stopped at."""
        return self.replay.exit_index

    @property
    def num_samples(self) -> int:
        return len(self.exit_index)

    @property
    def tier(self) -> np.ndarray:
        """(n,) tier that answered each sample."""
        return self.timings.tier[self.exit_index]

    @property
    def latency_s(self) -> np.ndarray:
        """(n,) end-to-end latency of each sample in seconds."""
        return self.timings.latency_s[self.exit_index]

    @property
    def bytes_sent(self) -> np.ndarray:
        """(n,) bytes each sample sent over the links."""
        return self.timings.bytes_sent[self.exit_index]

    @property
    def energy_j(self) -> np.ndarray | None:
        """(n,) joules per sample, or None when no power was given."""
        return None if self.timings.energy_j is None else self.timings.energy_j[self.exit_index]

    @property
    def accuracy(self) -> float:
        return self.replay.accuracy

    @property
    def tier_share(self) -> np.ndarray:
        """(tiers,) fraction of samples answered at each tier."""
        return np.bincount(self.tier, minlength=self.deployment.num_tiers) / self.num_samples

    @property
    def tier_accuracy(self) -> np.ndarray:
        """(tiers,) accuracy of the samples each tier answered (nan where it answered none)."""
        return group_means(self.tier, self.replay.correct, self.deployment.num_tiers)

    def latency_stats(self) -> dict[str, float]:
        """Mean, p50, p95 and p99 latency in seconds."""
        lat = self.latency_s
        return {s: latency_stat(lat, s) for s in STATS}

    def breakdown(self) -> dict[str, np.ndarray]:
        """Mean seconds per sample spent computing on each tier (tiers,), and transferring over each link and
        waiting on each link's latency (links,)."""
        w = np.bincount(self.exit_index, minlength=len(self.timings.tier)) / self.num_samples
        t = self.timings
        return {"compute": w @ t.compute_s, "transfer": w @ t.transfer_s, "link_latency": w @ t.link_latency_s}

    def summary(self) -> dict[str, Any]:
        """Plain-type view of the aggregates."""
        dep = self.deployment
        b = self.breakdown()
        e = self.energy_j
        return {
            "rule": self.replay.rule,
            "settings": self.replay.settings,
            "splits": list(dep.splits),
            "precision": dep.precision,
            "tiers": [t.name for t in dep.tiers],
            "accuracy": self.accuracy,
            "latency_s": self.latency_stats(),
            "mean_bytes_sent": float(self.bytes_sent.mean()),
            "mean_energy_j": None if e is None else float(e.mean()),
            "tier_share": self.tier_share.tolist(),
            "tier_accuracy": [None if math.isnan(v) else v for v in self.tier_accuracy.tolist()],
            "mean_compute_s": b["compute"].tolist(),
            "mean_transfer_s": b["transfer"].tolist(),
            "mean_link_latency_s": b["link_latency"].tolist(),
        }


def simulate(
    rec: ExitRecord,
    sizes: FeatureSizes,
    dep: Deployment,
    rule: str,
    segments: SegmentTimes | None = None,
    **settings: Any,
) -> DeployResult:
    """Replay an exit rule (a name from the rule registry and its settings) on saved outputs under a deployment,
    compute timed from the MACs or from measured `segments`."""
    return DeployResult(dep, exit_timings(rec.cum_macs, sizes, dep, segments), replay_rule(rec, rule, **settings))


# ---- searching split points and thresholds ----------------------------------------------------------


@dataclass
class DecisionGrid:
    """An exit rule over a grid of settings: how many samples stop at each exit, and the accuracy, per setting.
    Independent of the deployment, so it is computed once per model and rule."""

    rule: str
    settings: list[dict[str, Any]]
    counts: np.ndarray  # (settings, exits) samples stopping at each exit
    accuracy: np.ndarray  # (settings,)

    @property
    def num_samples(self) -> int:
        return int(self.counts[0].sum())


def decision_grid(
    rec: ExitRecord,
    rule: str,
    grid: Sequence[float] | None = None,
    points: int = 64,
    weights: Sequence[float] | None = None,
) -> DecisionGrid:
    """The rule's decisions over a grid: global thresholds (default: 0, 0.01, ..., 1 plus `points` quantiles of
    the scores) for threshold rules, every value of the setting for a rule with a whole-number setting, one point
    for a rule without a setting."""
    from aep_core.exits.solvers import (
        checked_thresholds,
        global_decisions,
        rule_settings,
        score_record,
        setting_grid,
        threshold_grid,
    )

    spec = get_rule(rule)
    if rec.num_samples == 0:
        raise ConfigError("The evaluation record holds no samples: there is nothing to search.")
    e, n = rec.num_exits, rec.num_samples
    cols = np.arange(n)
    if spec.has_thresholds:
        extra = rule_settings(rec, rule, weights)
        r, score, right = score_record(rec, rule, weights)
        if grid is None:
            ts = np.unique(np.round(np.concatenate([np.linspace(0, 1, 101), threshold_grid(score, points)]), 6))
        else:
            ts = checked_thresholds(grid, f"{rule}: search")
        counts = np.empty((len(ts), e), dtype=np.int64)
        acc = np.empty(len(ts))
        for i, idx in enumerate(global_decisions(score, ts, r.lower_is_confident)):
            counts[i] = np.bincount(idx, minlength=e)
            acc[i] = right[idx, cols].mean()
        settings = [{"thresholds": float(t), **extra} for t in ts]
    else:
        settings = setting_grid(rule, e, grid)
        results = [replay_rule(rec, rule, **s) for s in settings]
        counts = np.stack([np.bincount(r.exit_index, minlength=e) for r in results])
        acc = np.array([r.accuracy for r in results])
    return DecisionGrid(rule, settings, counts, acc)


def _grid_stat(counts: np.ndarray, latency: np.ndarray, stat: str) -> np.ndarray:
    """(settings, splits) latency statistic from exit counts (settings, exits) and per-exit latencies
    (splits, exits)."""
    n = counts[0].sum()
    if stat == "mean":
        return counts @ latency.T / n
    if stat not in STATS:
        raise ConfigError(f"Unknown latency statistic '{stat}'. Choose one of: {', '.join(STATS)}.")
    need = max(1, math.ceil(int(stat[1:]) / 100 * n - 1e-9))  # nearest rank, as in `percentile`
    order = np.argsort(latency, axis=1)  # (splits, exits)
    sorted_lat = np.take_along_axis(latency, order, 1)
    cum = np.cumsum(counts[:, order], axis=-1)  # (settings, splits, exits) samples at or below each sorted latency
    first = (cum >= need).argmax(-1)  # (settings, splits)
    return np.take_along_axis(np.broadcast_to(sorted_lat, cum.shape), first[..., None], -1)[..., 0]


@dataclass
class SearchResult:
    """Every (split assignment, rule setting) tried: its accuracy and latency statistic, the accuracy-vs-latency
    Pareto front, and the most accurate point within the deadline (index `best`, None without a deadline)."""

    rule: str
    stat: str
    splits: list[tuple[int, ...]]  # (points,)
    settings: list[dict[str, Any]]  # (points,)
    accuracy: np.ndarray  # (points,)
    latency_s: np.ndarray  # (points,) the statistic
    mean_latency_s: np.ndarray  # (points,)
    pareto: np.ndarray  # (points,) bool
    deadline_s: float | None = None
    best: int | None = None

    def point(self, i: int) -> dict[str, Any]:
        """One point as plain values."""
        return {
            "splits": list(self.splits[i]),
            "settings": self.settings[i],
            "accuracy": float(self.accuracy[i]),
            f"{self.stat}_latency_s": float(self.latency_s[i]),
            "mean_latency_s": float(self.mean_latency_s[i]),
            "pareto": bool(self.pareto[i]),
        }

    def front(self) -> list[dict[str, Any]]:
        """The Pareto points, fastest first."""
        idx = np.flatnonzero(self.pareto)
        return [self.point(i) for i in idx[np.argsort(self.latency_s[idx], kind="stable")]]


def split_assignments(num_exits: int, num_tiers: int) -> list[tuple[int, ...]]:
    """Every way to share `num_exits` exits out over `num_tiers` tiers in order (a tier may hold none), as split
    points."""
    return list(itertools.combinations_with_replacement(range(-1, num_exits), num_tiers - 1))


def search(
    grid: DecisionGrid,
    cum_macs: Sequence[float] | np.ndarray,
    sizes: FeatureSizes,
    dep: Deployment,
    deadline_s: float | None = None,
    stat: str = "mean",
    splits: Sequence[Sequence[int]] | None = None,
    segments: SegmentTimes | None = None,
) -> SearchResult:
    """Try every split assignment of the deployment's tiers (or the given ones) with every setting of the grid;
    return all points, the accuracy-vs-latency Pareto front, and the most accurate point (ties: the faster)
    whose latency statistic meets `deadline_s`. Compute is timed from the MACs or from measured `segments`.
    Raises ConfigError, naming the fastest reachable latency, when no point meets the deadline."""
    from aep_core.exits.solvers import pareto_front

    if stat not in STATS:
        raise ConfigError(f"Unknown latency statistic '{stat}'. Choose one of: {', '.join(STATS)}.")
    e = len(cum_macs)
    if splits is not None:
        assignments = [tuple(int(v) for v in s) for s in splits]
    else:
        assignments = split_assignments(e, dep.num_tiers)
    # (splits, exits)
    lat = np.stack([exit_timings(cum_macs, sizes, dep.with_splits(s), segments).latency_s for s in assignments])
    value = _grid_stat(grid.counts, lat, stat)  # (settings, splits)
    mean = _grid_stat(grid.counts, lat, "mean")
    t_idx, s_idx = np.meshgrid(np.arange(len(grid.settings)), np.arange(len(assignments)), indexing="ij")
    t_idx, s_idx = t_idx.ravel(), s_idx.ravel()
    acc = grid.accuracy[t_idx]
    val = value.ravel()
    res = SearchResult(
        grid.rule,
        stat,
        [assignments[i] for i in s_idx],
        [grid.settings[i] for i in t_idx],
        acc,
        val,
        mean.ravel(),
        pareto_front(val, acc),
        deadline_s,
    )
    if deadline_s is not None:
        if not deadline_s > 0:
            raise ConfigError(f"The latency deadline must be positive, got {deadline_s * 1e3:g} ms.")
        ok = np.flatnonzero(val <= deadline_s * (1 + 1e-12))
        if ok.size == 0:
            fastest = int(np.argmin(val))
            raise ConfigError(
                f"No configuration meets a {stat} latency deadline of {deadline_s * 1e3:.3g} ms: "
                f"the fastest reachable is {val[fastest] * 1e3:.3g} ms "
                f"(splits {list(res.splits[fastest])}, "
                f"{grid.rule} {_describe(res.settings[fastest])})."
            )
        res.best = int(ok[np.lexsort((val[ok], -acc[ok]))[0]])
    return res


def _describe(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k != "weights"}
    text = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in shown.items())
    return text or "(no settings)"
