"""The training loop: one readable loop for every method, in one process or under DDP.

for each epoch: method.prepare_epoch -> for each batch: augment, forward all exits, method.loss,
backward, step, schedule -> per-exit validation accuracy -> callback -> resumable state.

Under torchrun (see distributed.py) each rank trains on its own shard through DistributedDataParallel;
metrics are summed over ranks, and only rank 0 reports and saves. A SIGINT/SIGTERM finishes the
current step, saves the resumable state and raises TrainingInterrupted.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from aep_core.data import TensorImageDataset, augment_shift_flip, make_loader, set_loader_epoch
from aep_core.errors import AepError, ConfigError
from aep_core.models import EarlyExitNet
from aep_core.threads import set_default_threads
from aep_core.training import distributed as dd
from aep_core.training.losses import ensemble_probs
from aep_core.training.methods import Method

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method."""

    epochs: int = 10
    batch_size: int = 128  # per process
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
    amp: str | None = None  # bf16 | fp16 autocast (fp16 needs a GPU)
    save_every: int = 1  # epochs between resumable states (0: only on interruption)

    def validate(self) -> None:
        """Raise ConfigError for impossible settings."""
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch size must be >= 1 and the learning rate > 0.")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"Optimizer must be 'sgd' or 'adam', got '{self.optimizer}'.")
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ConfigError(f"Mixed precision must be 'bf16' or 'fp16', got '{self.amp}'.")
        if self.amp == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("--amp fp16 needs a GPU (--device cuda); on CPU use --amp bf16 or none.")
        if self.workers < 0 or self.save_every < 0:
            raise ConfigError("--workers and --save-every must be >= 0.")


@dataclass
class EpochStats:
    """What one epoch produced: mean training loss, per-exit train and validation accuracy."""

    epoch: int
    loss: float
    train_acc: list[float | None]  # None for exits not run that epoch (layer-wise training)
    val_acc: list[float]
    val_ensemble_acc: list[float]
    ensemble_weights: list[float]
    seconds: float
    images_per_s: float  # over all ranks


