"""The training loop: one readable loop for every method.

for each epoch: method.prepare_epoch -> for each batch: augment, forward all exits, method.loss,
backward, step, schedule -> per-exit validation accuracy -> callback.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import Dataset

from ..data import augment_shift_flip, make_loader, set_loader_epoch
from ..errors import ConfigError
from ..models import EarlyExitNet
from .losses import ensemble_probs
from .methods import Method


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd (momentum 0.9, Nesterov) | adam
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True  # random shift (2 px) and horizontal flip
    workers: int = 0
    device: str = "cpu"
    threads: int | None = None
    channels_last: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise ConfigError for impossible settings."""
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and the learning rate > 0.")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"Optimizer must be 'sgd' or 'adam', got '{self.optimizer}'.")


@dataclass
class EpochStats:
    """What one epoch produced: mean training loss, per-exit train and validation accuracy."""

    epoch: int
    loss: float
    train_acc: list[float]
    val_acc: list[float]
    val_ensemble_acc: list[float]
    ensemble_weights: list[float]
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    """History of a finished run."""

    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain-type view for checkpoint metadata."""
        return {"history": [asdict(h) for h in self.history], "seconds": self.seconds}


@torch.no_grad()
def evaluate_exits(model: EarlyExitNet, dataset: Dataset, weights: list[float], batch_size: int = 512,
                   device: str = "cpu") -> tuple[list[float], list[float]]:
    """Per-exit accuracy and AEP-ensemble accuracy (ensemble of exits 0..k for each k) on a dataset."""
    model.eval()
    n_exits = model.num_exits
    correct = torch.zeros(n_exits)
    ens_correct = torch.zeros(n_exits)
    total = 0
    w = torch.tensor(weights, device=device)
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        out = model(x)
        for k, z in enumerate(out.logits):
            correct[k] += (z.argmax(1) == y).sum().item()
            ens_correct[k] += (ensemble_probs(out.logits, w, k).argmax(1) == y).sum().item()
        total += len(y)
    return (correct / max(total, 1)).tolist(), (ens_correct / max(total, 1)).tolist()


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or Adam, with decoupled-from-nothing plain weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _progress(epoch: int, epochs: int, step: int, steps: int, loss: float, t0: float) -> None:
    width = 24
    done = int(width * step / steps)
    rate = step / max(time.perf_counter() - t0, 1e-9)
    sys.stderr.write(f"\repoch {epoch + 1}/{epochs} [{'#' * done}{'.' * (width - done)}] {step}/{steps} "
                     f"loss {loss:.3f} {rate:.1f} it/s")
    sys.stderr.flush()


def train(model: EarlyExitNet, method: Method, train_set: Dataset, val_set: Dataset, cfg: TrainConfig,
          callback: Callable[[EpochStats], None] | None = None,
          on_batch: Callable[[int, int, int], None] | None = None) -> TrainResult:
    """Train `model` with `method`; after each epoch, report per-exit accuracy on `val_set` to `callback`.
    `on_batch(epoch, step, steps)` is called after every optimiser step (for progress bars)."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    method.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in list(model.parameters()) + list(method.parameters())]
    opt = make_optimizer(params, cfg)
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / (cfg.epochs * steps), 1.0))))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    result = TrainResult()
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        method.prepare_epoch(model, epoch)
        set_loader_epoch(loader, epoch, cfg.seed)
        t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        correct = torch.zeros(model.num_exits)
        for step, (x, y) in enumerate(loader, 1):
            if cfg.augment:
                x = augment_shift_flip(x, aug_gen)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss = method.loss(out, y, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for k, z in enumerate(out.logits):
                    correct[k] += (z.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            if cfg.progress and (step % 20 == 0 or step == steps):
                _progress(epoch, cfg.epochs, step, steps, loss_sum / seen, t0)
            if on_batch:
                on_batch(epoch, step, steps)
        train_seconds = time.perf_counter() - t0
        weights = method.ensemble_weights()
        val_acc, val_ens = evaluate_exits(model, val_set, weights, device=str(device))
        stats = EpochStats(epoch + 1, loss_sum / max(seen, 1), (correct / max(seen, 1)).tolist(), val_acc, val_ens,
                           weights, time.perf_counter() - t0, seen / train_seconds)
        result.history.append(stats)
        if cfg.progress:
            sys.stderr.write("\n")
            print(f"epoch {stats.epoch}: loss {stats.loss:.4f} | val acc per exit "
                  + " ".join(f"{a:.4f}" for a in val_acc) + f" | ensemble {val_ens[-1]:.4f} | "
                  f"{stats.images_per_s:.0f} img/s", flush=True)
        if callback:
            callback(stats)
    result.seconds = time.perf_counter() - t_start
    model.eval()
    return result
