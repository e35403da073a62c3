"""Training methods: what each one optimises and which parameters it trains. Each is one class registered
in METHODS with `register_method`; `build_method` binds the one a MethodSettings names to a model.

baseline          the backbone alone, final classifier only (no early exits)
aep               AEP joint training: sum_i w_i CE(y, z_i), weights from a named scheme
eenet             EENet cost-aware loss (v1 or v2); two-stage as the authors' code: per-exit losses, then v1
classifier-wise   survey: frozen backbone, only the early exit heads learn (with --freeze-epochs 0 a pretrained
                  backbone is frozen from the start; its final classifier learns too when it is new)
layer-wise        survey: greedy, one exit at a time: segment k and exit k learn from exit k's loss while
                  everything before is frozen; the epochs are shared evenly among the exits
distillation      survey: self-distillation, the last exit teaches the earlier ones
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aep_core.errors import ConfigError
from aep_core.models import EarlyExitNet, ExitOutputs
from aep_core.registry import Registry
from aep_core.training import losses
from aep_core.training.weighting import ExitWeighting, get_scheme


@dataclass
class MethodSettings:
    """Options of every method; each method reads the ones it names in `Method.reads`."""

    method: str = "aep"
    weighting: str = "hybrid"  # aep
    geometric_base: float = 2.0  # aep, geometric scheme
    eenet_loss: str | None = None  # eenet: v1 | v2 (None: v2, or v1 after the two-stage first stage)
    lam: float = 1.0  # eenet: weight of the cost term
    two_stage: bool = False  # eenet: plain per-exit losses for the first sixth of the epochs
    temperature: float = 3.0  # distillation
    alpha: float = 0.5  # distillation
    freeze_epochs: int | None = None  # classifier-wise: epochs of backbone training before freezing (default half)
    backbone_epochs: int = 0  # joint methods: epochs training the backbone and final classifier alone first

    def relevant(self) -> dict[str, Any]:
        """The settings that matter for this method (for metadata and logs)."""
        method = get_method(self.method)
        return {"method": self.method, **method.resolved({k: getattr(self, k) for k in method.settings_read(self)})}


class Method(nn.Module, ABC):
    """A training method bound to a model: computes the loss and decides what trains each epoch.
    It is an nn.Module so that learned ensemble weights train and checkpoint with everything else.

    A method is a subclass registered with `register_method`; by default it trains every exit jointly
    through the whole run with one cosine schedule, and its ensemble weights are uniform."""

    name: ClassVar[str]
    help: ClassVar[str]  # one line: what it optimises and what trains
    head: ClassVar[str] = "aep"  # exit head kind it trains (a key of aep_core.models.heads.HEAD_TYPES)
    uses_early_exits: ClassVar[bool] = True  # False: the model gets the final classifier only
    reads: ClassVar[tuple[str, ...]] = ()  # MethodSettings fields it reads
    may_leave_parameters_unused: ClassVar[bool] = False  # some trainable parameters can get no gradient in a step

    def __init__(self, settings: MethodSettings, model: EarlyExitNet, cost_rates: list[float], epochs: int) -> None:
        super().__init__()
        self.validate(settings, model, epochs)
        self.settings = settings
        self.cost_rates = cost_rates
        self.epochs = epochs
        self.num_exits = model.num_exits
        self.weighting = ExitWeighting(
            self.ensemble_scheme(settings), model.num_exits, cost_rates, settings.geometric_base
        )

    @classmethod
    def settings_read(cls, settings: MethodSettings) -> tuple[str, ...]:
        """The MethodSettings fields this method reads with these settings (backbone-first epochs only when
        there are some)."""
        return tuple(k for k in cls.reads if k != "backbone_epochs" or settings.backbone_epochs)

    @classmethod
    def resolved(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The settings `values` it reads, with every default that depends on the others filled in."""
        return values

    def validate(self, settings: MethodSettings, model: EarlyExitNet, epochs: int) -> None:
        """Raise ConfigError when the settings, the model or the number of epochs do not suit the method."""
        if self.uses_early_exits and model.num_exits < 2:
            raise ConfigError(f"Method '{self.name}' needs at least one early exit besides the final classifier.")
        if settings.backbone_epochs and "backbone_epochs" not in self.reads:
            raise ConfigError(f"Method '{self.name}' has no backbone-first epochs; use aep, eenet or distillation.")
        if settings.backbone_epochs >= max(epochs, 1):
            raise ConfigError(
                f"{settings.backbone_epochs} backbone-first epochs leave none of the {epochs} for the exits: "
                "train for more epochs or fewer backbone-first ones."
            )

    def ensemble_scheme(self, settings: MethodSettings) -> str:
        """The weighting scheme of the ensemble prediction."""
        return "uniform"

    @property
    def fits_ensemble_weights(self) -> bool:
        """Whether the ensemble weights are fitted after training, on held-out training images."""
        return self.weighting.trainable

    def ensemble_weights(self) -> list[float]:
        """The exit weights for the ensemble prediction (the scheme's weights for AEP, uniform otherwise)."""
        with torch.no_grad():
            return [float(w) for w in self.weighting()]

    def schedule_fraction(self, step: int, steps_per_epoch: int) -> float:
        """How far optimiser step `step` is through its learning-rate schedule, in [0, 1]."""
        return min(step / max(self.epochs * steps_per_epoch, 1), 1.0)

    def last_exit(self, epoch: int) -> int | None:
        """The last exit the forward pass needs this epoch (None: all of them)."""
        return None

    def prepare_epoch(self, model: EarlyExitNet, epoch: int) -> None:
        """Freeze or unfreeze parameters for this epoch (nothing: every parameter trains)."""

    @abstractmethod
    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """The method's training loss for one batch."""

    def epoch_loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """The loss of one batch in `epoch`: the final classifier's alone during the backbone-first epochs of a
        joint method, the method's own loss after them."""
        if epoch < self.settings.backbone_epochs:
            return F.cross_entropy(out.logits[-1], y)
        return self.loss(out, y, epoch)


