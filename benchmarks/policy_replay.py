"""Benchmark 1: exit-rule replay speed on 10,000 samples x all exits, one setting of every registered rule
and a 100-point sweep of every threshold rule, against a per-sample Python loop.

    python -m benchmarks.policy_replay [--checkpoint assets/models/aep_hybrid.pt]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.rules import ModelExits, list_rules, replay_rule
from aep_core.exits.solvers import pareto_sweep

from ._common import DEFAULT_CHECKPOINT, checkpoint_or_exit, setup


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and fastest wall time of fn() in seconds (the fastest is the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def loop_max_probability(rec: ExitRecord, t: float) -> tuple[list[int], list[int]]:
    """The max-probability rule written as a per-sample Python loop (the reference for the speed-up)."""
    idx, pred = [], []
    last = rec.num_exits - 1
    for i in range(rec.num_samples):
        for k in range(rec.num_exits):
            z = rec.logits[k, i]
            p = np.exp(z - z.max())
            p /= p.sum()
            if k == last or p.max() >= t:
                idx.append(k)
                pred.append(int(p.argmax()))
                break
    return idx, pred


def to_size(rec: ExitRecord, n: int) -> ExitRecord:
    """The record's samples repeated or cut to exactly n."""
    reps = -(-n // rec.num_samples)
    confidences = None if rec.confidences is None else np.tile(rec.confidences, (1, reps))[:, :n]
    return ExitRecord(
        np.tile(rec.logits, (1, reps, 1))[:, :n],
        np.tile(rec.labels, reps)[:n],
        rec.cum_macs,
        rec.full_macs,
        confidences,
        rec.info,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=50)
    a = ap.parse_args()
    print(setup(1))
    src = evaluation_path(checkpoint_or_exit(a.checkpoint), "test")
    rec = to_size(load_evaluation(src), a.samples)
    print(f"record: {src} -> {rec.num_samples} samples x {rec.num_exits} exits x {rec.logits.shape[-1]} classes")
    model = ModelExits.of_record(rec)
    print(f"\n{'rule (default setting)':22} {'ms / setting: median':>21} {'fastest':>8}   (target < 5 ms)")
    for name in list_rules(model=model):  # each rule at its registered default (ensemble: the trained weights)
        med, best = timed(partial(replay_rule, rec, name), a.repeats)
        print(f"{name:22} {1e3 * med:21.2f} {1e3 * best:8.2f}")
    print(f"\n{'sweep (100 points)':22} {'ms / sweep: median':>21} {'fastest':>8}   (target < 200 ms)")
    for name in list_rules(thresholds=True, model=model):
        med, best = timed(partial(pareto_sweep, rec, name, points=100), max(3, a.repeats // 5))
        print(f"{name:22} {1e3 * med:21.2f} {1e3 * best:8.2f}")
    vec = timed(partial(replay_rule, rec, "max_probability", thresholds=0.9), a.repeats)[0]
    t0 = time.perf_counter()
    idx, pred = loop_max_probability(rec, 0.9)
    loop = time.perf_counter() - t0
    r = replay_rule(rec, "max_probability", thresholds=0.9)
    same = np.array_equal(r.exit_index, idx) and np.array_equal(r.prediction, pred)
    print(
        f"\nper-sample Python loop, max_probability: {1e3 * loop:.1f} ms; vectorised {1e3 * vec:.2f} ms; "
        f"speed-up {loop / vec:.0f}x (medians; same decisions: {same})"
    )


if __name__ == "__main__":
    main()
