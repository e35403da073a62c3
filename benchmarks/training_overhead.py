"""Benchmark 4: training throughput (images/s) of AEP joint training (all exits, hybrid weights)
against baseline training of the same backbone (final classifier only). Target: at most 15% slower.

    python -m benchmarks.training_overhead [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import time

import torch

from aep_core.cost import exit_costs
from aep_core.data import augment_shift_flip, load_dataset, make_loader
from aep_core.models import ModelSpec, build_model
from aep_core.training import MethodSettings, TrainConfig
from aep_core.training.job import TrainJob
from aep_core.training.loop import make_optimizer
from aep_core.training.methods import build_method, get_method

from ._common import setup


def images_per_s(method_name: str, batches: list[tuple[torch.Tensor, torch.Tensor]], spec_kw: dict) -> float:
    """Images/s of the training step the loop runs (augment, forward, method loss, backward, step)."""
    kind = get_method(method_name)
    spec = ModelSpec(**spec_kw, head=kind.head, placement="blocks" if kind.uses_early_exits else [])
    torch.manual_seed(0)
    model = build_model(spec).train()
    costs = exit_costs(model, (spec.in_channels, spec.image_size, spec.image_size))
    method = build_method(MethodSettings(method_name, "hybrid"), model, [e.macs_fraction for e in costs.exits], 1)
    model.train()
    opt = make_optimizer(list(model.parameters()) + list(method.parameters()), TrainConfig())
    gen = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = method.loss(model(augment_shift_flip(x, gen)), y, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(*batches[0])  # warm-up
    t0 = time.perf_counter()
    for x, y in batches[1:]:
        step(x, y)
    return sum(len(y) for _, y in batches[1:]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or fashion-mnist-slice")
    ap.add_argument("--model", default="compact_cnn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--rounds", type=int, default=4, help="alternating runs of each; the best is kept")
    ap.add_argument("--head-pool", type=int, default=TrainJob().head_pool, help="exit heads' pooled grid (as trained)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(setup(a.threads))
    b = load_dataset(a.dataset, limit=a.batch_size * (a.steps + 1))
    batches = list(make_loader(b.train, a.batch_size, shuffle=True))[: a.steps + 1]
    spec_kw = {
        "backbone": a.model,
        "in_channels": b.in_channels,
        "image_size": b.image_size,
        "num_classes": len(b.class_names),
        "head_pool": a.head_pool,
    }
    rates: dict[str, list[float]] = {"baseline": [], "aep": []}
    for _ in range(a.rounds):  # alternate so background load hits both alike
        for m in rates:
            rates[m].append(images_per_s(m, batches, spec_kw))
    base, aep = max(rates["baseline"]), max(rates["aep"])
    print(f"{a.model} on {a.dataset}, batch {a.batch_size}, {a.steps} steps x {a.rounds} rounds (best kept)")
    print(f"baseline (final classifier only): {base:7.1f} images/s   runs: {[round(r) for r in rates['baseline']]}")
    print(f"AEP joint (all exits, hybrid):    {aep:7.1f} images/s   runs: {[round(r) for r in rates['aep']]}")
    print(f"AEP / baseline throughput {aep / base:.3f} -> {100 * (1 - aep / base):.1f}% slower (target: at most 15%)")


if __name__ == "__main__":
    main()
