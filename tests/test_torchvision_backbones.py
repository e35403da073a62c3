"""Exits on torchvision classifiers: every registered family runs segment by segment exactly as torchvision runs
it and loads its weights (three or one channels, classifier kept or new); the exits really stop, export, prune,
explain and train like the package's own backbones; exit points are named by blocks or graph nodes; unsupported
classifiers, unsafe or mismatched weights and weights not on disk fail with one clear message, never a
download."""

import re
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from aep_core.analysis.pruning import prune_model
from aep_core.analysis.saliency import exit_saliency
from aep_core.checkpoint import SplitMetrics, TrainingMeta, load_checkpoint, model_meta, save_checkpoint
from aep_core.cli.main import main
from aep_core.cli.train import exit_placement
from aep_core.cost import cumulative_block_macs
from aep_core.data import DataBundle, TensorImageDataset
from aep_core.errors import CheckpointError, ConfigError
from aep_core.exits.rules import ExitRule, ModelExits, get_rule, make_rule
from aep_core.exits.runtime import EarlyExitRunner, record_outputs
from aep_core.models import EarlyExitNet, ModelSpec, build_model
from aep_core.models.heads import AEPHead, OwnClassifierHead
from aep_core.models.torchvision_backbones import (
    FAMILIES,
    UNSUPPORTED,
    TorchvisionBackbone,
    block_output_nodes,
    family_of,
    last_of,
    load_torchvision_weights,
    supported_archs,
)
from aep_core.training import MethodSettings, TrainConfig, build_method, train
from aep_core.training.job import TrainJob, build_for_job, job_normalisation

SIDE = 32  # input side: small enough for seconds per family, large enough for every family's downsampling
SLOW = {"vgg"}  # families whose smallest member takes seconds to build: checked once, by the first test
ALL_ARCHS = [pytest.param(spec.smallest, id=name) for name, spec in FAMILIES.items()]
# the members a practitioner reaches for beside each family's smallest: other block kinds (bottleneck, SE)
NAMED_ARCHS = ["resnet50", "mobilenet_v3_large", "regnet_y_400mf"]
FAST_ARCHS = [pytest.param(spec.smallest, id=name) for name, spec in FAMILIES.items() if name not in SLOW]
EXPORTED = ["mobilenet_v3_small", "resnet18", "convnext_tiny", "efficientnet_b0"]
EXPORTED_WHOLE = "mobilenet_v3_small"  # exported with its own classifier; the others up to their second exit


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


def tv_spec(arch: str, in_channels: int = 3, num_classes: int = 10, **settings) -> ModelSpec:
    """A torchvision-backbone model spec at SIDE x SIDE, exits after every stage unless `settings` say otherwise."""
    settings.setdefault("placement", "stages")
    return ModelSpec(
        backbone="torchvision",
        backbone_config={"arch": arch},
        in_channels=in_channels,
        image_size=SIDE,
        num_classes=num_classes,
        **settings,
    )


def tv_model(arch: str, in_channels: int = 3, num_classes: int = 10, **settings) -> EarlyExitNet:
    torch.manual_seed(0)
    return build_model(tv_spec(arch, in_channels, num_classes, **settings)).eval()


def images(n: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def realistic_norms(module: nn.Module) -> nn.Module:
    """Random normalisation weights, and BatchNorm statistics measured on random images, in eval mode: a network
    whose activations keep their scale through its depth, so that its output depends on its input and a layer
    loaded or exported wrongly shows (with torchvision's initial weights and statistics some families' outputs
    fade to a constant)."""
    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))]
    channels = next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels
    with torch.no_grad():
        for m in norms:
            if m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # statistics of the one batch seen
        module.train()(images(8, channels, seed=99))
    for m in norms:
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return module.eval()


def random_net(arch: str, num_classes: int, seed: int = 1) -> nn.Module:
    """The torchvision classifier `arch` with random weights and normalisations, in eval mode. Its seed differs
    from the models' (0), so that a layer left out of loading does not match by chance."""
    torch.manual_seed(seed)
    return realistic_norms(torchvision.models.get_model(arch, num_classes=num_classes)).eval()


