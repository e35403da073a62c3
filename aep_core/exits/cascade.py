"""A two-network cascade replayed on saved outputs: a small network answers every input whose top softmax
probability reaches a threshold t, and passes the others on to a big network, which answers them at its final
exit, run without early exits.

An input passed on pays both: the small network's MACs, then the big network's. Thresholds are chosen on one
pair of records (validation) and reported on another (test), as for exit rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import softmax


@dataclass(frozen=True)
class CascadeResult:
    """The outcome of a cascade at one threshold: accuracy, mean MACs per input and the share the small network
    answered, with the big network's MACs without exits as the reference cost."""

    threshold: float
    accuracy: float
    expected_macs: float
    small_share: float
    reference_macs: int  # MACs of the big network without exits

    @property
    def macs_ratio(self) -> float:
        """Mean MACs per input as a share of the big network's MACs without exits."""
        return self.expected_macs / self.reference_macs


def check_cascade_pair(small: ExitRecord, big: ExitRecord) -> None:
    """ConfigError unless the two records hold outputs on the same inputs in the same order (equal labels) over
    the same classes."""
    if small.num_samples != big.num_samples or not np.array_equal(small.labels, big.labels):
        raise ConfigError(
            f"A cascade needs both networks' outputs on the same inputs in the same order; the records hold "
            f"{small.num_samples:,} and {big.num_samples:,} samples whose labels differ."
        )
    if small.logits.shape[-1] != big.logits.shape[-1]:
        raise ConfigError(
            f"A cascade needs networks over the same classes; they predict {small.logits.shape[-1]} and "
            f"{big.logits.shape[-1]} classes."
        )


def cascade_replay(small: ExitRecord, big: ExitRecord, t: float) -> CascadeResult:
    """The cascade at threshold t: the small network (its last exit) answers the inputs whose top softmax
    probability is at least t, the big network's final exit answers the rest; t above 1 passes every input on,
    t of 0 or below lets the small network answer all."""
    value = float(t) if isinstance(t, Real) and not isinstance(t, bool) else math.nan
    if not math.isfinite(value):
        raise ConfigError(f"A cascade threshold is a finite number, got {t!r}.")
    check_cascade_pair(small, big)
    probs = softmax(small.logits[-1].astype(np.float64))  # (n, classes)
    answered = probs.max(-1) >= value  # (n,)
    prediction = np.where(answered, probs.argmax(-1), big.logits[-1].argmax(-1))
    share = float(answered.mean())
    macs = float(small.cum_macs[-1]) + (1.0 - share) * float(big.full_macs)
    return CascadeResult(value, float((prediction == big.labels).mean()), macs, share, int(big.full_macs))


def cascade_sweep(small: ExitRecord, big: ExitRecord, thresholds: Sequence[float]) -> list[CascadeResult]:
    """The cascade at each threshold."""
    return [cascade_replay(small, big, float(t)) for t in thresholds]
