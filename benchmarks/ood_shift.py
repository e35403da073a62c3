"""Benchmark: how well the "I don't know" flag tells shifted inputs from in-distribution test images.

For each shifted set (rotated, inverted and noise images made from the test images; blank, near-blank,
graded, pen-stroke and Gaussian-noise images; thin strips prepared as the app prepares an upload) it prints
the AUROC of the old score (exits' disagreement + final confidence) and of the new one (Mahalanobis distance
of all exits' logits to the nearest class mean, inf where the image's own pixels or shape rule it out; "logits
only": without those image checks), and the share flagged by each at its threshold. Both thresholds come from
the validation outputs only; the false-flag rate is measured on the held-out validation half and on the test
images.

    python -m benchmarks.ood_shift [--checkpoint assets/models/aep_hybrid.pt] [--n 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from aep_core.analysis import ood
from aep_core.data import load_slice

from ._common import DEFAULT_CHECKPOINT, load_model_and_records, setup


def shifted_sets(images: torch.Tensor, n: int, seed: int) -> dict[str, tuple[torch.Tensor, list | None]]:
    """Every shifted set as (uint8 images, upload sizes or None), n images each (strips: n // 4)."""
    base = images[:n]
    sets: dict[str, tuple[torch.Tensor, list | None]] = {k: (ood.shift_images(base, k, seed), None) for k in ood.SHIFTS}
    sets.update({k: (ood.synthetic_images(base, k, seed), None) for k in ood.SYNTHETIC})
    size = images.shape[-1]
    sets["strips"] = ood.thin_strips(max(n // 4, 6), size, 1 if images.ndim == 3 else images.shape[1], seed)
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--n", type=int, default=200, help="images per shifted set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    print(setup(a.threads))
    t0 = time.perf_counter()
    ckpt, model, meta, val, test = load_model_and_records(a.checkpoint)
    d = meta.dataset
    test_images = torch.from_numpy(load_slice()["images"])  # (1000, 28, 28): the shipped test slice
    logits = lambda x: ood.exit_logits(model, x, d.mean, d.std)  # noqa: E731

    old_thr = ood.ood_threshold(ood.ood_score(val.logits))
    flag = ood.flag_threshold(val, None)
    assert flag is not None and flag.gaussians is not None
    _, held = ood.fit_split(val.num_samples)
    val_flagged = float((flag.scores(val.logits[:, held]) > flag.value).mean())

    in_logits = logits(test_images)
    old_in = ood.ood_score(in_logits)
    new_in = flag.scores(in_logits, test_images.numpy())
    print(f"model {ckpt.name}; in-distribution: {len(test_images)} Fashion-MNIST test images (shipped slice)")
    print(f"old threshold {old_thr:.4f}: the 95th percentile of the old score on {val.num_samples:,} validation images")
    print(f"new threshold {flag.value:.2f}: {flag.description}")
    test_flagged = float((flag.scores(test.logits) > flag.value).mean())
    print(
        f"false-flag rate: held-out validation half {100 * val_flagged:.1f}%, test slice "
        f"{100 * float((new_in > flag.value).mean()):.1f}% (old score: {100 * float((old_in > old_thr).mean()):.1f}%), "
        f"all {test.num_samples:,} test images (logits only, from the evaluation file) {100 * test_flagged:.1f}%"
    )
    print(
        f"{'shifted set':<13} {'n':>4} {'AUROC old':>10} {'AUROC new':>10} {'logits only':>12} "
        f"{'flagged old %':>14} {'flagged new %':>14}"
    )
    logits_in = flag.scores(in_logits)
    blank_old, blank_new = [], []
    for kind, (images, sizes) in shifted_sets(test_images, a.n, a.seed).items():
        lg = logits(images)
        old, new = ood.ood_score(lg), flag.scores(lg, images.numpy(), sizes)
        if kind in ("uniform", "near-uniform"):
            blank_old.append(old)
            blank_new.append(new)
        print(
            f"{kind:<13} {len(images):>4} {ood.auroc(old_in, old):>10.3f} {ood.auroc(new_in, new):>10.3f} "
            f"{ood.auroc(logits_in, flag.scores(lg)):>12.3f} "
            f"{100 * float((old > old_thr).mean()):>14.1f} {100 * float((new > flag.value).mean()):>14.1f}"
        )
    old, new = np.concatenate(blank_old), np.concatenate(blank_new)
    print(f"{'uniform+near':<13} {len(old):>4} {ood.auroc(old_in, old):>10.3f} {ood.auroc(new_in, new):>10.3f}")

    one, image = in_logits[:, 0], test_images[0].numpy()
    reps = 2000
    t = time.perf_counter()
    for _ in range(reps):
        flag.judge(one, image, (28, 28))
    per_image = (time.perf_counter() - t) / reps
    print(f"cost of the verdict on one image (after the forward pass): {1e3 * per_image:.3f} ms")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