def last_layer(net: nn.Module) -> nn.Module:
    """The layer giving a torchvision classifier's logits (its last Linear or Conv2d)."""
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def widened(net: nn.Module, num_classes: int) -> dict[str, torch.Tensor]:
    """`net`'s state_dict with its last layer given `num_classes` outputs, its own as the first rows."""
    name = next(n for n, m in net.named_modules() if m is last_layer(net))
    state = dict(net.state_dict())
    for key in (f"{name}.weight", f"{name}.bias"):
        own = state[key]
        extra = torch.randn(num_classes - own.shape[0], *own.shape[1:], generator=torch.Generator().manual_seed(1))
        state[key] = torch.cat([own, extra * own.std()])
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(arch, classes) -> a 10-class torchvision classifier with random weights, and a file holding its state_dict
    with the last layer given `classes` outputs (its own ten first)."""
    folder = tmp_path_factory.mktemp("weights")
    cache: dict[tuple[str, int], tuple[nn.Module, Path]] = {}

    def get(arch: str, num_classes: int = 10) -> tuple[nn.Module, Path]:
        if (arch, num_classes) in cache:
            return cache[(arch, num_classes)]
        net = cache[(arch, 10)][0] if (arch, 10) in cache else random_net(arch, 10)
        path = folder / f"{arch}-{num_classes}.pth"
        torch.save(net.state_dict() if num_classes == 10 else widened(net, num_classes), path)
        if family_of(arch).name not in SLOW:  # hundreds of MB: not kept for later tests
            cache[(arch, num_classes)] = net, path
        return net, path

    yield get
    for path in folder.iterdir():  # vgg11's file alone is half a gigabyte
        path.unlink()


# ---- the network, segment by segment ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ALL_ARCHS + NAMED_ARCHS)
def test_segment_by_segment_equals_torchvision(arch, weights):
    net, path = weights(arch)
    model = tv_model(arch)
    loaded = load_torchvision_weights(model, str(path))
    assert loaded.classifier_kept and loaded.source == str(path) and loaded.mean is None
    assert isinstance(model.backbone, TorchvisionBackbone) and model.backbone.arch == arch
    assert model.final_is_native and model.num_exits >= 2, "every family has an exit before its classifier"
    x = images(2)
    with torch.no_grad():
        want = net(x)
        assert (want[0] - want[1]).abs().max() > 0.05 * want.abs().max(), "the network's output ignores its input"
        torch.testing.assert_close(model.forward_final(x), want, atol=1e-5, rtol=0)
        out = model(x)
    assert len(out.logits) == model.num_exits
    torch.testing.assert_close(out.logits[-1], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_one_channel_model_reads_a_grey_image_as_torchvision_reads_its_grey_rgb_copy(arch, weights):
    net, path = weights(arch)
    model = tv_model(arch, in_channels=1)
    load_torchvision_weights(model, str(path))
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 1
    x1 = images(2, channels=1)
    with torch.no_grad():
        want = net(x1.expand(-1, 3, -1, -1))
        # summing the colour weights first rounds differently, and deep networks amplify it: a tolerance to scale
        torch.testing.assert_close(model(x1).logits[-1], want, atol=1e-4 * float(want.abs().max()), rtol=1e-4)


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_a_1000_class_file_gives_a_10_class_model_its_backbone_and_a_new_last_layer(arch, weights):
    net, path = weights(arch, 1000)
    model = tv_model(arch)
    loaded = load_torchvision_weights(model, str(path))
    assert not loaded.classifier_kept
    src, dst = last_layer(net), last_of(model)
    assert dst.weight.shape[0] == 10 and not torch.equal(dst.weight, src.weight)
    # Given the file's first ten rows (the 10-class network's last layer), the model is that network: everything
    # else (the backbone and the classifier's earlier layers) came from the file.
    x = images(2)
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
        torch.testing.assert_close(
            model.forward_final(x),
            net(x),
            atol=1e-5,
            rtol=0,
            msg=lambda m: f"the file's classifier layers before the last one were not loaded: {m}",
        )


@pytest.mark.parametrize("arch", FAST_ARCHS)
def test_exit_points_are_named_by_block_or_by_the_graph_node_giving_its_output(arch, weights):
    from torchvision.models.feature_extraction import create_feature_extractor

    net, path = weights(arch)
    model = tv_model(arch, placement="blocks")
    load_torchvision_weights(model, str(path))
    backbone, n = model.backbone, len(model.backbone.blocks)
    nodes = block_output_nodes(arch)
    assert len(nodes) == len(set(nodes)) == n == model.num_exits
    assert [backbone.exit_point_index(name) for name in backbone.block_names] == list(range(n))
    assert backbone.exit_point_index(nodes[n // 2]) == n // 2
    x = images(2)
    with torch.no_grad():
        at_nodes = create_feature_extractor(net, return_nodes=list(nodes)).eval()(x)
        h = x
        for k, node in enumerate(nodes):
            h = model.forward_segment(h, k)
            assert torch.allclose(h, at_nodes[node], atol=1e-5), (
                f"graph node '{node}' does not give the output of block {k} ({backbone.block_names[k]})"
            )


# ---- exit points by name, and placements -------------------------------------------------------------------


def test_graph_nodes_block_names_and_indices_place_exits_together():
    nodes = block_output_nodes("resnet18")
    assert nodes[1].startswith("layer1.1.")  # a graph node, not the block's name
    placement = exit_placement(f"{nodes[1]}, layer2.1,5")  # as `train --exits` reads it
    assert placement == [nodes[1], "layer2.1", 5]
    assert build_model(tv_spec("resnet18", placement=placement)).exit_blocks == [1, 3, 5, 7]


def test_a_node_inside_a_block_and_an_unknown_name_are_clear_errors():
    with pytest.raises(ConfigError, match=r"'layer2\.0\.conv1' is inside block 'layer2\.0': an exit follows a whole"):
        build_model(tv_spec("resnet18", placement=["layer2.0.conv1"]))
    with pytest.raises(ConfigError, match=r"'layer9' is not an exit point of resnet18\. Exit points .*layer1\.0, "):
        build_model(tv_spec("resnet18", placement=["layer9"]))
    with pytest.raises(ConfigError, match="list-models --torchvision resnet18"):
        build_model(tv_spec("resnet18", placement=["layer9"]))


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])
def test_cost_fraction_placement_puts_each_exit_after_its_share_of_the_macs(arch):
    model = tv_model(arch, placement="linear", num_early_exits=2)
    n = len(model.backbone.blocks)
    assert len(model.exit_blocks) == 3 and model.exit_blocks[-1] == n - 1 and model.final_is_native
    cum = cumulative_block_macs(model.backbone, (3, SIDE, SIDE))
    for i, b in enumerate(model.exit_blocks[:2]):
        assert cum[b] >= cum[-1] * (i + 1) / 3 > (cum[b - 1] if b else 0)


# ---- the runtime really stops ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_model():
    return realistic_norms(tv_model("mobilenet_v3_small"))


def spread_rule(name: str, model: EarlyExitNet, rec) -> ExitRule:
    """The rule at a setting that spreads the samples over the exits (thresholds at quantiles of the record's
    own scores; the middle value of a whole-number setting)."""
    exits, spec = ModelExits.of_model(model, None), get_rule(name)
    if spec.has_thresholds:
        score, _ = make_rule(name, exits).scores(rec.logits, rec.confidences)
        q = 0.35 if spec.lower_is_confident else 0.65
        return make_rule(name, exits, thresholds=[float(np.quantile(score[k], q)) for k in range(model.num_exits - 1)])
    values = spec.setting.values(model.num_exits)
    return make_rule(name, exits, **{spec.setting.keyword: values[len(values) // 2]})


@pytest.mark.parametrize("optimize", [True, False], ids=["prepared", "as-is"])
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("name", ["max_probability", "patience"])
def test_runner_agrees_with_the_replay_of_the_recorded_outputs(runtime_model, name, batch_size, optimize):
    x, labels = images(24, seed=1), np.arange(24) % 10
    n = runtime_model.num_exits
    rec = record_outputs(runtime_model, x, labels, list(range(1, n + 1)), n, batch_size=batch_size, optimize=optimize)
    rule = spread_rule(name, runtime_model, rec)
    replay = rule.replay(rec)
    run = EarlyExitRunner(runtime_model, rule, optimize=optimize).run(x, batch_size)
    assert np.array_equal(run.exit_index, replay.exit_index)
    assert np.array_equal(run.prediction, replay.prediction)
    if get_rule(name).has_thresholds:
        assert len(np.unique(replay.exit_index)) >= 3  # samples leave the batch at several exits


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_sample_stopping_at_exit_0_runs_no_later_block(runtime_model, batch_size):
    model = runtime_model
    calls = [0] * len(model.backbone.blocks)  # forward calls of each block, whatever their batch
    samples = [0] * len(model.backbone.blocks)

    def count(i: int, inputs: tuple[torch.Tensor, ...]) -> None:
        calls[i] += 1
        samples[i] += len(inputs[0])

    hooks = [
        block.register_forward_hook(lambda mod, inp, out, i=i: count(i, inp))
        for i, block in enumerate(model.backbone.blocks)
    ]
    try:
        rule = make_rule("fixed_exit", ModelExits.of_model(model, None), k=0)
        run = EarlyExitRunner(model, rule).run(images(8), batch_size)
    finally:
        for h in hooks:
            h.remove()
    first = model.exit_blocks[0] + 1
    assert (run.exit_index == 0).all()
    assert samples[:first] == [8] * first and calls[:first] == [8 // batch_size] * first
    assert calls[first:] == [0] * (len(calls) - first), f"blocks after exit 0 ran: {calls}"


# ---- export, pruning, saliency -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", EXPORTED)
def test_per_segment_onnx_export_matches_pytorch(arch, tmp_path):
    import onnxruntime as ort

    from aep_core.deploy.export import export_onnx, make_segments, segment_inputs, verify_onnx

    model = tv_model(arch)
    if arch != EXPORTED_WHOLE:
        # The network up to its second exit: the blocks of its first stages, a downsampling one included, in a
        # fraction of the whole network's export time.
        spec = tv_spec(arch, exit_blocks=model.exit_blocks[:2], num_blocks=model.exit_blocks[1] + 1)
        model = build_model(spec).eval()
    assert model.final_is_native == (arch == EXPORTED_WHOLE)
    realistic_norms(model)
    splits, shape = [0], (3, SIDE, SIDE)
    paths = export_onnx(model, splits, tmp_path, shape)
    assert len(paths) == 2
    x = images(3)
    for seg, h, path in zip(make_segments(model, splits), segment_inputs(model, splits, x), paths, strict=True):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: h.numpy()})
        with torch.no_grad():
            want = seg(h)
        assert len(got) == len(want) == 2  # features, logits
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-3)
    check = verify_onnx(model, splits, paths, shape, batch=3)
    assert check.ok, check.format()


def test_a_checkpoint_of_a_torchvision_model_loads_back_with_its_exits_and_outputs(tmp_path):
    spec = tv_spec("resnet18", placement=["layer1.1.relu_1", "layer3.1"])
    model = realistic_norms(build_model(spec).eval())
    save_checkpoint(tmp_path / "m.pt", model, model_meta(spec, model))
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert loaded.exit_blocks == model.exit_blocks == [1, 5, 7] and loaded.final_is_native
    assert meta.model.backbone_config == {"arch": "resnet18"}
    x = images(2)
    with torch.no_grad():
        for a, b in zip(loaded(x).logits, model(x).logits, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_pruning_at_exit_0_keeps_its_outputs_and_drops_the_torchvision_classifier():
    model = realistic_norms(tv_model("mobilenet_v3_small"))
    spec = tv_spec("mobilenet_v3_small", exit_blocks=list(model.exit_blocks), num_blocks=len(model.backbone.blocks))
    n = model.num_exits
    meta = model_meta(
        spec,
        model,
        training=TrainingMeta("aep", ensemble_weights=[1 / n] * n),
        metrics={"val": SplitMetrics([0.5] * n)},
    )
    pruned, pruned_meta = prune_model(model, meta, 0)
    assert pruned.num_exits == 1 and pruned_meta.model.num_blocks == model.exit_blocks[0] + 1
    assert not pruned.final_is_native and isinstance(pruned.heads[-1], AEPHead)
    assert not any(isinstance(m, OwnClassifierHead) for m in pruned.modules())
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).logits[0], model(x).logits[0], atol=1e-6, rtol=0)
    assert pruned_meta.cost.cum_macs == meta.cost.cum_macs[:1]


@pytest.mark.parametrize("method", ["saliency", "grad_cam"])
@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])
def test_saliency_of_every_exit_is_a_finite_map_of_the_input(arch, method):
    model = realistic_norms(tv_model(arch))
    maps = exit_saliency(model, images(1), method)
    assert [m.exit for m in maps] == list(range(model.num_exits))
    for m in maps:
        assert m.heatmap.shape == (SIDE, SIDE) and np.isfinite(m.heatmap).all()
        assert m.heatmap.min() >= 0 and m.heatmap.max() == 1, f"exit {m.exit}: an empty map"
        assert 0 <= m.target < 10


# ---- which torchvision classifiers take exits -------------------------------------------------------------


def test_every_torchvision_classifier_is_supported_or_refused_with_its_reason():
    archs = supported_archs()
    assert len(archs) == len(set(archs)), "an arch listed by two families"
    assert {spec.smallest for spec in FAMILIES.values()} <= set(archs)
    for name in torchvision.models.list_models(module=torchvision.models):
        if name in archs:
            assert family_of(name).name in FAMILIES
            continue
        prefix = [p for p in UNSUPPORTED if name.startswith(p)]
        assert prefix, f"torchvision's {name} is neither supported nor refused with a reason"
        with pytest.raises(ConfigError, match=f"'{name}' cannot take exits here: "):
            family_of(name)
        with pytest.raises(ConfigError, match="cannot take exits here"):
            build_model(tv_spec(name))
    assert not [a for a in archs if any(a.startswith(p) for p in UNSUPPORTED)], "supported and refused at once"
    with pytest.raises(ConfigError, match=r"Unknown torchvision classifier 'resnet19'\. Choose one of: resnet18"):
        family_of("resnet19")


# ---- weights: safe, clear, never downloaded ----------------------------------------------------------------

CODE_RAN: list[str] = []


def _run_code(message: str) -> None:
    CODE_RAN.append(message)


class PickledCode:
    """An object whose unpickling runs code."""

    def __reduce__(self):
        return _run_code, ("unpickling ran code",)


def test_a_file_with_pickled_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": PickledCode()}, path)
    with pytest.raises(CheckpointError, match="is not a weights file torch can read safely"):
        load_torchvision_weights(tv_model("resnet18"), str(path))
    assert CODE_RAN == [], "the weights file was unpickled with code allowed"


def test_weights_of_another_architecture_name_missing_and_unexpected_entries_in_one_message(weights):
    _, path = weights("resnet18")
    with pytest.raises(CheckpointError) as err:
        load_torchvision_weights(tv_model("mobilenet_v3_small"), str(path))
    message = str(err.value)
    assert "\n" not in message and "does not hold mobilenet_v3_small weights" in message
    assert re.search(r"\d+ missing \(e\.g\. \S+\), \d+ unexpected \(e\.g\. bn1\.\S+\) entries", message), message


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"Weights file .*nothing\.pth does not exist"):
        load_torchvision_weights(tv_model("squeezenet1_1"), str(tmp_path / "nothing.pth"))


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torch cache, and a network that fails the test when anything tries to reach it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(*args, **kwargs):
        pytest.fail("the network was reached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert Path(torch.hub.get_dir()).is_relative_to(tmp_path)
    return Path(torch.hub.get_dir())


def test_torchvision_weights_not_on_disk_are_not_downloaded(torch_cache):
    cached = (
        torch_cache / "checkpoints" / Path(torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url).name
    )
    model = tv_model("mobilenet_v3_small")
    with pytest.raises(ConfigError, match="nothing is downloaded") as err:
        load_torchvision_weights(model, "DEFAULT")
    assert str(cached) in str(err.value) and "\n" not in str(err.value)
    assert not cached.exists()
    with pytest.raises(
        ConfigError, match=r"no weights 'IMAGENET9K_V9' for mobilenet_v3_small\. Choose one of: DEFAULT"
    ):
        load_torchvision_weights(model, "IMAGENET9K_V9")


def test_torchvision_weights_in_the_cache_load_with_their_normalisation(torch_cache):
    arch = "mobilenet_v3_small"
    net = random_net(arch, 1000)
    cached = torch_cache / "checkpoints" / Path(torchvision.models.get_model_weights(arch).DEFAULT.url).name
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 224)
    new_classifier = load_torchvision_weights(tv_model(arch), "DEFAULT")
    assert not new_classifier.classifier_kept and new_classifier.source == str(cached)
    assert (new_classifier.mean, new_classifier.std, new_classifier.image_size) == pytest.approx(imagenet)
    model = tv_model(arch, num_classes=1000)
    kept = load_torchvision_weights(model, "IMAGENET1K_V1")
    assert kept.classifier_kept and kept.image_size == 224
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_final(x), net(x), atol=1e-5, rtol=0)
    # an image folder is normalised as the weights were trained, unless the job says otherwise
    job = TrainJob(model="torchvision", model_config={"arch": arch}, weights="DEFAULT")
    assert job_normalisation(job) == pytest.approx(imagenet[:2])
    job.in_channels = 1
    assert job_normalisation(job) == pytest.approx(([sum(imagenet[0]) / 3], [sum(imagenet[1]) / 3]))
    job.mean, job.std = [0.5], [0.25]
    assert job_normalisation(job) == ([0.5], [0.25])


# ---- training ----------------------------------------------------------------------------------------------


def random_bundle(n: int = 16) -> DataBundle:
    """n random 3 x SIDE x SIDE images of 10 classes, as training, validation and test splits."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, SIDE, SIDE), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    data = TensorImageDataset(x, y, [0.5] * 3, [0.25] * 3)
    return DataBundle("random", data, data, data, [str(c) for c in range(10)], 3, SIDE, [0.5] * 3, [0.25] * 3)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def moved(prefix: str, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """The entries under `prefix` (there must be some) that differ between two states."""
    entries = [k for k in before if k.startswith(prefix)]
    assert entries, prefix
    return [k for k in entries if not torch.equal(before[k], after[k])]


def train_torchvision(
    path: Path, method: MethodSettings, epochs: int
) -> tuple[EarlyExitNet, list[dict[str, torch.Tensor]]]:
    """Train mobilenet_v3_small from the weights file `path` with `method`, as the job does, on 16 random
    images; returns the model and its states before training and after each epoch."""
    job = TrainJob(
        model="torchvision",
        model_config={"arch": "mobilenet_v3_small"},
        placement="stages",
        weights=str(path),
        method=method,
        train=TrainConfig(epochs=epochs, batch_size=8, lr=0.05, threads=1, progress=False, augment=False),
    )
    bundle = random_bundle()
    torch.manual_seed(0)
    model, _ = build_for_job(job, bundle)
    states = [state(model)]
    learner = build_method(job.method, model, [(k + 1) / model.num_exits for k in range(model.num_exits)], epochs)
    train(model, learner, bundle.train, bundle.val, job.train, callback=lambda _: states.append(state(model)))
    return model, states


def test_classifier_wise_from_the_start_trains_only_the_early_heads_of_a_pretrained_network(weights):
    _, path = weights("mobilenet_v3_small")
    model, (before, after) = train_torchvision(path, MethodSettings("classifier-wise", freeze_epochs=0), 1)
    assert model.final_pretrained
    assert not moved("backbone.", before, after), "frozen backbone weights or BatchNorm statistics moved"
    assert not moved(f"heads.{model.num_exits - 1}.", before, after), "the pretrained classifier moved"
    for k in range(model.num_exits - 1):
        assert moved(f"heads.{k}.", before, after), f"early head {k} did not learn"


def test_classifier_wise_from_the_start_trains_a_new_final_classifier_too(weights):
    _, path = weights("mobilenet_v3_small", 1000)
    model, (before, after) = train_torchvision(path, MethodSettings("classifier-wise", freeze_epochs=0), 1)
    assert not model.final_pretrained
    assert not moved("backbone.", before, after), "frozen backbone weights or BatchNorm statistics moved"
    last = next(f"{name}.weight" for name, m in model.named_modules() if m is last_of(model))
    assert last.startswith(f"heads.{model.num_exits - 1}.classifier.")
    assert last in moved("heads.", before, after), "the new classifier did not learn"
    assert moved("heads.0.", before, after)


def test_backbone_first_epochs_leave_the_early_heads_alone(weights):
    _, path = weights("mobilenet_v3_small", 1000)
    model, (before, first, second) = train_torchvision(path, MethodSettings("aep", backbone_epochs=1), 2)
    last = model.num_exits - 1
    assert moved("backbone.", before, first) and moved(f"heads.{last}.", before, first)
    for k in range(last):
        assert not moved(f"heads.{k}.", before, first), f"early head {k} learned in a backbone-first epoch"
        assert moved(f"heads.{k}.", first, second), f"early head {k} did not learn after them"


# ---- command line ------------------------------------------------------------------------------------------


def test_list_models_lists_the_torchvision_families(capsys):
    assert main(["list-models", "--torchvision"]) == 0
    out = capsys.readouterr().out
    for spec in FAMILIES.values():
        assert spec.name in out and spec.smallest in out
    assert "not supported: vit*:" in out


def test_list_models_shows_the_exit_points_of_one_classifier(capsys):
    assert main(["list-models", "--torchvision", "resnet18", "--image-size", "32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("resnet18: 8 blocks")
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 8
    assert [r[1] for r in rows] == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert [r[0] for r in rows] == [str(b) for b in range(8)] and rows[-1][-1] == "100.0%"


def test_list_models_refuses_a_vision_transformer_in_one_line(capsys):
    assert main(["list-models", "--torchvision", "vit_b_16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: torchvision 'vit_b_16' cannot take")


def test_train_passes_the_torchvision_options_to_the_job(tmp_path, monkeypatch):
    import aep_core.training.job

    jobs = []
    monkeypatch.setattr(aep_core.training.job, "run_train_job", jobs.append)
    args = ["train", "--model", "torchvision", "--arch", "mobilenet_v3_small", "--weights", "DEFAULT"]
    args += ["--mean", "0.1,0.2,0.3", "--std", "0.3,0.2,0.1", "--method", "aep", "--backbone-epochs", "1"]
    assert main([*args, "--exits", "features.2,features.7", "--out", str(tmp_path / "m.pt")]) == 0
    (job,) = jobs
    assert (job.model, job.model_config, job.weights) == ("torchvision", {"arch": "mobilenet_v3_small"}, "DEFAULT")
    assert job.mean == pytest.approx([0.1, 0.2, 0.3]) and job.std == pytest.approx([0.3, 0.2, 0.1])
    assert job.method.backbone_epochs == 1 and job.placement == ["features.2", "features.7"]


def test_the_docs_state_the_number_of_architectures_covered():
    import re

    from aep_core.paths import PROJECT_DIR

    for doc in ("README.md", "docs/BRING_YOUR_OWN.md"):
        counts = re.findall(r"(\d+) architectures", (PROJECT_DIR / doc).read_text())
        assert counts and all(int(c) == len(supported_archs()) for c in counts), doc
    assert len(FAMILIES) == 10  # "ten families"
