"""AEP weighting schemes: the weights of the exits i = 1..N in the joint training loss and in the ensemble.

Training loss (every scheme):  L = sum_i p_i CE(y, z_i),  p the scheme's fixed prior (positive, summing to 1).
'hybrid' adds the ensemble of every prefix:  L += (1/N) sum_k CE(y, log E_k(p)),
where E_k(w) = sum_{i<=k} w_i softmax(z_i) / sum_{i<=k} w_i is the AEP ensemble of exits 1..k.

Ensemble weights w: the prior for the fixed schemes. The trainable schemes ('learned', 'hybrid') use
w_i = p_i softmax(theta)_i / sum_j p_j softmax(theta)_j, with theta fitted after training, on training
images held out from training, for the mean over every prefix k of NLL(y, E_k(w)): the ensemble at exit k
uses exits 1..k, so the weights must serve every prefix, not only the full depth. theta never enters the
training loss (descending the joint loss in w moves all the weight onto the last exit and starves the
early ones).

The priors:
  uniform    p_i = 1 / N
  linear     p_i = i / sum_j j
  geometric  p_i = b^i / sum_j b^j
  cost       p_i = c_i / sum_j c_j, c_i the MACs a sample spends to reach exit i
  learned    uniform prior, fitted theta
  hybrid     linear prior, fitted theta, and the prefix-ensemble term in the training loss
The AEP paper's full text is not available to us: its abstract names joint training with a weighted loss, a
weighted ensemble and a hybrid-weighted configuration. The formulas of 'cost', 'learned' and 'hybrid' (the
held-out fit over every prefix, and hybrid's prefix-ensemble loss term) are this project's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aep_core.errors import ConfigError
from aep_core.registry import Registry
from aep_core.training.losses import prefix_nll

WeightsBuilder = Callable[[int, Sequence[float] | None, float], torch.Tensor]  # (num_exits, costs, base) -> (N,)


@dataclass(frozen=True)
class SchemeSpec:
    """One weighting scheme: names and help for people, what it needs, how it trains, and its weights builder."""

    name: str
    label: str  # short, for pickers: "Linear"
    help: str  # one sentence: what the weights are
    trainable: bool = False  # ensemble weights: the prior times softmax(theta), theta fitted after training
    ensemble_in_loss: bool = False  # the training loss adds the prefix ensembles' cross-entropy (prior weights)
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
        "trains like uniform; ensemble weights softmax(theta) fitted on held-out training images for every prefix",
        trainable=True,
        build=uniform_weights,
    )
)
SCHEMES.register_named(
    SchemeSpec(
        "hybrid",
        "Hybrid",
        "linear loss plus every prefix ensemble's loss; ensemble weights i * softmax(theta)_i, theta fitted on "
        "held-out training images for every prefix",
        trainable=True,
        ensemble_in_loss=True,
        build=linear_weights,
    )
)


class ExitWeighting(nn.Module):
    """The weights of a named scheme: its fixed prior, and for a trainable scheme the logits theta (a buffer,
    0 until `fit`) of the ensemble weights w_i = prior_i softmax(theta)_i / sum_j prior_j softmax(theta)_j."""

    def __init__(self, scheme: str, num_exits: int, costs: Sequence[float] | None = None, base: float = 2.0) -> None:
        super().__init__()
        self.spec = get_scheme(scheme)
        self.scheme = scheme
        self.register_buffer("prior", scheme_weights(scheme, num_exits, costs, base))
        self.register_buffer("theta", torch.zeros(num_exits))

    @property
    def trainable(self) -> bool:
        """Whether the ensemble weights are fitted after training."""
        return self.spec.trainable

    def forward(self) -> torch.Tensor:
        """The ensemble weights, shape (num_exits,), summing to 1."""
        w = self.prior * torch.softmax(self.theta, dim=0)
        return w / w.sum()

    def loss_weights(self) -> torch.Tensor:
        """The weights of the joint training loss, shape (num_exits,): the fixed prior."""
        return self.prior

    @torch.no_grad()
    def fit(self, logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> None:
        """Fit theta on held-out outputs `logits` (exits, n, classes) with labels (n,): minimise the mean over
        every prefix k of NLL(y, ensemble of exits 0..k). Deterministic (full-batch L-BFGS)."""
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (exits, n, classes)
        log_prior = self.prior.double().log()
        theta = torch.zeros_like(log_prior, requires_grad=True)
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            opt.zero_grad()
            with torch.enable_grad():
                loss = prefix_nll(log_probs, labels, log_prior + torch.log_softmax(theta, 0))
                loss.backward()
            return loss

        opt.step(objective)
        self.theta.copy_(theta.detach().float())
