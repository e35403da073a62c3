"""The two-network cascade replayed on saved outputs: a hand-computed example, the two ends of the threshold,
and records that do not pair up."""

import math

import numpy as np
import pytest

from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.cascade import cascade_replay, cascade_sweep


def _logits_for(probabilities: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is each row of `probabilities`, as one exit: (1, n, classes)."""
    return np.log(np.asarray(probabilities, dtype=np.float64))[None].astype(np.float32)


LABELS = np.array([0, 1, 1, 0])
# Top probabilities 0.9, 0.6, 0.8, 0.7; predictions 0 (right), 0 (wrong), 1 (right), 1 (wrong).
SMALL = ExitRecord(_logits_for([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]), LABELS, np.array([100]), 100)
# Two exits; the final exit predicts 0, 1, 0, 0 (right, right, wrong, right); without exits it costs 1000 MACs.
BIG = ExitRecord(
    np.stack([_logits_for([[0.5, 0.5]] * 4)[0], _logits_for([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.8, 0.2]])[0]]),
    LABELS,
    np.array([400, 1010]),
    1000,
)


def test_hand_computed_cascade():
    result = cascade_replay(SMALL, BIG, 0.75)
    # Samples 0 and 2 stay with the small network (0.9 and 0.8 >= 0.75), both right; samples 1 and 3 go on to
    # the big network's final exit, which gets both right.
    assert result.small_share == 0.5
    assert result.accuracy == 1.0
    assert result.expected_macs == 100 + 0.5 * 1000
    assert result.macs_ratio == pytest.approx(0.6)
    assert result.threshold == 0.75 and result.reference_macs == 1000
    # At 0.65 sample 3 (0.7) stays too, and the small network gets it wrong.
    lower = cascade_replay(SMALL, BIG, 0.65)
    assert (lower.small_share, lower.accuracy, lower.expected_macs) == (0.75, 0.75, 100 + 0.25 * 1000)


def test_threshold_above_one_passes_everything_on():
    result = cascade_replay(SMALL, BIG, math.nextafter(1.0, 2.0))
    assert result.small_share == 0.0
    assert result.accuracy == 0.75  # the big network's final exit alone
    assert result.expected_macs == 100 + 1000  # every input pays both networks


def test_threshold_zero_answers_everything_small():
    result = cascade_replay(SMALL, BIG, 0)
    assert result.small_share == 1.0
    assert result.accuracy == 0.5  # the small network alone
    assert result.expected_macs == 100


def test_sweep_is_one_replay_per_threshold():
    results = cascade_sweep(SMALL, BIG, [0.0, 0.75, 2.0])
    assert [r.small_share for r in results] == [1.0, 0.5, 0.0]


def test_records_that_do_not_pair_up_are_refused():
    shuffled = ExitRecord(SMALL.logits, LABELS[[1, 0, 2, 3]], SMALL.cum_macs, SMALL.full_macs)
    with pytest.raises(ConfigError, match="same inputs in the same order"):
        cascade_replay(shuffled, BIG, 0.5)
    fewer = ExitRecord(SMALL.logits[:, :3], LABELS[:3], SMALL.cum_macs, SMALL.full_macs)
    with pytest.raises(ConfigError, match="same inputs"):
        cascade_replay(fewer, BIG, 0.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "0.5", None])
def test_a_threshold_must_be_a_finite_number(bad):
    with pytest.raises(ConfigError, match="finite number"):
        cascade_replay(SMALL, BIG, bad)
