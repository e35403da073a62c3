"""Compute cost of an early-exit network: MACs (counted by torch.utils.flop_counter) and parameters
per exit, the cumulative cost of reaching each exit, and wall-clock latency.

MACs cover convolutions and matrix products (the FLOP formulas of torch.utils.flop_counter, divided by 2);
normalisation, activations and pooling are not counted, as in the usual MACs convention.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class _FlopCounter(TorchDispatchMode):
    """Sums the FLOPs of the operators run in this thread inside the context.

    FlopCounterMode also attributes FLOPs to modules through process-wide module hooks, which reach into
    other threads' forward and backward passes (a concurrent Captum backward then fails); a dispatch mode
    alone is thread-local, so counting here never touches another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry:
            # Composite operators are counted through the operators they decompose into.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if packet in flop_registry:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def count_macs(fn: Callable[..., object], *args: object) -> int:
    """Multiply-accumulates of one call of `fn(*args)`, counted in the calling thread only."""
    with torch.no_grad(), _FlopCounter() as counter:
        fn(*args)
    return counter.flops // 2


def count_params(*modules: nn.Module) -> int:
    """Number of parameters of the given modules together."""
    return sum(p.numel() for m in modules for p in m.parameters())


@dataclass
class ExitCost:
    """Cost of one exit. `cum_*` is what a sample pays to be answered there: every segment up to it and
    every head evaluated on the way (its own included)."""

    exit: int
    block: int
    segment_macs: int
    head_macs: int
    cum_macs: int
    segment_params: int
    head_params: int
    cum_params: int
    macs_fraction: float  # cum_macs / MACs of the network without exits


@dataclass
class CostReport:
    """Per-exit costs and the reference cost of the same network without early exits."""

    exits: list[ExitCost]
    full_macs: int  # all blocks + final classifier, no early exits
    full_params: int
    with_exits_params: int

    def to_dict(self) -> dict:
        """Plain-type view for checkpoint metadata."""
        return {
            "exits": [asdict(e) for e in self.exits],
            "full_macs": self.full_macs,
            "full_params": self.full_params,
            "with_exits_params": self.with_exits_params,
        }

    @property
    def cum_macs(self) -> list[int]:
        """MACs spent by a sample answered at each exit."""
        return [e.cum_macs for e in self.exits]

    def macs_split(self) -> tuple[list[float], list[float]]:
        """What a sample answered at each exit pays, in two parts as shares of the network without exits: the
        network's own layers it ran (the blocks up to the exit, and the final classifier at the last exit), and
        the early exits' heads evaluated on the way (its own included), a cost the network without exits does not
        have. The two add up to each exit's `macs_fraction`."""
        last = len(self.exits) - 1
        network, heads = [], []
        blocks = extra = 0
        for e in self.exits:
            blocks += e.segment_macs
            if e.exit < last:
                extra += e.head_macs
            own = blocks + (e.head_macs if e.exit == last else 0)
            network.append(own / self.full_macs)
            heads.append(extra / self.full_macs)
        return network, heads


def exit_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> CostReport:
    """Per-exit MACs and parameters of an EarlyExitNet for one input of shape (channels, height, width)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    rows: list[ExitCost] = []
    cum_macs = cum_params = 0
    h = x
    with torch.no_grad():
        for k in range(model.num_exits):
            seg_macs = count_macs(model.forward_segment, h, k)
            h = model.forward_segment(h, k)
            head_macs = count_macs(model.forward_head, h, k)
            seg_modules = [model.backbone.blocks[b] for b in model.segment_blocks(k)]
            if k == 0:
                seg_modules.append(model.backbone.stem)
            seg_params = count_params(*seg_modules)
            head_params = count_params(model.heads[k])
            cum_macs += seg_macs + head_macs
            cum_params += seg_params + head_params
            rows.append(
                ExitCost(
                    k, model.exit_blocks[k], seg_macs, head_macs, cum_macs, seg_params, head_params, cum_params, 0.0
                )
            )
    full_macs = sum(r.segment_macs for r in rows) + rows[-1].head_macs
    full_params = sum(r.segment_params for r in rows) + rows[-1].head_params
    for r in rows:
        r.macs_fraction = r.cum_macs / full_macs
    model.train(was_training)
    return CostReport(rows, full_macs, full_params, cum_params)


def cumulative_block_macs(backbone: nn.Module, input_shape: tuple[int, int, int]) -> list[int]:
    """MACs of the backbone from the input up to and including each block (stem counted in block 0)."""
    was_training = backbone.training
    backbone.eval()
    h = torch.zeros(1, *input_shape)
    total = count_macs(backbone.stem, h)
    with torch.no_grad():
        h = backbone.stem(h)
    out = []
    for block in backbone.blocks:
        total += count_macs(block, h)
        with torch.no_grad():
            h = block(h)
        out.append(total)
    backbone.train(was_training)
    return out


def measure_latency(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn()` in seconds, after a few warm-up calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


# ---- comparing latencies ------------------------------------------------------------------------------


def _quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly between neighbours."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Repeated timings of one function in seconds (or per-round ratios of two, unitless): the samples in round
    order, their median, quartiles and extremes."""

    samples: tuple[float, ...]
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: list[float] | tuple[float, ...]) -> LatencyStats:
        """The summary of one or more samples."""
        if not samples:
            raise ValueError("LatencyStats needs at least one sample.")
        ordered = sorted(float(v) for v in samples)
        return cls(
            tuple(float(v) for v in samples),
            _quantile(ordered, 0.5),
            _quantile(ordered, 0.25),
            _quantile(ordered, 0.75),
            ordered[0],
            ordered[-1],
        )

    def overlaps(self, other: LatencyStats) -> bool:
        """Whether the interquartile ranges of the two overlap: their difference is within the spread."""
        return self.q1 <= other.q3 and other.q1 <= self.q3


def compare_latency(
    fns: dict[str, Callable[[], object]],
    rounds: int = 30,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, LatencyStats]:
    """Wall time per call of each function, timed together: after `warmup` untimed rounds, each of `rounds`
    rounds calls every function once, in an order that rotates from round to round; one sample per function and
    round."""
    if not fns:
        raise ValueError("compare_latency needs at least one function.")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"compare_latency needs rounds >= 1 and warmup >= 0, got {rounds} and {warmup}.")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            # Rotating the order spreads the advantage of going first (warm caches) and any drift of the machine's
            # speed evenly over the functions, so a difference between them is theirs.
            start = r % len(names)
            for name in names[start:] + names[:start]:
                t0 = clock()
                fns[name]()
                elapsed = clock() - t0
                if r >= warmup:
                    samples[name].append(elapsed)
    return {name: LatencyStats.of(samples[name]) for name in names}


def latency_ratio(a: LatencyStats, b: LatencyStats) -> LatencyStats:
    """Per-round ratio a / b of two functions timed in the same rounds by compare_latency (below 1: a is faster);
    pairing the rounds cancels what slowed both alike."""
    if len(a.samples) != len(b.samples):
        raise ValueError(f"latency_ratio needs timings of the same rounds, got {len(a.samples)} and {len(b.samples)}.")
    return LatencyStats.of([x / y for x, y in zip(a.samples, b.samples, strict=True)])