@dataclass
class TrainResult:
    """History of a finished run."""

    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain-type view for checkpoint metadata."""
        return {"history": [asdict(h) for h in self.history], "seconds": self.seconds}


class TrainingInterrupted(AepError):
    """Training stopped on request (SIGINT/SIGTERM) after saving its resumable state."""

    def __init__(self, epoch: int, step: int, steps: int, saved: bool, hint: str = "") -> None:
        self.epoch, self.step, self.steps, self.saved = epoch, step, steps, saved
        super().__init__(
            f"Training stopped in epoch {epoch + 1} after step {step}/{steps}"
            + (" (resumable state saved)." if saved else " (no resumable state saved).")
            + (f" {hint}" if hint else "")
        )


class StopRequest:
    """A flag the loop checks after every step; signal handlers and callbacks set it."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        """Ask the loop to stop after the current step."""
        self.requested = True


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While active, the first SIGINT/SIGTERM sets `stop`; a second one acts as usual (quit now).
    Outside the main thread (e.g. in the app) signals cannot be caught and nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    # Under torchrun a Ctrl-C reaches each worker twice (from the terminal, then forwarded by torchrun):
    # workers keep stopping cleanly and leave escalation to torchrun, which kills them after its grace period.
    patient = dd.launched_by_torchrun()

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            return
        stop.set()
        if not patient:
            signal.signal(signum, previous[signum])
        if dd.rank() == 0:
            sys.stderr.write(
                f"\n{signal.Signals(signum).name}: finishing the current step and saving"
                + ("" if patient else "; send it again to quit at once")
                + ".\n"
            )

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _shard(dataset: Dataset, rank: int, world: int) -> Dataset:
    """Every `world`-th sample from `rank`: disjoint shards that together cover the dataset once."""
    if world == 1:
        return dataset
    idx = list(range(rank, len(dataset), world))
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset(
            dataset.images[idx], dataset.labels[idx], dataset.mean.flatten().tolist(), dataset.std.flatten().tolist()
        )
    return torch.utils.data.Subset(dataset, idx)


@torch.no_grad()
def _exit_counts(model: EarlyExitNet, dataset: Dataset, w: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """(2 * exits + 1,) counts: correct per exit, correct per ensemble prefix, samples."""
    model.eval()
    n = model.num_exits
    counts = torch.zeros(2 * n + 1, dtype=torch.float64)
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        out = model(x)
        for k, z in enumerate(out.logits):
            counts[k] += (z.argmax(1) == y).sum().item()
            counts[n + k] += (ensemble_probs(out.logits, w, k).argmax(1) == y).sum().item()
        counts[-1] += len(y)
    return counts


def evaluate_exits(
    model: EarlyExitNet, dataset: Dataset, weights: list[float], batch_size: int = 512, device: str = "cpu"
) -> tuple[list[float], list[float]]:
    """Per-exit accuracy and AEP-ensemble accuracy (ensemble of exits 0..k for each k) on a dataset.
    Under DDP every rank scores its own shard and the counts are summed, so each rank gets the full result."""
    n = model.num_exits
    w = torch.tensor(weights, device=device)
    counts = _exit_counts(model, _shard(dataset, dd.rank(), dd.world_size()), w, batch_size, device)
    counts = dd.all_reduce_sum(counts.to(device)).cpu()
    total = max(counts[-1].item(), 1)
    return (counts[:n] / total).tolist(), (counts[n : 2 * n] / total).tolist()


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or Adam, with decoupled-from-nothing plain weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _progress(epoch: int, epochs: int, step: int, steps: int, loss: float, t0: float, done_before: int) -> None:
    width = 24
    done = int(width * step / steps)
    rate = (step - done_before) / max(time.perf_counter() - t0, 1e-9)
    sys.stderr.write(
        f"\repoch {epoch + 1}/{epochs} [{'#' * done}{'.' * (width - done)}] {step}/{steps} "
        f"loss {loss:.3f} {rate:.1f} it/s"
    )
    sys.stderr.flush()


def _trainable(model: EarlyExitNet, method: Method) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in list(model.parameters()) + list(method.parameters()))


def train(
    model: EarlyExitNet,
    method: Method,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TrainConfig,
    callback: Callable[[EpochStats], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    *,
    resume: dict[str, Any] | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Train `model` with `method`; after each epoch, report per-exit accuracy on `val_set` to `callback`.
    `on_batch(epoch, step, steps)` is called after every optimiser step (for progress bars).
    `resume` is a state that `save_state` received earlier: training goes on from exactly there.
    `save_state(state)` gets the resumable state (plain types and tensors) every `cfg.save_every` epochs
    and when `stop` is set (by SIGINT/SIGTERM or by the caller); the loop then raises TrainingInterrupted.
    Under torchrun, callbacks run and states are saved on rank 0 only."""
    cfg.validate()
    if cfg.threads:
        set_default_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rank, world, main = dd.rank(), dd.world_size(), dd.rank() == 0
    device = torch.device(cfg.device)
    model.to(device)
    method.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in list(model.parameters()) + list(method.parameters())]
    opt = make_optimizer(params, cfg)
    loader = make_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, distributed=world > 1
    )
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * method.schedule_fraction(s, steps)))
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    amp_dtype = AMP_DTYPES.get(cfg.amp or "", torch.float32)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * rank)  # each rank augments differently
    result = TrainResult()
    resumable = _Resumable(model, method, opt, sched, scaler, aug_gen, result)
    start_epoch, start_step, partial = 0, 0, None
    if resume is not None:
        start_epoch, start_step, partial = resumable.load(resume, rank, world)
    step_module = dd.ExitStep(model, method)
    runner, trainable = None, None
    stop = stop or StopRequest()
    t_start = time.perf_counter() - result.seconds
    with stop_on_signals(stop):
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            method.prepare_epoch(model, epoch)
            if runner is None or _trainable(model, method) != trainable:
                runner, trainable = dd.wrap(step_module, device), _trainable(model, method)  # DDP syncs what trains now
            set_loader_epoch(loader, epoch, cfg.seed)
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            correct = torch.zeros(model.num_exits)
            batches = iter(loader)
            first = start_step if epoch == start_epoch else 0
            if first:
                for _ in range(first):  # the same order as before the interruption: skip what was done
                    next(batches)
                loss_sum, seen, correct = partial["loss_sum"], partial["seen"], partial["correct"].clone()
            seen_before = seen
            for step, (x, y) in enumerate(batches, first + 1):
                if cfg.augment:
                    x = augment_shift_flip(x, aug_gen)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp is not None):
                    loss, logits = runner(x, y, epoch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                with torch.no_grad():
                    for k, z in enumerate(logits):
                        correct[k] += (z.argmax(1) == y).sum().item()
                loss_sum += loss.item() * len(y)
                seen += len(y)
                if main and cfg.progress and (step % 20 == 0 or step == steps):
                    _progress(epoch, cfg.epochs, step, steps, loss_sum / seen, t0, first)
                if main and on_batch:
                    on_batch(epoch, step, steps)
                if dd.any_rank(stop.requested, device):  # every rank stops after the same step
                    sums = {"loss_sum": loss_sum, "seen": seen, "correct": correct}
                    state = resumable.state(epoch, step, sums, t_start)
                    if main and save_state:
                        save_state(state)
                    if main and cfg.progress:
                        sys.stderr.write("\n")
                    raise TrainingInterrupted(epoch, step, steps, save_state is not None)
            train_seconds = time.perf_counter() - t0
            # (3 + exits,) sums over ranks: loss, seen, images this session, correct per exit
            totals = dd.all_reduce_sum(
                torch.tensor(
                    [loss_sum, seen, seen - seen_before, *correct.tolist()], dtype=torch.float64, device=device
                )
            ).cpu()
            weights = method.ensemble_weights()
            val_acc, val_ens = evaluate_exits(model, val_set, weights, device=str(device))
            n_seen = max(totals[1].item(), 1)
            run = method.last_exit(epoch)  # exits after it were not run this epoch: no training accuracy
            train_acc = [
                None if run is not None and k > run else a for k, a in enumerate((totals[3:] / n_seen).tolist())
            ]
            stats = EpochStats(
                epoch + 1,
                totals[0].item() / n_seen,
                train_acc,
                val_acc,
                val_ens,
                weights,
                time.perf_counter() - t0,
                totals[2].item() / max(train_seconds, 1e-9),
            )
            result.history.append(stats)
            if main and cfg.progress:
                sys.stderr.write("\n")
                print(
                    f"epoch {stats.epoch}: loss {stats.loss:.4f} | val acc per exit "
                    + " ".join(f"{a:.4f}" for a in val_acc)
                    + f" | ensemble {val_ens[-1]:.4f} | "
                    f"{stats.images_per_s:.0f} img/s" + (f" on {world} processes" if world > 1 else ""),
                    flush=True,
                )
            if main and callback:
                callback(stats)
            if save_state and cfg.save_every and (epoch + 1) % cfg.save_every == 0:
                state = resumable.state(epoch + 1, 0, None, t_start)
                if main:
                    save_state(state)
    result.seconds = time.perf_counter() - t_start
    model.eval()
    return result


@dataclass
class _Resumable:
    """What a resumable state saves and puts back: weights, method, optimiser, schedule, gradient scaler, the
    rank's augmentation generator and the history so far."""

    model: EarlyExitNet
    method: Method
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    aug_gen: torch.Generator
    result: TrainResult

    def state(self, epoch: int, step: int, partial: dict | None, t_start: float) -> dict[str, Any]:
        """The resumable state: epoch and step to go on from, weights, optimiser, schedule, RNGs (every rank's
        augmentation generator), the epoch's running sums and the history. Collective under DDP: call on every
        rank."""
        aug_states = dd.gather_objects(self.aug_gen.get_state())
        return {
            "epoch": epoch,
            "step": step,
            "world_size": len(aug_states),
            "partial": partial,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "method": {k: v.detach().cpu() for k, v in self.method.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "aug": aug_states,
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "history": [asdict(h) for h in self.result.history],
            "seconds": time.perf_counter() - t_start,
        }

    def load(self, state: dict[str, Any], rank: int, world: int) -> tuple[int, int, dict | None]:
        """Put a saved state back; returns (epoch, step, partial sums) to go on from."""
        try:
            if "model" in state:
                self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if state["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            aug = state["rng"]["aug"]
            # Another world size reshards the data anyway; each rank then takes a saved stream (not bit-identical).
            self.aug_gen.set_state(aug[rank % len(aug)])
            self.result.history = [EpochStats(**h) for h in state["history"]]
            self.result.seconds = float(state["seconds"])
            epoch, step, partial = int(state["epoch"]), int(state["step"]), state["partial"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(
                f"The resume state does not fit this run (same model, method and optimiser?): "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        if int(state["world_size"]) != world:
            print(
                f"note: resuming a {state['world_size']}-process state with {world} processes: the data order "
                "differs from an uninterrupted run.",
                file=sys.stderr,
            )
        return epoch, step, partial
