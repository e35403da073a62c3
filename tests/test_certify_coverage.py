"""Coverage of the certificates on real outputs: a shipped model's validation and test files are pooled
(15,000 samples standing in for the population) and re-split at random; 5,000 samples certify (a drop of at
most 0.5 points with 90% confidence, both families) and the other 10,000 judge. Neither the drop promise nor
the certified MACs bound may break in more than 10% of the splits, give or take two standard errors."""

from functools import cache

import pytest

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.evaluation import ExitRecord
from aep_core.exits.certify import FAMILIES
from benchmarks.certificate_coverage import allowed_break_rate, load_pooled, resplit_coverage

SPLITS = 100
MAX_DROP, CONFIDENCE = 0.5, 0.9

# (model, rule, reference, certifiable): the ensemble of every exit of aep_uniform and aep_linear is itself
# more than a point below their final exit, so against the final exit the certificate must refuse
CASES = [
    (DEFAULT_MODEL, "max_probability", "final", True),  # the app's default, a cascade: the promise it is sold with
    (DEFAULT_MODEL, "entropy", "final", True),
    ("aep_hybrid", "max_probability", "final", True),
    ("aep_hybrid", "entropy", "final", True),
    ("aep_hybrid", "aep_ensemble", "final", True),
    ("aep_uniform", "max_probability", "final", True),
    ("aep_uniform", "entropy", "final", True),
    ("aep_uniform", "aep_ensemble", "final", False),
    ("aep_uniform", "aep_ensemble", "ensemble", True),
    ("aep_linear", "max_probability", "final", True),
    ("aep_linear", "entropy", "final", True),
    ("aep_linear", "aep_ensemble", "final", False),
    ("aep_linear", "aep_ensemble", "ensemble", True),
    ("eenet_l05", "eenet_confidence", "final", True),
    ("eenet_l2", "eenet_confidence", "final", True),
]


@cache
def _pooled(model: str) -> ExitRecord:
    return load_pooled(model)


@pytest.mark.parametrize("model,name,reference,certifiable", CASES)
def test_certificates_keep_their_promises_on_held_out_samples(model, name, reference, certifiable):
    rec = _pooled(model)
    assert rec.num_samples == 15_000
    result = resplit_coverage(
        rec, name, methods=FAMILIES, splits=SPLITS, max_drop_points=MAX_DROP, confidence=CONFIDENCE, reference=reference
    )
    allowed = allowed_break_rate(SPLITS, 1 - CONFIDENCE)
    for family, cov in result.items():
        assert cov.splits == SPLITS
        assert cov.drop_break_rate <= allowed, (family, cov.drop_break_rate, allowed)
        assert cov.cost_break_rate <= allowed, (family, cov.cost_break_rate, allowed)
        if certifiable:  # the rates above judge real certificates, not refusals
            assert cov.refused <= SPLITS // 10, (family, cov.refused)
            assert all(b >= 0 for b in cov.bounds) and len(cov.macs) == SPLITS - cov.refused
        else:
            assert cov.refused == SPLITS, (family, cov.refused)
