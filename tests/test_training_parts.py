"""Weighting schemes, EENet cumulative losses against a hand-computed example, distillation."""

import math

import pytest
import torch
import torch.nn.functional as F

from aep_core.errors import ConfigError
from aep_core.training import losses
from aep_core.training.weighting import SCHEMES, ExitWeighting, scheme_weights

COSTS = {2: [0.4, 1.0], 3: [0.2, 0.5, 1.0], 5: [0.1, 0.25, 0.5, 0.8, 1.0]}


@pytest.mark.parametrize("num_exits", sorted(COSTS))
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_weights_are_positive_and_sum_to_one(scheme, num_exits):
    w = scheme_weights(scheme, num_exits, costs=COSTS[num_exits], base=1.5)
    assert w.shape == (num_exits,) and w.dtype == torch.float32
    assert (w > 0).all()
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_exit_weighting_starts_at_the_scheme_weights_and_trains_on_its_prior(scheme):
    spec = SCHEMES[scheme]
    assert spec.name == scheme and spec.label and spec.help
    weighting = ExitWeighting(scheme, 4, costs=COSTS[5][1:], base=3.0)
    assert torch.equal(weighting(), scheme_weights(scheme, 4, costs=COSTS[5][1:], base=3.0))
    assert weighting.trainable == spec.trainable
    assert list(weighting.parameters()) == []  # nothing the optimiser of the network could move
    with torch.no_grad():
        weighting.theta.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
    torch.testing.assert_close(weighting.loss_weights(), scheme_weights(scheme, 4, costs=COSTS[5][1:], base=3.0))


@pytest.mark.parametrize("scheme", [name for name, spec in SCHEMES.items() if spec.needs_costs])
def test_a_cost_scheme_without_costs_is_a_clear_error(scheme):
    with pytest.raises(ConfigError, match="needs the per-exit costs"):
        scheme_weights(scheme, 3)
    with pytest.raises(ConfigError, match="needs the per-exit costs"):
        ExitWeighting(scheme, 3)


def test_fixed_schemes_match_their_formulas():
    torch.testing.assert_close(ExitWeighting("uniform", 4)(), torch.full((4,), 0.25))
    torch.testing.assert_close(ExitWeighting("linear", 4)(), torch.tensor([1, 2, 3, 4]) / 10.0)
    torch.testing.assert_close(ExitWeighting("geometric", 3, base=2.0)(), torch.tensor([2, 4, 8]) / 14.0)
    torch.testing.assert_close(ExitWeighting("cost", 2, costs=[1.0, 3.0])(), torch.tensor([0.25, 0.75]))
    # hybrid starts at its linear prior (theta = 0)
    torch.testing.assert_close(ExitWeighting("hybrid", 4)(), torch.tensor([1, 2, 3, 4]) / 10.0)


def test_prefix_ensemble_loss_is_the_mean_over_prefixes_and_trains_every_exit():
    logits = [torch.randn(6, 4, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w = torch.tensor([0.2, 0.3, 0.5])
    expected = sum(F.nll_loss(losses.ensemble_probs(logits, w, k).log(), y) for k in range(3)) / 3
    loss = losses.prefix_ensemble_loss(logits, y, w)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in logits)


@pytest.mark.parametrize("scheme", [name for name, spec in SCHEMES.items() if spec.trainable])
def test_fitted_weights_favour_the_exit_that_helps_every_prefix(scheme):
    # Exit 1 always predicts the label, exits 0 and 2 are uninformative: every prefix from 1 on wants exit 1.
    y = torch.arange(4).repeat(8)
    logits = torch.zeros(3, len(y), 4)
    logits[1] = F.one_hot(y, 4) * 8.0
    weighting = ExitWeighting(scheme, 3)
    weighting.fit(logits, y)
    w = weighting()
    assert w[1] > 0.9 and math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)


