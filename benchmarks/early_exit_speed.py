"""Benchmark 2: real early exit against the network without exits (same weights), at the per-exit
thresholds chosen on validation to keep accuracy within 0.5 points of the final exit.
Prints throughput ratios at batch 1 and 256 beside the replayed MACs ratio and the oracle's.

    python -m benchmarks.early_exit_speed [--checkpoint assets/models/aep_hybrid.pt]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from aep_core.data import load_dataset
from aep_core.policies import make_rule, oracle
from aep_core.runtime import EarlyExitRunner, run_without_exits
from aep_core.thresholds import accuracy_floor, solve_accuracy

from ._common import DEFAULT_CHECKPOINT, load_model_and_records, setup


def throughput(model, rule, x: torch.Tensor, batch_size: int, rounds: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Best-of-rounds samples/s of the network without exits and of the early-exit runner, alternating
    the two so background load hits both alike; and their predictions."""
    runner = EarlyExitRunner(model, rule)
    run_without_exits(model, x[: 4 * batch_size], batch_size)  # warm-up
    runner.run(x[: 4 * batch_size], batch_size)
    full_t, ee_t = [], []
    for _ in range(rounds):
        full_pred, t = run_without_exits(model, x, batch_size)
        full_t.append(t)
        res = runner.run(x, batch_size)
        ee_t.append(res.seconds)
    return len(x) / min(full_t), len(x) / min(ee_t), full_pred, res.prediction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--rules", default="max_probability,aep_ensemble", help="comma-separated rules to try")
    ap.add_argument("--max-drop", type=float, default=0.5, help="accuracy drop allowed below the final exit, in points")
    ap.add_argument("--n1", type=int, default=1000, help="test images timed at batch 1")
    ap.add_argument("--n256", type=int, default=2560, help="test images timed at batch 256")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(setup(a.threads))
    ckpt, model, meta, val, test = load_model_and_records(a.checkpoint)
    ds = meta["dataset"]
    bundle = load_dataset(ds["name"], None, ds.get("val_size"), ds.get("val_seed", 0))
    final_acc = float(test.exit_accuracy()[-1])
    print(f"{ckpt.name}: {model.num_exits} exits, {meta['cost']['full_macs'] / 1e6:.2f} M MACs without exits; "
          f"test final-exit accuracy {100 * final_acc:.2f}% on {test.num_samples}; "
          f"oracle MACs ratio {oracle(test).macs_ratio:.3f} (accuracy {100 * oracle(test).accuracy:.2f}%)")
    floor = accuracy_floor(val, a.max_drop)
    print(f"thresholds chosen on validation for accuracy >= {100 * floor:.2f}% (val final exit - {a.max_drop} points)\n")
    print(f"{'rule':16} {'test acc':>8} {'drop':>6} {'MACs ratio':>10} {'speed-up b1':>11} {'speed-up b256':>13} "
          f"{'MACs speed-up':>13}  samples/s (no exits -> early exit)")
    for name in a.rules.split(","):
        sol = solve_accuracy(val, name, floor, test)
        rule = make_rule(name, model.num_exits, model.has_confidence, **sol.settings)
        row = []
        for bs, n in ((1, a.n1), (256, a.n256)):
            x = bundle.test[list(range(min(n, len(bundle.test))))][0]
            f, e, fp, ep = throughput(model, rule, x, bs, a.rounds)
            row.append((f, e))
        t = sol.test
        (f1, e1), (f256, e256) = row
        print(f"{name:16} {100 * t.accuracy:7.2f}% {100 * (final_acc - t.accuracy):5.2f}p {t.macs_ratio:10.3f} "
              f"{e1 / f1:10.2f}x {e256 / f256:12.2f}x {1 / t.macs_ratio:12.2f}x  b1 {f1:.0f} -> {e1:.0f}, "
              f"b256 {f256:.0f} -> {e256:.0f}")
    print("\n(speed-ups are throughput ratios measured in this run; 'MACs speed-up' is the ideal 1 / MACs ratio)")


if __name__ == "__main__":
    main()
