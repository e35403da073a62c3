"""AEP weighting schemes: the weight w_i of each exit i = 1..N in the joint loss
L = sum_i w_i * CE(y, z_i), also used for the ensemble prediction sum_i w_i softmax(z_i) / sum_i w_i.

Every scheme is one entry of SCHEMES (`register_scheme` on its builder, or a spec naming the builder it
shares); its builder returns weights that are positive and sum to 1 (the prior of the trainable schemes).

The trainable schemes ('learned', 'hybrid') learn their weights from the ensemble's own loss,
CE(y, log sum_i w_i softmax(z_i)), with the exits' outputs detached. Descending the joint loss in w
instead is degenerate: it moves all the weight onto the exit with the lowest loss (the last one) and
leaves the early exits untrained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aep_core.errors import ConfigError
from aep_core.registry import Registry

WeightsBuilder = Callable[[int, Sequence[float] | None, float], torch.Tensor]  # (num_exits, costs, base) -> (N,)


@dataclass(frozen=True)
class SchemeSpec:
    """One weighting scheme: names and help for people, what it needs, how it trains, and its weights builder."""

    name: str
    label: str  # short, for pickers: "Linear"
    help: str  # one sentence: what the weights are
    trainable: bool = False  # holds logits theta fitted on the ensemble loss; the builder gives the prior
    loss_on_prior: bool = False  # trainable: the joint loss weighs the exits by the fixed prior, not by w
    needs_costs: bool = False  # the builder reads the per-exit costs
    uses_base: bool = False  # the builder reads the geometric base
    build: WeightsBuilder | None = None


SCHEMES: Registry[SchemeSpec] = Registry("weighting scheme")


def register_scheme(spec: SchemeSpec) -> Callable[[WeightsBuilder], WeightsBuilder]:
    """Decorator registering a weighting scheme: `spec` describes it, the decorated function builds its weights
    `fn(num_exits, costs, base) -> (num_exits,)` tensor, positive and summing to 1."""

    return SCHEMES.register_spec(spec)


def get_scheme(name: str) -> SchemeSpec:
    """The registered scheme called `name`; ConfigError naming the choices otherwise."""
    return SCHEMES.lookup(name)


def scheme_weights(name: str, num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> torch.Tensor:
    """The fixed weights of scheme `name` for `num_exits` exits (the starting prior of a trainable scheme),
    shape (num_exits,), positive and summing to 1. `costs` are the per-exit costs the 'cost' scheme needs."""
    spec = get_scheme(name)
    if spec.needs_costs and costs is None:
        raise ConfigError(f"The '{name}' weighting scheme needs the per-exit costs.")
    assert spec.build is not None
    return spec.build(num_exits, costs, base)


@register_scheme(SchemeSpec("uniform", "Uniform", "w_i = 1 / N: every exit weighs the same"))
def uniform_weights(num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> torch.Tensor:
    """w_i = 1 / N."""
    return torch.full((num_exits,), 1.0 / num_exits)


@register_scheme(SchemeSpec("linear", "Linear", "w_i proportional to i: deeper exits weigh more"))
def linear_weights(num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> torch.Tensor:
    """w_i = i / sum_j j: deeper exits weigh more, in proportion to their depth index i = 1..N."""
    w = torch.arange(1, num_exits + 1, dtype=torch.float32)
    return w / w.sum()


@register_scheme(
    SchemeSpec(
        "geometric",
        "Geometric",
        "w_i proportional to base^i: each exit weighs `base` times the one before it",
        uses_base=True,
    )
)
def geometric_weights(num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> torch.Tensor:
    """w_i = base^i / sum_j base^j: each exit weighs `base` times the one before it."""
    w = base ** torch.arange(1, num_exits + 1, dtype=torch.float32)
    return w / w.sum()


@register_scheme(
    SchemeSpec(
        "cost", "Cost-proportional", "w_i proportional to the MACs a sample spends to reach exit i", needs_costs=True
    )
)
def cost_weights(num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> torch.Tensor:
    """w_i = c_i / sum_j c_j, with c_i the MACs a sample spends to reach exit i."""
    c = torch.tensor([float(v) for v in costs or []])
    if len(c) != num_exits:
        raise ConfigError(f"Cost-proportional weights need one cost per exit: {num_exits} exits, {len(c)} costs.")
    if (c <= 0).any():
        raise ConfigError("Cost-proportional weights need a positive cost for every exit.")
    return c / c.sum()


SCHEMES.register_named(
    SchemeSpec(
        "learned",
        "Learned",
        "w = softmax(theta), theta fitted on the ensemble loss from a uniform start",
        trainable=True,
        build=uniform_weights,
    )
)
SCHEMES.register_named(
    SchemeSpec(
        "hybrid",
        "Hybrid",
        "w_i proportional to i * softmax(theta)_i: a linear prior times "
        "learned factors; the joint loss keeps the linear prior",
        trainable=True,
        loss_on_prior=True,
        build=linear_weights,
    )
)


class ExitWeighting(nn.Module):
    """The weights of a named scheme. Trainable schemes hold logits theta (init 0) over their prior:
    w_i = prior_i * softmax(theta)_i / sum_j prior_j * softmax(theta)_j ('learned': uniform prior, so
    w = softmax(theta); 'hybrid': linear prior). They fit theta on the ensemble loss (see the module docstring).
    The joint loss is weighed by w (detached), or by the fixed prior for schemes with `loss_on_prior`
    ('hybrid'), so every exit keeps training however the ensemble weights move."""

    def __init__(self, scheme: str, num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> None:
        super().__init__()
        self.spec = get_scheme(scheme)
        self.scheme = scheme
        self.register_buffer("prior", scheme_weights(scheme, num_exits, costs, base))
        self.theta = nn.Parameter(torch.zeros(num_exits)) if self.spec.trainable else None

    @property
    def trainable(self) -> bool:
        """Whether the weights have trainable logits."""
        return self.theta is not None

    def forward(self) -> torch.Tensor:
        """The current ensemble weights, shape (num_exits,), summing to 1."""
        if self.theta is None:
            return self.prior
        w = self.prior * torch.softmax(self.theta, dim=0)
        return w / w.sum()

    def loss_weights(self) -> torch.Tensor:
        """The weights of the joint loss, shape (num_exits,): constants, never a path for gradients to theta."""
        if self.spec.loss_on_prior:
            return self.prior
        return self.forward().detach()
