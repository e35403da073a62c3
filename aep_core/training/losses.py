"""Losses of the training methods: AEP weighted joint loss, EENet cumulative losses, self-distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-12


def weighted_exit_loss(logits: Sequence[torch.Tensor], y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """AEP joint loss: L = sum_i w_i * CE(y, z_i)."""
    return sum(w * F.cross_entropy(z, y) for w, z in zip(weights, logits, strict=True))


def ensemble_probs(logits: Sequence[torch.Tensor], weights: torch.Tensor, upto: int | None = None) -> torch.Tensor:
    """AEP ensemble of exits 0..upto: sum_i w_i softmax(z_i) / sum_i w_i, shape (b, classes)."""
    k = len(logits) - 1 if upto is None else upto
    w = weights[: k + 1]
    probs = torch.stack([torch.softmax(z, dim=1) for z in logits[: k + 1]])  # (k+1, b, classes)
    return (w[:, None, None] * probs).sum(0) / w.sum()


def prefix_nll(log_probs: torch.Tensor, labels: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """Mean over prefixes k of NLL(y, sum_{i<=k} w_i p_i / sum_{i<=k} w_i), from per-exit log-probabilities
    (exits, n, classes) and unnormalised log-weights (exits,)."""
    joint = log_w[:, None, None] + log_probs  # (exits, n, classes): log(w_i p_i)
    cum = torch.logcumsumexp(joint, dim=0) - torch.logcumsumexp(log_w, dim=0)[:, None, None]
    picked = cum.gather(2, labels.view(1, -1, 1).expand(cum.shape[0], -1, 1))  # (exits, n, 1)
    return -picked.mean()


def prefix_ensemble_loss(logits: Sequence[torch.Tensor], y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over prefixes k of CE(y, log ensemble of exits 0..k) with fixed `weights`; gradients reach every exit."""
    log_p = torch.stack([torch.log_softmax(z, dim=1) for z in logits])  # (exits, b, classes)
    return prefix_nll(log_p, y, weights.to(log_p.dtype).log())


def eenet_cumulative(
    probs: Sequence[torch.Tensor], confidences: Sequence[torch.Tensor], cost_rates: Sequence[float]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """EENet cumulative predictions and costs, from the last exit N backwards:
    Y_N = p_N, Y_i = h_i p_i + (1 - h_i) Y_{i+1};  C_N = 1, C_i = h_i c_i + (1 - h_i) C_{i+1}.
    probs: (b, classes) per exit; confidences h_i: (b,) per exit (the last one is unused); cost_rates c_i."""
    n = len(probs) - 1
    cum_pred: list[torch.Tensor] = [probs[n]] * (n + 1)
    cum_cost: list[torch.Tensor] = [torch.ones_like(confidences[n])] * (n + 1)
    for i in range(n - 1, -1, -1):
        h = confidences[i]
        cum_pred[i] = h[:, None] * probs[i] + (1 - h[:, None]) * cum_pred[i + 1]
        cum_cost[i] = h * cost_rates[i] + (1 - h) * cum_cost[i + 1]
    return cum_pred, cum_cost


def _nll(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(p.clamp_min(EPS).log(), y)


EENET_LOSS_VERSIONS = ("v1", "v2")


def eenet_loss(
    logits: Sequence[torch.Tensor],
    confidences: Sequence[torch.Tensor],
    y: torch.Tensor,
    cost_rates: Sequence[float],
    lam: float,
    version: str = "v2",
) -> torch.Tensor:
    """EENet loss, from the per-exit terms NLL(Y_i) + lambda * mean(C_i), i = 0..N: v1 is exit 0's term alone,
    v2 (the authors' default for one-stage training) the sum of every exit's term."""
    pred, cost = eenet_cumulative([torch.softmax(z, 1) for z in logits], confidences, cost_rates)
    terms = [_nll(p, y) + lam * c.mean() for p, c in zip(pred, cost, strict=True)]
    return terms[0] if version == "v1" else sum(terms)


def per_exit_loss(logits: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Plain sum of every exit's cross-entropy (the first stage of EENet's two-stage training)."""
    return sum(F.cross_entropy(z, y) for z in logits)


def self_distillation_loss(
    logits: Sequence[torch.Tensor], y: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Self-distillation: the last exit learns from labels; every earlier exit i minimises
    (1 - alpha) * CE(y, z_i) + alpha * T^2 * KL(softmax(z_N / T) || softmax(z_i / T)), teacher detached."""
    teacher = torch.softmax(logits[-1].detach() / temperature, dim=1)
    loss = F.cross_entropy(logits[-1], y)
    for z in logits[:-1]:
        kl = F.kl_div(F.log_softmax(z / temperature, dim=1), teacher, reduction="batchmean")
        loss = loss + (1 - alpha) * F.cross_entropy(z, y) + alpha * temperature**2 * kl
    return loss