METHODS: Registry[type[Method]] = Registry("training method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator registering a training method under its `name`."""
    return METHODS.register_named(cls)


def get_method(name: str) -> type[Method]:
    """The registered method called `name`; ConfigError naming the choices otherwise."""
    return METHODS.lookup(name)


def build_method(settings: MethodSettings, model: EarlyExitNet, cost_rates: list[float], epochs: int) -> Method:
    """The method `settings.method` bound to `model` (exit cost rates `cost_rates`) for a run of `epochs`."""
    return get_method(settings.method)(settings, model, cost_rates, epochs)


@register_method
class Baseline(Method):
    name = "baseline"
    help = "the backbone alone: cross-entropy of the final classifier, no early exits"
    uses_early_exits = False

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(out.logits[-1], y)


@register_method
class AEP(Method):
    name = "aep"
    help = "joint training of every exit: sum_i w_i CE(y, z_i), the weights w from a weighting scheme"
    reads = ("weighting", "backbone_epochs")

    @classmethod
    def settings_read(cls, settings: MethodSettings) -> tuple[str, ...]:
        base = ("geometric_base",) if get_scheme(settings.weighting).uses_base else ()
        return super().settings_read(settings) + base

    def validate(self, settings: MethodSettings, model: EarlyExitNet, epochs: int) -> None:
        get_scheme(settings.weighting)
        super().validate(settings, model, epochs)

    def ensemble_scheme(self, settings: MethodSettings) -> str:
        return settings.weighting

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        z, prior = out.logits, self.weighting.loss_weights()
        loss = losses.weighted_exit_loss(z, y, prior)
        if self.weighting.spec.ensemble_in_loss:
            loss = loss + losses.prefix_ensemble_loss(z, y, prior)
        return loss


@register_method
class EENet(Method):
    name = "eenet"
    help = "EENet cost-aware loss (v1 or v2) over exits with confidence branches, optionally two-stage"
    head = "eenet"
    reads = ("eenet_loss", "lam", "two_stage", "backbone_epochs")
    may_leave_parameters_unused = True  # the last confidence branch; every confidence in the two-stage first half

    def __init__(self, settings: MethodSettings, model: EarlyExitNet, cost_rates: list[float], epochs: int) -> None:
        super().__init__(settings, model, cost_rates, epochs)
        # the authors' defaults: v2 alone; two-stage trains per-exit losses for 25 of 150 epochs, then v1
        self.version = self.resolved({"eenet_loss": settings.eenet_loss, "two_stage": settings.two_stage})["eenet_loss"]
        self.first_stage_epochs = max(1, epochs // 6) if settings.two_stage else 0

    @classmethod
    def resolved(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values.get("eenet_loss") is None:
            return {**values, "eenet_loss": "v1" if values.get("two_stage") else "v2"}
        return values

    def validate(self, settings: MethodSettings, model: EarlyExitNet, epochs: int) -> None:
        if not model.has_confidence:
            raise ConfigError("EENet training needs EENet exit heads (confidence branches).")
        if settings.eenet_loss not in (None, *losses.EENET_LOSS_VERSIONS):
            raise ConfigError(f"EENet loss must be 'v1' or 'v2', got '{settings.eenet_loss}'.")
        if settings.two_stage and epochs < 2:
            raise ConfigError("Two-stage EENet training needs at least 2 epochs, one per stage.")
        if settings.lam < 0:
            raise ConfigError(f"EENet lambda must be >= 0, got {settings.lam}.")
        super().validate(settings, model, epochs)

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        z = out.logits
        if epoch < self.first_stage_epochs:
            return losses.per_exit_loss(z, y)
        return losses.eenet_loss(z, out.confidences, y, self.cost_rates, self.settings.lam, self.version)


@register_method
class ClassifierWise(Method):
    name = "classifier-wise"
    help = "the backbone and final classifier train first, then freeze while only the early exit heads learn"
    reads = ("freeze_epochs",)
    may_leave_parameters_unused = True  # the early heads wait while the backbone trains

    def __init__(self, settings: MethodSettings, model: EarlyExitNet, cost_rates: list[float], epochs: int) -> None:
        super().__init__(settings, model, cost_rates, epochs)
        self.freeze_at = epochs // 2 if settings.freeze_epochs is None else settings.freeze_epochs

        # A backbone frozen from the start is a pretrained one; its final classifier learns with the exits unless
        # it came with the weights.
        self.final_learns = self.freeze_at == 0 and not model.final_pretrained

    def prepare_epoch(self, model: EarlyExitNet, epoch: int) -> None:
        """From `freeze_at` on, the backbone and the final classifier are frozen, BatchNorm statistics included
        (the final classifier keeps learning when it is new on a backbone frozen from the start)."""
        frozen = epoch >= self.freeze_at
        final = [] if self.final_learns else list(model.heads[-1].parameters())
        for p in list(model.backbone.parameters()) + final:
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None
        if frozen:
            model.backbone.eval()  # keep the frozen backbone's BatchNorm statistics fixed

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        z = out.logits
        if epoch < self.freeze_at:
            return F.cross_entropy(z[-1], y)
        return losses.per_exit_loss(z if self.final_learns else z[:-1], y)


@register_method
class LayerWise(Method):
    name = "layer-wise"
    help = "greedy, one exit at a time: segment k and exit k learn from exit k's loss, everything before frozen"

    def validate(self, settings: MethodSettings, model: EarlyExitNet, epochs: int) -> None:
        super().validate(settings, model, epochs)
        if epochs < model.num_exits:
            raise ConfigError(
                f"Layer-wise training gives each of the {model.num_exits} exits at least one epoch: "
                f"train for {model.num_exits} epochs or more (got {epochs})."
            )

    def stage(self, epoch: int) -> int:
        """The exit trained during `epoch` (the epochs are shared evenly)."""
        return min(epoch * self.num_exits // max(self.epochs, 1), self.num_exits - 1)

    def schedule_fraction(self, step: int, steps_per_epoch: int) -> float:
        """How far step `step` is through the current exit's epochs (each exit gets its own cosine)."""
        k = self.stage(min(step // max(steps_per_epoch, 1), self.epochs - 1))
        # stage k spans epochs ceil(k * epochs / exits) up to the next stage's first epoch
        first, end = (-(-j * self.epochs // self.num_exits) for j in (k, k + 1))
        return min((step - first * steps_per_epoch) / max((end - first) * steps_per_epoch, 1), 1.0)

    def last_exit(self, epoch: int) -> int | None:
        return self.stage(epoch)

    def prepare_epoch(self, model: EarlyExitNet, epoch: int) -> None:
        """Only segment k (with the stem when k = 0) and exit k train; every other module is frozen, its
        BatchNorm statistics included."""
        k = self.stage(epoch)
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
        return F.cross_entropy(out.logits[self.stage(epoch)], y)


@register_method
class Distillation(Method):
    name = "distillation"
    help = "self-distillation: the last exit learns from the labels and teaches the earlier ones"
    reads = ("temperature", "alpha", "backbone_epochs")

    def validate(self, settings: MethodSettings, model: EarlyExitNet, epochs: int) -> None:
        super().validate(settings, model, epochs)
        if settings.temperature <= 0 or not 0 <= settings.alpha <= 1:
            raise ConfigError("Distillation needs temperature > 0 and 0 <= alpha <= 1.")

    def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return losses.self_distillation_loss(out.logits, y, self.settings.temperature, self.settings.alpha)
