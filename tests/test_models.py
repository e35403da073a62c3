"""Every registered model (each in its registered tiny config): forward, exit count and shapes, running up
to each exit, backward, and per-segment ONNX export checked with onnxruntime."""

import numpy as np
import pytest
import torch

from aep_core.errors import ConfigError
from aep_core.models import HEAD_TYPES, ModelSpec, build_model, get_backbone, list_models, place_exits
from aep_core.models.placement import GOLDEN_RATIO

torch.set_num_threads(1)
MODELS = list(list_models())


def tiny_spec(name: str, head: str = "aep", in_channels: int = 1, image_size: int = 12) -> ModelSpec:
    return ModelSpec(
        backbone=name,
        backbone_config=get_backbone(name).tiny_config,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=7,
        head=head,
        placement="stages",
    )


def test_every_registered_model_has_a_description():
    assert MODELS and all(isinstance(d, str) and d.strip() for d in list_models().values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("head", list(HEAD_TYPES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes_and_upto(name, head, in_channels):
    spec = ModelSpec(
        backbone=name,
        backbone_config=get_backbone(name).tiny_config,
        in_channels=in_channels,
        image_size=16,
        num_classes=7,
        head=head,
        placement="stages",
    )
    model = build_model(spec).eval()
    x = torch.randn(3, in_channels, 16, 16)
    out = model(x)
    assert len(out.logits) == model.num_exits == len(spec.exit_blocks) >= 2
    assert all(z.shape == (3, 7) for z in out.logits)
    if HEAD_TYPES[head].has_confidence:
        assert len(out.confidences) == model.num_exits
        assert all(c.shape == (3,) and ((c >= 0) & (c <= 1)).all() for c in out.confidences)
    else:
        assert out.confidences is None
    for k in range(model.num_exits):
        part = model(x, upto=k)
        assert len(part.logits) == k + 1
        torch.testing.assert_close(part.logits[k], out.logits[k])
    torch.testing.assert_close(model.forward_final(x), out.logits[-1])


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    model = build_model(tiny_spec(name, head="eenet"))
    out = model(torch.randn(4, 1, 12, 12))
    (sum(z.sum() for z in out.logits) + sum(c.sum() for c in out.confidences)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_per_segment_onnx_export_matches_pytorch(name, tmp_path):
    import onnxruntime as ort

    from aep_core.deploy.export import export_onnx, make_segments, segment_inputs, verify_onnx

    torch.manual_seed(0)
    # the first three blocks with an exit after each (a pruned model): every block kind of the backbone's first
    # stages in a few seconds, however deep the backbone
    spec = tiny_spec(name, head="eenet")
    spec.exit_blocks, spec.num_blocks = [0, 1, 2], 3
    model = build_model(spec).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so a wrong export cannot pass by chance
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    splits, shape = [0], (1, 12, 12)
    paths = export_onnx(model, splits, tmp_path, shape)
    assert len(paths) == len(splits) + 1
    x = torch.randn(5, *shape)
    for seg, h, path in zip(make_segments(model, splits), segment_inputs(model, splits, x), paths, strict=True):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: h.numpy()})
        with torch.no_grad():
            want = seg(h)
        assert len(got) == len(want) == 3  # features, logits, confidences
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-3)
    check = verify_onnx(model, splits, paths, shape, batch=3)
    assert check.ok, check.format()


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ConfigError, match="6n\\+2"):
        build_model(ModelSpec(backbone="resnet", backbone_config={"depth": 21}))


def test_resnet20_has_nine_blocks_in_three_stages():
    model = build_model(ModelSpec(backbone="resnet20", in_channels=3, image_size=32, placement="stages"))
    assert len(model.backbone.blocks) == 9
    assert model.exit_blocks == [2, 5, 8]


def test_unknown_model_and_placement_are_clear_errors():
    with pytest.raises(ConfigError, match=r"Unknown model .vgg99.. Choose one of: compact_cnn"):
        build_model(ModelSpec(backbone="vgg99"))
    with pytest.raises(ConfigError, match="Unknown exit placement"):
        build_model(ModelSpec(placement="everywhere"))


