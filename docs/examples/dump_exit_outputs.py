"""Write a per-exit outputs file (docs/BRING_YOUR_OWN.md, "Per-exit outputs from any framework") from a PyTorch
model that has no exits of its own: forward hooks on chosen modules capture what those modules hand on, a small
linear head per hooked module (trained here on the frozen model's features) turns it into class scores, and the
model's own output is the last exit.

As shipped it runs on CPU in seconds on the Fashion-MNIST slice in assets/ (1000 test images, 28x28): a small
CNN trained briefly stands in for your trained model, and the slice is divided into a part that trains it and
the heads, a val part and a test part. For your own model, replace `make_model` (load your weights instead of
training), `load_data` and EXIT_MODULES (names from `dict(model.named_modules())`).

    python docs/examples/dump_exit_outputs.py --out runs/byo/outputs.npz            # costs in MACs
    python docs/examples/dump_exit_outputs.py --out runs/byo/outputs.csv --cost ms  # CSV + outputs.json

Nothing here imports the early-exit tool: the file is plain numpy (or CSV/Parquet through pandas).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

SLICE = Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_slice.npz"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
EXIT_MODULES = ["block1", "block2"]  # the modules whose outputs feed an early exit; the model's output is the last
SAMPLE_SHAPE = (1, 28, 28)  # one input: channels, height, width
TRAIN, VAL = 400, 300  # samples of the slice that train the model and its heads, then the val part; the rest is test


def make_model(num_classes: int = 10) -> nn.Module:
    """The model exits are added to: any nn.Module. Here a small CNN; yours would load its trained weights."""

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(
        OrderedDict(
            block1=block(1, 8),
            block2=block(8, 16),
            block3=block(16, 32),
            head=nn.Sequential(nn.Flatten(), nn.Linear(32 * 3 * 3, num_classes)),
        )
    )


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, 28, 28) normalised, and labels (n,): the shipped Fashion-MNIST slice."""
    with np.load(SLICE, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    x = torch.from_numpy(images).float().div(255).sub(0.2860).div(0.3530)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


def fit(params, loss_of, n: int, epochs: int, batch: int = 32, lr: float = 1e-2) -> None:
    """Adam on `loss_of(rows)` over shuffled mini-batches of rows 0..n-1."""
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        for rows in torch.randperm(n).split(batch):
            opt.zero_grad()
            loss_of(rows).backward()
            opt.step()


class Exits:
    """Forward hooks on `names` keep each module's latest output; `heads[k]` maps the k-th one to class scores."""

    def __init__(self, model: nn.Module, names: list[str], num_classes: int) -> None:
        modules = dict(model.named_modules())
        self.features: list[torch.Tensor | None] = [None] * len(names)
        self.on_hook = None  # called with the exit index when a hooked module has run (cost measurements)
        for k, n in enumerate(names):
            modules[n].register_forward_hook(self._keep(k))
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *SAMPLE_SHAPE))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * f.shape[1], num_classes))
            for f in self.features
        )

    def _keep(self, k: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.features[k] = output
            if self.on_hook is not None:
                self.on_hook(k)

        return hook

    def feature_sizes(self) -> list[int]:
        """Values per sample in each hooked module's output (what a split after that exit sends)."""
        return [int(f[0].numel()) for f in self.features]


@torch.no_grad()
def exit_logits(model: nn.Module, exits: Exits, x: torch.Tensor) -> np.ndarray:
    """(exits, n, classes): every early exit's logits, then the model's own."""
    model.eval()
    exits.heads.eval()
    final = model(x)
    return np.stack([h(f).numpy() for h, f in zip(exits.heads, exits.features, strict=True)] + [final.numpy()])


def macs_costs(model: nn.Module, exits: Exits) -> tuple[list[int], int]:
    """(cumulative MACs of a sample answered at each exit, MACs of the model without exits), counted by
    torch's FlopCounterMode (2 FLOPs per MAC) at batch 1: the model up to each hooked module plus the heads of
    that exit and the exits before it."""
    counter = FlopCounterMode(display=False)
    at_hook: list[int] = []
    exits.on_hook = lambda k: at_hook.append(counter.get_total_flops())
    with torch.no_grad(), counter:
        model(torch.zeros(1, *SAMPLE_SHAPE))
    exits.on_hook = None
    full = counter.get_total_flops()
    heads = []
    for h, f in zip(exits.heads, exits.features, strict=True):
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            h(f[:1])
        heads.append(c.get_total_flops())
    heads_before = np.cumsum([0, *heads])  # heads run by a sample that reaches exit k: those of exits < k
    cum = [at_hook[k] + heads_before[k + 1] for k in range(len(heads))] + [full + heads_before[-1]]
    return [int(v) // 2 for v in cum], full // 2


@torch.no_grad()
def ms_costs(model: nn.Module, exits: Exits, repeats: int = 30) -> tuple[list[float], float]:
    """(cumulative milliseconds of a sample answered at each exit, milliseconds of the model without exits),
    medians over `repeats` runs at batch 1, each head run as soon as its module has."""
    model.eval()
    exits.heads.eval()
    x = torch.zeros(1, *SAMPLE_SHAPE)
    with_heads, plain = [], []
    for _ in range(repeats + 3):  # the first 3 runs warm up
        stamps: list[float] = []

        def run_head(k: int, stamps: list[float] = stamps) -> None:
            exits.heads[k](exits.features[k])
            stamps.append(time.perf_counter())

        exits.on_hook = run_head
        t0 = time.perf_counter()
        model(x)
        stamps.append(time.perf_counter())
        with_heads.append([1e3 * (t - t0) for t in stamps])
        exits.on_hook = None
        t0 = time.perf_counter()
        model(x)
        plain.append(1e3 * (time.perf_counter() - t0))
    return np.median(with_heads[3:], axis=0).tolist(), float(np.median(plain[3:]))


def write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The outputs file: a .npz, or a .csv/.parquet (one row per sample) with the per-file values in a .json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez_compressed(path, **arrays)
        return
    import pandas as pd

    kind = "logit" if "logits" in arrays else "prob"
    scores = arrays.get("logits", arrays.get("probs"))
    e, _, c = scores.shape
    table = {"split": arrays["split"], "label": arrays["labels"]}
    table |= {f"{kind}_{i}_{j}": scores[i, :, j] for i in range(e) for j in range(c)}
    df = pd.DataFrame(table)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    per_file = {k: np.asarray(v).tolist() for k, v in arrays.items() if k not in ("logits", "probs", "labels", "split")}
    path.with_suffix(".json").write_text(json.dumps(per_file, indent=1) + "\n")


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    """Train the stand-in model and its exit heads, then write their outputs on the val and test parts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="outputs file: .npz, .csv or .parquet")
    p.add_argument("--cost", choices=("macs", "ms"), default="macs", help="count MACs or time each exit (batch 1)")
    p.add_argument("--probs", action="store_true", help="write probabilities instead of logits")
    p.add_argument("--epochs", type=int, default=8, help="epochs training the stand-in model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    x, y = load_data()
    train, rest = slice(0, TRAIN), slice(TRAIN, None)

    model = make_model(len(CLASS_NAMES))  # stands in for your trained model: trained here in a few seconds
    model.train()
    xt, yt = x[train], y[train]
    fit(model.parameters(), lambda r: nn.functional.cross_entropy(model(xt[r]), yt[r]), TRAIN, a.epochs)

    exits = Exits(model, EXIT_MODULES, len(CLASS_NAMES))
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    with torch.no_grad():
        model(x[train])
    feats = [f.detach() for f in exits.features]  # the frozen model's features of the training part
    exits.heads.train()

    def heads_loss(rows: torch.Tensor) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(h(f[rows]), yt[rows]) for h, f in zip(exits.heads, feats, strict=True))

    fit(exits.heads.parameters(), heads_loss, TRAIN, epochs=20)

    logits = exit_logits(model, exits, x[rest])  # (exits, n, classes)
    if a.cost == "macs":
        cum_cost, full_cost = macs_costs(model, exits)
    else:
        cum_cost, full_cost = ms_costs(model, exits)
    n_rest = len(y) - TRAIN
    arrays = {
        "labels": y[rest].numpy(),
        "split": np.array(["val"] * VAL + ["test"] * (n_rest - VAL)),
        "cum_cost": np.asarray(cum_cost),
        "cost_unit": np.asarray(a.cost),
        "full_cost": np.asarray(full_cost),
        "class_names": np.array(CLASS_NAMES),
        "feature_sizes": np.array([*exits.feature_sizes(), len(CLASS_NAMES)]),
        "input_size": np.asarray(int(np.prod(SAMPLE_SHAPE))),
        "version": np.asarray(1),
    }
    if a.probs:
        arrays["probs"] = torch.softmax(torch.from_numpy(logits), -1).numpy()
    else:
        arrays["logits"] = logits
    write(Path(a.out), arrays)
    acc = (logits.argmax(-1) == arrays["labels"][None]).mean(1)
    print(f"wrote {a.out}: {logits.shape[0]} exits, {VAL} val + {n_rest - VAL} test samples")
    print("accuracy per exit (val and test): " + " ".join(f"{100 * v:.1f}%" for v in acc))
    unit = "MACs" if a.cost == "macs" else "ms"
    print(
        f"cumulative cost per exit ({unit}): {', '.join(f'{c:.4g}' for c in cum_cost)}; without exits {full_cost:.4g}"
    )
    return arrays


if __name__ == "__main__":
    main()