def test_fitted_weights_serve_early_prefixes_not_only_the_full_depth():
    # Exit 2 is perfect, exit 1 is right on half the samples and exit 0 is uninformative. The full-depth
    # ensemble wants exit 2 alone, but the prefix 0..1 only has exits 0 and 1: exit 1 must outweigh exit 0.
    y = torch.arange(4).repeat(8)
    logits = torch.zeros(3, len(y), 4)
    logits[2] = F.one_hot(y, 4) * 8.0
    half = torch.arange(len(y)) % 2 == 0
    logits[1][half] = F.one_hot(y[half], 4) * 4.0
    weighting = ExitWeighting("learned", 3)
    weighting.fit(logits, y)
    w = weighting()
    assert w[2] > w[1] > w[0]
    assert w[1] / (w[0] + w[1]) > 0.8


def test_hybrid_loss_adds_the_prefix_ensembles_and_other_schemes_do_not():
    assert [name for name, spec in SCHEMES.items() if spec.ensemble_in_loss] == ["hybrid"]
    assert SCHEMES["hybrid"].build is SCHEMES["linear"].build  # same prior; differs in its loss term


def test_unknown_scheme_is_clear():
    with pytest.raises(ConfigError, match="Choose one of"):
        ExitWeighting("quadratic", 3)
    with pytest.raises(ConfigError, match="Unknown weighting scheme 'quadratic'"):
        scheme_weights("quadratic", 3)


def test_ensemble_probs_is_weighted_average():
    z = [torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])]  # softmax: [.5,.5], [.75,.25]
    w = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(losses.ensemble_probs(z, w), torch.tensor([[0.6875, 0.3125]]))
    torch.testing.assert_close(losses.ensemble_probs(z, w, upto=0), torch.tensor([[0.5, 0.5]]))


def test_eenet_recursion_matches_hand_computation():
    # 3 exits, one sample, 2 classes; h = confidences of exits 0 and 1; c = cost rates.
    p = [torch.tensor([[0.9, 0.1]]), torch.tensor([[0.6, 0.4]]), torch.tensor([[0.2, 0.8]])]
    h = [torch.tensor([0.5]), torch.tensor([0.25]), torch.tensor([0.7])]
    c = [0.2, 0.5, 1.0]
    pred, cost = losses.eenet_cumulative(p, h, c)
    # Y2 = p2; Y1 = .25*[.6,.4] + .75*[.2,.8] = [.3,.7]; Y0 = .5*[.9,.1] + .5*[.3,.7] = [.6,.4]
    torch.testing.assert_close(pred[2], torch.tensor([[0.2, 0.8]]))
    torch.testing.assert_close(pred[1], torch.tensor([[0.3, 0.7]]))
    torch.testing.assert_close(pred[0], torch.tensor([[0.6, 0.4]]))
    # C2 = 1; C1 = .25*.5 + .75*1 = .875; C0 = .5*.2 + .5*.875 = .5375
    torch.testing.assert_close(cost[1], torch.tensor([0.875]))
    torch.testing.assert_close(cost[0], torch.tensor([0.5375]))
    logits = [pi.log() for pi in p]  # softmax(log p) = p
    y = torch.tensor([0])
    lam = 0.1
    v1 = losses.eenet_loss(logits, h, y, c, lam, "v1")
    assert math.isclose(float(v1), -math.log(0.6) + lam * 0.5375, rel_tol=1e-5)
    v2 = losses.eenet_loss(logits, h, y, c, lam, "v2")
    expected = (-math.log(0.6) + lam * 0.5375) + (-math.log(0.3) + lam * 0.875) + (-math.log(0.2) + lam * 1.0)
    assert math.isclose(float(v2), expected, rel_tol=1e-5)


def test_self_distillation_reduces_to_ce_when_alpha_is_zero():
    z = [torch.randn(6, 5) for _ in range(3)]
    y = torch.randint(0, 5, (6,))
    got = losses.self_distillation_loss(z, y, temperature=2.0, alpha=0.0)
    torch.testing.assert_close(got, sum(F.cross_entropy(zi, y) for zi in z))
    # with alpha = 1 and identical student and teacher, the KL part vanishes
    same = [z[2].clone(), z[2].clone(), z[2]]
    torch.testing.assert_close(losses.self_distillation_loss(same, y, 2.0, 1.0), F.cross_entropy(z[2], y))
