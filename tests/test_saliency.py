"""Per-exit saliency: one map per exit for every Captum method, no hooks left on the shared model,
and concurrent calls do not disturb each other."""

import threading

import numpy as np
import pytest
import torch

from aep_core.analysis.saliency import METHODS, ExitModule, exit_saliency, overlay
from aep_core.models import ModelSpec, build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelSpec()).eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(1, 1, 28, 28)


def _hooks(m: torch.nn.Module) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) + len(x._backward_hooks) for x in m.modules())


def test_exit_module_returns_that_exits_logits(model, image):
    with torch.no_grad():
        out = model(image)
        for k in range(model.num_exits):
            assert torch.allclose(ExitModule(model, k)(image), out.logits[k])


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_one_map_per_exit(model, image, method):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = exit_saliency(model, image, method)
    assert len(maps) == model.num_exits
    for k, m in enumerate(maps):
        assert m.exit == k and m.heatmap.shape == (28, 28)
        assert np.isfinite(m.heatmap).all() and m.heatmap.min() >= 0 and m.heatmap.max() <= 1
        assert m.target == m.predicted and 0 < m.probability <= 1
    assert _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_chosen_target_is_explained(model, image):
    maps = exit_saliency(model, image, "saliency", target=3)
    assert all(m.target == 3 for m in maps)
    other = exit_saliency(model, image, "saliency", target=7)
    assert not np.allclose(maps[-1].heatmap, other[-1].heatmap)


def test_unknown_method_is_refused(model, image):
    with pytest.raises(ValueError, match="Unknown saliency method"):
        exit_saliency(model, image, "magic")


def test_concurrent_calls_match_sequential(model, image):
    expected = [m.heatmap for m in exit_saliency(model, image, "grad_cam")]
    results: list = [None] * 3

    def work(i: int) -> None:
        results[i] = [m.heatmap for m in exit_saliency(model, image, "grad_cam")]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(r, expected, strict=True))


def test_overlay_shapes():
    img = np.zeros((28, 28), np.uint8)
    heat = np.zeros((28, 28), np.float32)
    heat[5, 5] = 1.0
    out = overlay(img, heat)
    assert out.shape == (28, 28, 3) and out.dtype == np.uint8
    assert out[5, 5, 0] > out[0, 0, 0]
