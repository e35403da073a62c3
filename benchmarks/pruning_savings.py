"""Benchmark 3: AEP-pruned against unpruned: parameter, MACs and latency ratios (batch 1 and 256),
and test accuracy, with the cut chosen on validation.

    python -m benchmarks.pruning_savings [--checkpoint assets/models/aep_hybrid.pt] [--tolerance 0.5]
"""

from __future__ import annotations

import argparse

from aep_core.analysis.pruning import choose_cut, prune_model, prune_report

from ._common import DEFAULT_CHECKPOINT, load_model_and_records, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--tolerance", type=float, default=0.0, help="smallest cut within this many points of the best")
    ap.add_argument("--cut", type=int, default=None, help="force this cut")
    ap.add_argument("--repeats", type=int, default=40, help="latency repeats at batch 1 (a quarter at batch 256)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(setup(a.threads))
    ckpt, model, meta, val, test = load_model_and_records(a.checkpoint)
    w = meta.ensemble_weights
    cut = choose_cut(val, w, a.tolerance / 100) if a.cut is None else a.cut
    pruned, pmeta = prune_model(model, meta, cut)
    rep = prune_report(model, meta, pruned, pmeta, val, test, latency_repeats=a.repeats)
    print(f"{ckpt.name}: ensemble weights {[round(v, 3) for v in w]}\n")
    print(rep.format())
    lat = rep.latency_ms or {}
    print(
        "\nratios pruned / network without exits: "
        f"params {rep.params_pruned / rep.params_full:.3f}, MACs {rep.macs_pruned / rep.macs_full:.3f}, "
        + ", ".join(f"latency b{b} {lat[f'pruned@{b}'] / lat[f'full@{b}']:.3f}" for b in (1, 256))
    )
    print(
        "ratios pruned / unpruned with all exits: "
        f"params {rep.params_pruned / rep.params_with_exits:.3f}, MACs {rep.macs_pruned / rep.macs_with_exits:.3f}, "
        + ", ".join(f"latency b{b} {lat[f'pruned@{b}'] / lat[f'with_exits@{b}']:.3f}" for b in (1, 256))
    )
    print("(AEP paper, hybrid weighting: up to -41% parameters, -18% MACs, -16% latency)")


if __name__ == "__main__":
    main()
