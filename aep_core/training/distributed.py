"""DistributedDataParallel as a thin layer over the one training loop.

Launched by torchrun (`torchrun --nproc_per_node=N -m aep_core train ...`), every process reads its rank
from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), joins the
process group (NCCL on GPUs, gloo on CPU), and trains a DDP-wrapped `ExitStep`: the model and the method
together, so that the method's own trainable parameters (learned exit weights) are all-reduced too.
Without torchrun every function here is a no-op and training runs in one process.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aep_core.errors import ConfigError
from aep_core.models import EarlyExitNet
from aep_core.training.methods import Method


@dataclass
class DistEnv:
    """Where this process stands in a distributed run; rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owned: bool = False  # this process group was started by `setup` (and is ended by `teardown`)

    @property
    def active(self) -> bool:
        """Whether more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment holds a torchrun rank and world size."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "cpu") -> DistEnv:
    """Join the process group torchrun describes (if any) and pick this rank's device.
    'cuda' becomes 'cuda:<local rank>'; the backend is NCCL on GPUs and gloo on CPU."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", 0)),
            _rank_device(device, int(os.environ.get("LOCAL_RANK", 0))),
        )
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but PyTorch sees no GPU here.")
        return DistEnv(device=device)
    if not dist.is_available():
        raise ConfigError("This PyTorch build has no torch.distributed support; train in one process instead.")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = _rank_device(device, local_rank)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, owned=True)


def _rank_device(device: str, local_rank: int) -> str:
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no GPU here.")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"Local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; lower --nproc_per_node."
        )
    return f"cuda:{local_rank}"


def teardown(env: DistEnv) -> None:
    """Leave the process group if `setup` joined it."""
    if env.owned and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    """Whether this process trains within a process group of two or more."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a distributed run)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of processes training together (1 outside a distributed run)."""
    return dist.get_world_size() if is_active() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over every rank, in place; returns it. A no-op in one process."""
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when `flag` is true on at least one rank (every rank gets the same answer)."""
    if not is_active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: object) -> list:
    """Every rank's `obj`, in rank order (a one-element list in one process)."""
    if not is_active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if is_active():
        dist.barrier()


class ExitStep(nn.Module):
    """Model and method as one module: the loss of one batch and every exit's logits.
    DDP wraps this, so gradients of the method's parameters (learned exit weights) are averaged too."""

    def __init__(self, model: EarlyExitNet, method: Method) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.model(x, upto=self.method.last_exit(epoch))  # layer-wise: later blocks are not run
        return self.method.epoch_loss(out, y, epoch), [z.detach() for z in out.logits]  # loss, (b, classes) per exit


def wrap(step: ExitStep, device: torch.device) -> nn.Module:
    """`step` inside DistributedDataParallel when distributed, `step` itself otherwise.
    Only parameters that currently require grad are synchronised: re-wrap after freezing or unfreezing."""
    if not is_active():
        return step
    ids = [device.index] if device.type == "cuda" else None
    # A 1-channel first conv gets its (c_out, 1, 3, 3) gradient in an equivalent but differently strided
    # layout; the reducer copies it and warns on every step. The copy is harmless, the noise is not.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # the early heads get no gradient during backbone-first epochs
    unused = step.method.may_leave_parameters_unused or step.method.settings.backbone_epochs > 0
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=unused)


def parameter_digest(*modules: nn.Module) -> str:
    """A short SHA-256 of every parameter's bytes: equal on every rank when their weights agree."""
    h = hashlib.sha256()
    for m in modules:
        for name, p in m.named_parameters():
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
