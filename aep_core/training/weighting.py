"""AEP weighting schemes: the weight w_i of each exit i = 1..N in the joint loss
L = sum_i w_i * CE(y, z_i), also used for the ensemble prediction sum_i w_i softmax(z_i) / sum_i w_i.

Every scheme returns weights that are positive and sum to 1.

The trainable schemes ('learned', 'hybrid') learn their weights from the ensemble's own loss,
CE(y, log sum_i w_i softmax(z_i)), with the exits' outputs detached. Descending the joint loss in w
instead is degenerate: it moves all the weight onto the exit with the lowest loss (the last one) and
leaves the early exits untrained.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aep_core.errors import ConfigError

SCHEMES = ("uniform", "linear", "geometric", "cost", "learned", "hybrid")


def uniform_weights(n: int) -> torch.Tensor:
    """w_i = 1 / N."""
    return torch.full((n,), 1.0 / n)


def linear_weights(n: int) -> torch.Tensor:
    """w_i = i / sum_j j: deeper exits weigh more, in proportion to their depth index i = 1..N."""
    w = torch.arange(1, n + 1, dtype=torch.float32)
    return w / w.sum()


def geometric_weights(n: int, base: float = 2.0) -> torch.Tensor:
    """w_i = base^i / sum_j base^j: each exit weighs `base` times the one before it."""
    w = base ** torch.arange(1, n + 1, dtype=torch.float32)
    return w / w.sum()


def cost_weights(costs: Sequence[float]) -> torch.Tensor:
    """w_i = c_i / sum_j c_j, with c_i the MACs a sample spends to reach exit i."""
    c = torch.tensor([float(v) for v in costs])
    if (c <= 0).any():
        raise ConfigError("Cost-proportional weights need a positive cost for every exit.")
    return c / c.sum()


class ExitWeighting(nn.Module):
    """The weights of a named scheme. 'learned' and 'hybrid' hold trainable logits theta (init 0):
    learned: w = softmax(theta);  hybrid: w_i = prior_i * softmax(theta)_i / sum_j prior_j * softmax(theta)_j,
    with the linear scheme as prior. Both fit theta on the ensemble loss (see the module docstring).
    'learned' also weighs the joint loss by w (detached); 'hybrid' weighs the joint loss by the fixed
    prior, so every exit keeps training however the ensemble weights move."""

    def __init__(self, scheme: str, num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ConfigError(f"Unknown weighting scheme '{scheme}'. Choose one of: {', '.join(SCHEMES)}.")
        if scheme == "cost" and costs is None:
            raise ConfigError("The 'cost' weighting scheme needs the per-exit costs.")
        self.scheme = scheme
        fixed = {
            "uniform": lambda: uniform_weights(num_exits),
            "linear": lambda: linear_weights(num_exits),
            "geometric": lambda: geometric_weights(num_exits, base),
            "cost": lambda: cost_weights(costs or []),
            "learned": lambda: uniform_weights(num_exits),
            "hybrid": lambda: linear_weights(num_exits),
        }[scheme]()
        self.register_buffer("prior", fixed)
        self.theta = nn.Parameter(torch.zeros(num_exits)) if scheme in ("learned", "hybrid") else None

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
        if self.scheme == "hybrid":
            return self.prior
        return self.forward().detach()