def test_cost_fraction_placements_follow_the_formulas():
    cum = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # F = 100
    stages = [0] * 10
    # linear, N=3: T = 25, 50, 75 -> blocks with cum >= T: 2 (30), 4 (50), 7 (80); plus the last block
    assert place_exits("linear", stages, cum, 3) == [2, 4, 7, 9]
    # pareto, N=2: T = 20, 36 -> blocks 1, 3
    assert place_exits("pareto", stages, cum, 2) == [1, 3, 9]
    # fine, N=2: T = 5, 9.75 -> block 0, then the next free block reaching 9.75 (as the authors' code)
    assert place_exits("fine", stages, cum, 2) == [0, 1, 9]
    # fine, N=9: every target is below 40; each exit takes the next block
    assert place_exits("fine", stages, cum, 9) == list(range(10))
    # gold_ratio, N=2: T = 100 * phi^-2 = 38.197, 100 * phi^-1 = 61.803 -> blocks 3, 6
    assert place_exits("gold_ratio", stages, cum, 2) == [3, 6, 9]
    assert pytest.approx(1.6180339887498949, abs=1e-15) == GOLDEN_RATIO
    # targets above the last block but one, or more exits than blocks: refused, never merged
    with pytest.raises(ConfigError, match=r"cannot fit 4 early exits .* only 2 of its 4 blocks"):
        place_exits("linear", [0] * 5, [10, 20, 30, 80, 100], 4)  # T = 20, 40, 60, 80 -> blocks 1, 3, then none
    with pytest.raises(ConfigError, match="cannot fit 10 early exits"):
        place_exits("fine", stages, cum, 10)
    assert place_exits("stages", [0, 0, 1, 1, 2], None) == [1, 3, 4]
    assert place_exits("blocks", [0, 0, 1], None) == [0, 1, 2]
    assert place_exits([2, 0], [0, 0, 1, 1]) == [0, 2, 3]
    with pytest.raises(ConfigError):
        place_exits([7], [0, 0, 1])


@pytest.mark.parametrize("head", ["aep", "eenet"])
def test_head_pool_keeps_a_spatial_grid_and_survives_a_checkpoint(head, tmp_path):
    from aep_core.checkpoint import load_checkpoint, model_meta, save_checkpoint

    spec = ModelSpec(backbone_config={"widths": [8, 16, 32]}, head=head, head_pool=3)
    model = build_model(spec).eval()
    first = model.heads[0]
    linear = first.fc if head == "aep" else first.classifier
    assert linear.in_features == 8 * 3 * 3  # channels x pooled grid
    x = torch.randn(2, 1, 28, 28)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, model_meta(spec, model))
    loaded, meta = load_checkpoint(path)
    assert meta.model.head_pool == 3
    torch.testing.assert_close(loaded.eval()(x).logits[0], model(x).logits[0])


def test_head_pool_below_one_is_a_clear_error():
    with pytest.raises(ConfigError, match="at least 1x1"):
        build_model(ModelSpec(head_pool=0))


@pytest.mark.parametrize("size,pool", [(28, 4), (14, 4), (7, 4), (7, 3), (5, 1), (9, 2)])
def test_grid_pooling_equals_adaptive_average_pooling(size, pool):
    from aep_core.models.heads import GridAvgPool

    x = torch.randn(3, 5, size, size, requires_grad=True)
    ours, ref = GridAvgPool(pool)(x), torch.nn.functional.adaptive_avg_pool2d(x, pool)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)
    g = torch.randn_like(ref)
    (grad_ours,) = torch.autograd.grad(ours, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_inference_preparation_folds_batchnorm_and_keeps_outputs(name):
    from aep_core.models.inference import as_model_input, fold_batchnorm, prepare_for_inference

    torch.manual_seed(0)
    channels, size = 3, 16
    m = build_model(
        ModelSpec(
            backbone=name,
            backbone_config=get_backbone(name).tiny_config,
            in_channels=channels,
            image_size=size,
            head_pool=2,
        )
    ).eval()
    for mod in m.modules():  # non-trivial statistics, so a wrong fold would show
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.2, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(6, channels, size, size)
    n_bn = sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    fast = prepare_for_inference(m)
    assert sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in fast.modules()) == 0
    assert sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()) == n_bn  # the original is untouched
    assert fold_batchnorm(fast) == 0
    with torch.no_grad():
        ref, out = m(x), fast(as_model_input(x))
    for a, b in zip(ref.logits, out.logits, strict=True):
        # float rounding grows with depth and with the logits' scale (random statistics make it large)
        assert torch.allclose(a, b, atol=1e-5 * max(float(a.abs().max()), 1.0), rtol=1e-4)
