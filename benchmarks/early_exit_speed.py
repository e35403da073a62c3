"""Benchmark 2: real early exit against the network without exits (same weights, both run by
`aep_core.exits.runtime` on the same inference-prepared copy), with the per-exit thresholds that keep accuracy
within 0.5 points of the final exit. Two operating points per rule, both chosen without test labels:
  - chosen on validation: the cheapest per-exit thresholds that stay within 0.5 points there (what the
    solver gives), then measured on test;
  - certified on validation: the cheapest global threshold whose drop is at most 0.5 points with 90%
    probability (`aep_core.exits.certify`), then measured on test.
Prints throughput ratios at batch 1 and 256 beside the replayed MACs ratio and the oracle's.

    python -m benchmarks.early_exit_speed [--checkpoint assets/models/aep_hybrid.pt]
"""

from __future__ import annotations

import argparse

from aep_core.data import load_dataset
from aep_core.exits.certify import certify_max_drop
from aep_core.exits.rules import ModelExits, get_rule, list_rules, make_rule, oracle
from aep_core.exits.runtime import measure_speedup
from aep_core.exits.solvers import MinAccuracy, accuracy_floor, solve

from ._common import DEFAULT_CHECKPOINT, load_model_and_records, setup


def default_rules() -> list[str]:
    """The first threshold rule of the registry and those that use the trained ensemble weights."""
    names = list_rules(deployable=True, thresholds=True)
    return [n for i, n in enumerate(names) if i == 0 or get_rule(n).uses_ensemble_weights]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--rules", default=",".join(default_rules()), help="comma-separated rules to try")
    ap.add_argument("--max-drop", type=float, default=0.5, help="accuracy drop allowed below the final exit, in points")
    ap.add_argument("--n1", type=int, default=1000, help="test images timed at batch 1")
    ap.add_argument("--n256", type=int, default=2560, help="test images timed at batch 256")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--select",
        default="val,certified",
        help="operating points, comma-separated: val (chosen on validation), certified (certified on validation)",
    )
    ap.add_argument("--confidence", type=float, default=0.9, help="confidence of the certified operating point")
    a = ap.parse_args()
    print(setup(a.threads))
    ckpt, model, meta, val, test = load_model_and_records(a.checkpoint)
    ds = meta.dataset
    bundle = load_dataset(ds.name, None, ds.val_size, ds.val_seed)
    final_acc = float(test.exit_accuracy()[-1])
    bound = oracle(test)
    print(
        f"{ckpt.name}: {model.num_exits} exits, {meta.cost.full_macs / 1e6:.2f} M MACs without exits; "
        f"test final-exit accuracy {100 * final_acc:.2f}% on {test.num_samples}; "
        f"oracle MACs ratio {bound.macs_ratio:.3f} (accuracy {100 * bound.accuracy:.2f}%)"
    )
    targets = {1: 2.0, 256: 1.5}
    floor = accuracy_floor(val, a.max_drop)
    points = {
        "val": (
            "chosen on validation",
            lambda name: solve(val, name, MinAccuracy(floor), test),
            f"thresholds for accuracy >= {100 * floor:.2f}% on val (val final exit - {a.max_drop} points)",
        ),
        "certified": (
            "certified on validation",
            lambda name: certify_max_drop(val, name, a.max_drop, a.confidence, test),
            f"the cheapest global threshold whose drop is <= {a.max_drop} points with "
            f"{100 * a.confidence:g}% confidence, certified on val",
        ),
    }
    verdicts = []
    for where in a.select.split(","):
        if where not in points:
            raise SystemExit(f"--select: unknown operating point '{where}'; choose from {', '.join(points)}.")
        title, choose, wording = points[where]
        print(f"\noperating point {title}: {wording}")
        print(
            f"{'rule':16} {'test acc':>8} {'drop':>6} {'MACs ratio':>10} {'speed-up b1':>11} {'speed-up b256':>13} "
            f"{'MACs speed-up':>13}  samples/s (no exits -> early exit)"
        )
        exits = ModelExits.of_model(model, meta.ensemble_weights)
        for name in a.rules.split(","):
            sol = choose(name)
            rule = make_rule(name, exits, **sol.settings)
            row = {}
            for bs, n in ((1, a.n1), (256, a.n256)):
                x = bundle.test[list(range(min(n, len(bundle.test))))][0]
                m = measure_speedup(model, rule, x, bs, a.rounds)
                row[bs] = (m.without_exits_per_s, m.early_exit_per_s)
            t = sol.test
            drop = 100 * (final_acc - t.accuracy)
            (f1, e1), (f256, e256) = row[1], row[256]
            print(
                f"{name:16} {100 * t.accuracy:7.2f}% {drop:5.2f}p {t.macs_ratio:10.3f} "
                f"{e1 / f1:10.2f}x {e256 / f256:12.2f}x {1 / t.macs_ratio:12.2f}x  b1 {f1:.0f} -> {e1:.0f}, "
                f"b256 {f256:.0f} -> {e256:.0f}"
            )
            met = drop <= a.max_drop + 1e-9 and all(row[bs][1] / row[bs][0] >= r for bs, r in targets.items())
            verdicts.append(f"{name} {title}: {'met' if met else 'not met'}")
    print(
        f"\ntarget (>= 2x at batch 1 and >= 1.5x at batch 256, test accuracy within {a.max_drop} points): "
        + "; ".join(verdicts)
    )
    print("\n(speed-ups are throughput ratios measured in this run; 'MACs speed-up' is the ideal 1 / MACs ratio)")


if __name__ == "__main__":
    main()
