"""Training methods: what each one optimises and which parameters it trains.

baseline          the backbone alone, final classifier only (no early exits)
aep               AEP joint training: sum_i w_i CE(y, z_i), weights from a named scheme
eenet             EENet cost-aware loss (v1 or v2), optional two-stage schedule
classifier-wise   survey: frozen backbone, only the early exit heads learn
layer-wise        survey: greedy, one exit at a time: segment k and exit k learn from exit k's loss while
                  everything before is frozen; the epochs are shared evenly among the exits
distillation      survey: self-distillation, the last exit teaches the earlier ones
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aep_core.errors import ConfigError
from aep_core.models import EarlyExitNet, ExitOutputs
from aep_core.training import losses
from aep_core.training.weighting import SCHEMES, ExitWeighting

METHODS = ("baseline", "aep", "eenet", "classifier-wise", "layer-wise", "distillation")


@dataclass
class MethodSettings:
    """Options of every method; each method reads the ones it needs."""

    method: str = "aep"
    weighting: str = "hybrid"  # aep
    geometric_base: float = 2.0  # aep, geometric scheme
    eenet_loss: str = "v2"  # eenet: v1 | v2
    lam: float = 1.0  # eenet: weight of the cost term
    two_stage: bool = False  # eenet: plain per-exit loss for the first half of the epochs
    temperature: float = 3.0  # distillation
    alpha: float = 0.5  # distillation
    freeze_epochs: int | None = None  # classifier-wise: epochs of backbone training before freezing (default half)
    extra: dict[str, Any] = field(default_factory=dict)

    def relevant(self) -> dict[str, Any]:
        """The settings that matter for this method (for metadata and logs)."""
        keys = {"baseline": [], "aep": ["weighting"] + (["geometric_base"] if self.weighting == "geometric" else []),
                "eenet": ["eenet_loss", "lam", "two_stage"], "classifier-wise": ["freeze_epochs"],
                "layer-wise": [], "distillation": ["temperature", "alpha"]}[self.method]
        return {"method": self.method, **{k: getattr(self, k) for k in keys}}


def head_for(method: str) -> str:
    """The exit head kind a method trains: EENet heads for 'eenet', AEP heads otherwise."""
    return "eenet" if method == "eenet" else "aep"


class Method(nn.Module):
    """A training method bound to a model: computes the loss and decides what trains each epoch.
    It is an nn.Module so that learned ensemble weights train and checkpoint with everything else."""

    def __init__(self, settings: MethodSettings, model: EarlyExitNet, cost_rates: list[float], epochs: int) -> None:
        super().__init__()
        s = settings
        if s.method not in METHODS:
            raise ConfigError(f"Unknown training method '{s.method}'. Choose one of: {', '.join(METHODS)}.")
        if s.method == "aep" and s.weighting not in SCHEMES:
            raise ConfigError(f"Unknown weighting scheme '{s.weighting}'. Choose one of: {', '.join(SCHEMES)}.")
        if s.method == "eenet":
            if not model.has_confidence:
                raise ConfigError("EENet training needs EENet exit heads (confidence branches).")
            if s.eenet_loss not in ("v1", "v2"):
                raise ConfigError(f"EENet loss must be 'v1' or 'v2', got '{s.eenet_loss}'.")
            if s.lam < 0:
                raise ConfigError(f"EENet lambda must be >= 0, got {s.lam}.")
        if s.method in ("aep", "eenet", "classifier-wise", "layer-wise", "distillation") and model.num_exits < 2:
            raise ConfigError(f"Method '{s.method}' needs at least one early exit besides the final classifier.")
        if s.method == "layer-wise" and epochs < model.num_exits:
            raise ConfigError(f"Layer-wise training gives each of the {model.num_exits} exits at least one epoch: "
                              f"train for {model.num_exits} epochs or more (got {epochs}).")
        if s.method == "distillation" and (s.temperature <= 0 or not 0 <= s.alpha <= 1):
            raise ConfigError("Distillation needs temperature > 0 and 0 <= alpha <= 1.")
        self.settings = s
        self.cost_rates = cost_rates
        self.epochs = epochs
        self.num_exits = model.num_exits
        self.freeze_at = 0
        if s.method == "classifier-wise":
            self.freeze_at = epochs // 2 if s.freeze_epochs is None else s.freeze_epochs
        scheme = s.weighting if s.method == "aep" else "uniform"
        self.weighting = ExitWeighting(scheme, model.num_exits, cost_rates, s.geometric_base)

    def ensemble_weights(self) -> list[float]:
        """The exit weights for the ensemble prediction (the training weights for AEP, uniform otherwise)."""
        with torch.no_grad():
            return [float(w) for w in self.weighting()]

    def stage(self, epoch: int) -> int:
        """Layer-wise training: the exit trained during `epoch` (the epochs are shared evenly)."""
        return min(epoch * self.num_exits // max(self.epochs, 1), self.num_exits - 1)

    def schedule_fraction(self, step: int, steps_per_epoch: int) -> float:
        """How far optimiser step `step` is through its learning-rate schedule, in [0, 1]: through the whole
        run, or for layer-wise training through the current exit's epochs (each exit gets its own cosine)."""
        if self.settings.method != "layer-wise":
            return min(step / max(self.epochs * steps_per_epoch, 1), 1.0)
        k = self.stage(min(step // max(steps_per_epoch, 1), self.epochs - 1))
        # stage k spans epochs ceil(k * epochs / exits) up to the next stage's first epoch
        first, end = (-(-j * self.epochs // self.num_exits) for j in (k, k + 1))
        return min((step - first * steps_per_epoch) / max((end - first) * steps_per_epoch, 1), 1.0)

    def last_exit(self, epoch: int) -> int | None:
        """The last exit the forward pass needs this epoch (None: all of them)."""
        return self.stage(epoch) if self.settings.method == "layer-wise" else None

    def prepare_epoch(self, model: EarlyExitNet, epoch: int) -> None:
        """Freeze or unfreeze parameters for this epoch (classifier-wise and layer-wise training)."""
        if self.settings.method == "layer-wise":
            self._prepare_layer_wise(model, self.stage(epoch))
            return
        if self.settings.method != "classifier-wise":
            return
        frozen = epoch >= self.freeze_at
        for p in list(model.backbone.parameters()) + list(model.heads[-1].parameters()):
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None
        if frozen:
            model.backbone.eval()  # keep the frozen backbone's BatchNorm statistics fixed

    @staticmethod
    def _prepare_layer_wise(model: EarlyExitNet, k: int) -> None:
        """Only segment k (with the stem when k = 0) and exit k train; every other module is frozen, its
        BatchNorm statistics included."""
        trained: list[nn.Module] = [model.backbone.blocks[b] for b in model.segment_blocks(k)] + [model.heads[k]]
        if k == 0:
            trained.append(model.backbone.stem)
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        model.eval()
        for m in trained:
            m.train()
            for p in m.parameters():
                p.requires_grad_(True)

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """The method's training loss for one batch."""
        s, z = self.settings, out.logits
        if s.method == "baseline":
            return F.cross_entropy(z[-1], y)
        if s.method == "aep":
            loss = losses.weighted_exit_loss(z, y, self.weighting.loss_weights())
            if self.weighting.trainable:
                loss = loss + losses.ensemble_weight_loss(z, y, self.weighting())
            return loss
        if s.method == "eenet":
            if s.two_stage and epoch < self.epochs // 2:
                return losses.per_exit_loss(z, y)
            fn = losses.eenet_loss_v2 if s.eenet_loss == "v2" else losses.eenet_loss_v1
            return fn(z, out.confidences, y, self.cost_rates, s.lam)
        if s.method == "layer-wise":
            return F.cross_entropy(z[self.stage(epoch)], y)
        if s.method == "classifier-wise":
            if epoch < self.freeze_at:
                return F.cross_entropy(z[-1], y)
            return losses.per_exit_loss(z[:-1], y)
        return losses.self_distillation_loss(z, y, s.temperature, s.alpha)
