"""Exits on torchvision classifiers: a `torchvision.models` classifier cut into a stem, a flat list of blocks
and its own classifier, so that it runs segment by segment like every backbone of this package.

Each supported family (ResNet, MobileNet, EfficientNet, RegNet, ConvNeXt, ...) is one entry of FAMILIES: a
function that names the torchvision model's stem, its blocks (a block is the unit an exit may follow, e.g. a
residual block, an inverted-residual block, a ConvNeXt block with the downsampling before it) and its
classifier (pooling + the original head). The blocks are the torchvision model's own modules, so its weights
load unchanged and a cut network is a real, smaller network.

One-channel inputs: the first convolution is replaced by a one-channel convolution whose weights are the sum of
the original's over the colour channels, so a grey image gives exactly what its grey RGB copy gave.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aep_core.errors import CheckpointError, ConfigError
from aep_core.models.backbones import Backbone
from aep_core.registry import Registry

Named = tuple[str, nn.Module]  # (path of the module in the torchvision model, module)
PROBE_SIDE = 64  # input side of the pass that finds each block's channels and stage


@dataclass
class TorchvisionSplit:
    """A torchvision classifier as stem, blocks and classifier; each entry names its module's path."""

    stem: list[Named]
    blocks: list[tuple[str, list[Named]]]  # (name shown to users, the modules run in order)
    classifier: list[Named]  # features (b, c, h, w) -> logits (b, classes)


@dataclass(frozen=True)
class FamilySpec:
    """One torchvision family: the model classes it covers, how to split them, and the smallest member, used by
    the tests."""

    name: str
    description: str
    build: Callable[[nn.Module], TorchvisionSplit] | None = None
    classes: tuple[str, ...] = ()
    smallest: str = ""
    archs: tuple[str, ...] = field(default_factory=tuple)


FAMILIES: Registry[FamilySpec] = Registry("torchvision family")

# torchvision classifiers whose layout does not fit a chain of feature-map blocks, with the reason.
UNSUPPORTED = {
    "vit_": "a vision transformer's blocks pass tokens, not feature maps, and its classifier reads the class token",
    "swin_": "a Swin transformer keeps its feature maps channels-last between blocks",
    "maxvit_t": "MaxViT's blocks interleave window and grid attention over channels-last maps",
    "googlenet": "GoogLeNet's auxiliary classifiers and input transform sit outside its chain of blocks",
    "inception_v3": "Inception v3's auxiliary classifier and input transform sit outside its chain of blocks",
}


def register_family(
    name: str, description: str, classes: tuple[str, ...], smallest: str, archs: tuple[str, ...]
) -> Callable[[Callable[[nn.Module], TorchvisionSplit]], Callable[[nn.Module], TorchvisionSplit]]:
    """Decorator registering a family splitter for the torchvision model `classes`, covering `archs`."""
    return FAMILIES.register_spec(FamilySpec(name, description, None, classes, smallest, archs))


class GlobalMean(nn.Module):
    """Mean over the spatial axes, flattened: (b, c, h, w) -> (b, c), as several torchvision forwards do inline."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean((2, 3))


def _child(net: nn.Module, path: str) -> Named:
    return path, net.get_submodule(path)


def _children(net: nn.Module, path: str) -> list[Named]:
    return [(f"{path}.{n}", m) for n, m in net.get_submodule(path).named_children()]


def _single(named: Named) -> tuple[str, list[Named]]:
    return named[0], [named]


@register_family(
    "resnet",
    "ResNet, ResNeXt and Wide ResNet: one block per residual block",
    ("ResNet",),
    "resnet18",
    (
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ),
)
def _split_resnet(net: nn.Module) -> TorchvisionSplit:
    stem = [_child(net, p) for p in ("conv1", "bn1", "relu", "maxpool")]
    blocks = [_single(b) for layer in ("layer1", "layer2", "layer3", "layer4") for b in _children(net, layer)]
    return TorchvisionSplit(stem, blocks, [_child(net, "avgpool"), ("flatten", nn.Flatten(1)), _child(net, "fc")])


def _split_features(net: nn.Module) -> TorchvisionSplit:
    """`features` = [stem, block or stage of blocks, ..., last conv], then `avgpool` and `classifier`."""
    features = _children(net, "features")
    blocks: list[tuple[str, list[Named]]] = []
    for path, module in features[1:]:
        inner = _children(net, path) if isinstance(module, nn.Sequential) and _is_stage(module) else [(path, module)]
        blocks += [_single(b) for b in inner]
    classifier = [_child(net, "avgpool"), ("flatten", nn.Flatten(1)), _child(net, "classifier")]
    return TorchvisionSplit([features[0]], blocks, classifier)


def _is_stage(module: nn.Sequential) -> bool:
    """Whether a Sequential holds whole blocks (a stage), not the layers of one block (conv, norm, activation)."""
    return all(not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Hardswish, nn.SiLU)) for m in module)


register_family(
    "mobilenet",
    "MobileNet v2 and v3: one block per inverted-residual block, then the last 1x1 convolution",
    ("MobileNetV2", "MobileNetV3"),
    "mobilenet_v3_small",
    ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"),
)(_split_features)
register_family(
    "efficientnet",
    "EfficientNet and EfficientNetV2: one block per MBConv / FusedMBConv block, then the last 1x1 convolution",
    ("EfficientNet",),
    "efficientnet_b0",
    (*(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"),
)(_split_features)


@register_family(
    "regnet",
    "RegNetX and RegNetY: one block per residual bottleneck block",
    ("RegNet",),
    "regnet_x_400mf",
    tuple(
        f"regnet_{kind}_{size}"
        for kind, sizes in (
            ("x", ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
            ("y", ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")),
        )
        for size in sizes
    ),
)
def _split_regnet(net: nn.Module) -> TorchvisionSplit:
    blocks = [_single(b) for stage, _ in _children(net, "trunk_output") for b in _children(net, stage)]
    return TorchvisionSplit(
        [_child(net, "stem")], blocks, [_child(net, "avgpool"), ("flatten", nn.Flatten(1)), _child(net, "fc")]
    )


@register_family(
    "convnext",
    "ConvNeXt: one block per ConvNeXt block, each stage's downsampling run with its first block",
    ("ConvNeXt",),
    "convnext_tiny",
    ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
)
def _split_convnext(net: nn.Module) -> TorchvisionSplit:
    features = _children(net, "features")
    blocks: list[tuple[str, list[Named]]] = []
    pending: list[Named] = []  # a downsampling layer waiting for the stage after it
    for path, module in features[1:]:
        inner = _children(net, path)
        if inner and all(type(m).__name__ == "CNBlock" for _, m in inner):
            for block_path, block in inner:
                blocks.append((block_path, [*pending, (block_path, block)]))
                pending = []
        else:
            pending.append((path, module))
    return TorchvisionSplit([features[0]], blocks, [_child(net, "avgpool"), _child(net, "classifier")])


@register_family(
    "mnasnet",
    "MNASNet: one block per inverted-residual block, then the last 1x1 convolution",
    ("MNASNet",),
    "mnasnet0_5",
    ("mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"),
)
def _split_mnasnet(net: nn.Module) -> TorchvisionSplit:
    layers = _children(net, "layers")
    stacks = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Sequential)]
    blocks = [_single(b) for i in stacks for b in _children(net, layers[i][0])]
    tail = layers[stacks[-1] + 1 :]
    blocks.append(("+".join(p for p, _ in tail), tail))
    return TorchvisionSplit(layers[: stacks[0]], blocks, [("mean", GlobalMean()), _child(net, "classifier")])


@register_family(
    "shufflenet",
    "ShuffleNet v2: one block per shuffle unit, then the last 1x1 convolution",
    ("ShuffleNetV2",),
    "shufflenet_v2_x0_5",
    ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"),
)
def _split_shufflenet(net: nn.Module) -> TorchvisionSplit:
    blocks = [_single(b) for stage in ("stage2", "stage3", "stage4") for b in _children(net, stage)]
    blocks.append(_single(_child(net, "conv5")))
    return TorchvisionSplit(
        [_child(net, "conv1"), _child(net, "maxpool")], blocks, [("mean", GlobalMean()), _child(net, "fc")]
    )


@register_family(
    "densenet",
    "DenseNet: one block per dense block with the transition after it",
    ("DenseNet",),
    "densenet121",
    ("densenet121", "densenet161", "densenet169", "densenet201"),
)
def _split_densenet(net: nn.Module) -> TorchvisionSplit:
    features = _children(net, "features")
    stem = features[:4]  # conv0, norm0, relu0, pool0
    blocks: list[tuple[str, list[Named]]] = []
    for path, module in features[4:]:
        if type(module).__name__ == "_DenseBlock":
            blocks.append((path, [(path, module)]))
        else:  # a transition, or the last norm: run with the dense block before it
            name, modules = blocks[-1]
            blocks[-1] = (name, [*modules, (path, module)])
    blocks[-1] = (blocks[-1][0], [*blocks[-1][1], ("relu", nn.ReLU())])
    classifier = [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten(1)), _child(net, "classifier")]
    return TorchvisionSplit(stem, blocks, classifier)


def _split_at_convs(net: nn.Module, head: list[Named]) -> TorchvisionSplit:
    """A flat `features` Sequential cut before each convolution (or Fire module): the first group is the stem,
    pooling layers run with the block after them, trailing ones with the last block."""
    groups: list[list[Named]] = [[]]
    for path, module in _children(net, "features"):
        starts = isinstance(module, nn.Conv2d) or type(module).__name__ == "Fire"
        if starts and any(isinstance(m, nn.Conv2d) or type(m).__name__ == "Fire" for _, m in groups[-1]):
            groups.append([])
        groups[-1].append((path, module))
    # pooling at the end of a group belongs to the next block, where the resolution changes
    for i in range(len(groups) - 1):
        while isinstance(groups[i][-1][1], nn.MaxPool2d):
            groups[i + 1].insert(0, groups[i].pop())
    blocks = [(next(p for p, m in g if isinstance(m, nn.Conv2d) or type(m).__name__ == "Fire"), g) for g in groups[1:]]
    return TorchvisionSplit(groups[0], blocks, head)


@register_family(
    "vgg",
    "VGG and AlexNet: one block per convolution with its normalisation, activation and pooling",
    ("VGG", "AlexNet"),
    "vgg11",
    ("alexnet", *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))),
)
def _split_vgg(net: nn.Module) -> TorchvisionSplit:
    return _split_at_convs(net, [_child(net, "avgpool"), ("flatten", nn.Flatten(1)), _child(net, "classifier")])


@register_family(
    "squeezenet",
    "SqueezeNet: one block per Fire module",
    ("SqueezeNet",),
    "squeezenet1_1",
    ("squeezenet1_0", "squeezenet1_1"),
)
def _split_squeezenet(net: nn.Module) -> TorchvisionSplit:
    return _split_at_convs(net, [_child(net, "classifier"), ("flatten", nn.Flatten(1))])


def supported_archs() -> list[str]:
    """Every torchvision classifier name this package can put exits on."""
    return [arch for spec in FAMILIES.values() for arch in spec.archs]


def family_of(arch: str) -> FamilySpec:
    """The family covering torchvision classifier `arch`; ConfigError saying why when none does."""
    for spec in FAMILIES.values():
        if arch in spec.archs:
            return spec
    for prefix, reason in UNSUPPORTED.items():
        if arch.startswith(prefix):
            raise ConfigError(f"torchvision '{arch}' cannot take exits here: {reason}.")
    raise ConfigError(
        f"Unknown torchvision classifier '{arch}'. Choose one of: {', '.join(supported_archs())} "
        "(`python -m aep_core list-models --torchvision` lists them with their exit points)."
    )


def _new_torchvision_model(arch: str) -> nn.Module:
    from torchvision import models

    family_of(arch)
    return models.get_model(arch, weights=None)


def _last_layer(modules: list[Named]) -> tuple[int, str, nn.Module]:
    """(index in `modules`, path inside that module, layer) of the last Linear or Conv2d of a classifier: the
    layer giving the logits."""
    found = None
    for i, (_, top) in enumerate(modules):
        for name, m in top.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                found = (i, name, m)
    if found is None:
        raise ConfigError("This torchvision classifier has no final Linear or Conv2d layer to resize.")
    return found


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _resize_classifier(modules: list[Named], num_classes: int, net: nn.Module | None = None) -> None:
    """Give the classifier `num_classes` outputs: its last layer is replaced (newly initialised) when needed, in
    `modules` and in the torchvision model `net` they come from."""
    i, inner, layer = _last_layer(modules)
    if isinstance(layer, nn.Linear) and layer.out_features != num_classes:
        new: nn.Module = nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None)
    elif isinstance(layer, nn.Conv2d) and layer.out_channels != num_classes:
        new = nn.Conv2d(layer.in_channels, num_classes, layer.kernel_size, layer.stride)
    else:
        return
    path, top = modules[i]
    if inner:
        _set_module(top, inner, new)
    else:
        modules[i] = (path, new)
        if net is not None:
            _set_module(net, path, new)


def _last_layer_names(modules: list[Named]) -> set[str]:
    """State-dict names, in the torchvision model, of the classifier's last layer."""
    i, inner, layer = _last_layer(modules)
    prefix = modules[i][0] + (f".{inner}" if inner else "")
    return {f"{prefix}.{name}" for name, _ in layer.named_parameters()}


def _adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Make the first convolution read `in_channels` channels; one channel sums the colour weights."""
    found = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise ConfigError("This torchvision classifier has no convolution to read the images.")
    name, conv = found
    if conv.in_channels == in_channels:
        return
    if in_channels != 1:
        raise ConfigError(f"torchvision classifiers read 1- or 3-channel images, not {in_channels}.")
    new = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_module(net, name, new)


class NativeClassifier(nn.Module):
    """The torchvision model's own classifier (pooling, flattening, its head): features -> logits (b, classes)."""

    def __init__(self, modules: list[Named]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(m for _, m in modules))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class TorchvisionBackbone(Backbone):
    """A torchvision classifier as stem + blocks, with its own classifier kept for the final exit.

    `block_names` are the torchvision module paths of the blocks (what `--exits` accepts), `block_channels` and
    `block_stage` come from one pass of a small input (a stage ends where the resolution drops)."""

    def __init__(self, arch: str, in_channels: int = 3, net: nn.Module | None = None) -> None:
        super().__init__()
        family = family_of(arch)
        self.arch = arch
        net = _new_torchvision_model(arch) if net is None else net
        _adapt_first_conv(net, in_channels)
        split = family.build(net)
        self.stem = nn.Sequential(*(m for _, m in split.stem))
        self.blocks = nn.ModuleList(nn.Sequential(*(m for _, m in modules)) for _, modules in split.blocks)
        # a block is named after the last of its modules that the torchvision model has: its output
        self.block_names = [_output_path(net, modules) for _, modules in split.blocks]
        self.classifier_modules = split.classifier
        self.block_channels, self.block_stage = _probe_shapes(net, split, in_channels)

    def exit_point_index(self, name: str) -> int:
        """The block an exit named `name` follows: a block's module path, or the graph node giving its output as
        `torchvision.models.feature_extraction.get_graph_node_names` lists it; ConfigError otherwise."""
        if name in self.block_names:
            return self.block_names.index(name)
        nodes = block_output_nodes(self.arch)
        if name in nodes:
            return nodes.index(name)
        inside = [b for b in self.block_names if name.startswith(b + ".")]
        hint = f" '{name}' is inside block '{inside[0]}': an exit follows a whole block." if inside else ""
        raise ConfigError(
            f"'{name}' is not an exit point of {self.arch}.{hint} Exit points are its blocks' outputs: "
            + ", ".join(self.block_names)
            + f" (`python -m aep_core list-models --torchvision {self.arch}` lists them)."
        )

    def native_classifier(self, num_classes: int) -> NativeClassifier:
        """The network's own classifier with `num_classes` outputs (its last layer replaced if the count
        differs)."""
        _resize_classifier(self.classifier_modules, num_classes)
        return NativeClassifier(self.classifier_modules)


def _output_path(net: nn.Module, modules: list[Named]) -> str:
    real = [path for path, _ in modules if _has_module(net, path)]
    return real[-1]


def _has_module(net: nn.Module, path: str) -> bool:
    try:
        net.get_submodule(path)
    except AttributeError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def block_output_nodes(arch: str) -> tuple[str, ...]:
    """Per block of `arch`, the graph node (as `get_graph_node_names` names it, evaluation mode) giving its
    output."""
    from torchvision.models.feature_extraction import get_graph_node_names

    net = _new_torchvision_model(arch)
    split = family_of(arch).build(net)
    _, nodes = get_graph_node_names(net)
    return tuple(_last_node(nodes, [path for path, _ in modules]) for _, modules in split.blocks)


def _last_node(nodes: list[str], paths: list[str]) -> str:
    """The last graph node computed by the last of `paths` (module paths, or a function run in the model's
    forward, like DenseNet's final ReLU) that the graph has."""
    for path in reversed(paths):
        inside = [n for n in nodes if n == path or n.startswith(path + ".")]
        if inside:
            return inside[-1]
    raise ConfigError(f"The graph of this torchvision classifier has no node for any of {paths}.")


def _probe_shapes(net: nn.Module, split: TorchvisionSplit, in_channels: int) -> tuple[list[int], list[int]]:
    """Output channels and stage of each block, from one pass of a 64 x 64 input in evaluation mode."""
    was_training = net.training
    net.eval()
    h = torch.zeros(1, in_channels, PROBE_SIDE, PROBE_SIDE)
    channels, stages, stage = [], [], 0
    with torch.no_grad():
        for _, m in split.stem:
            h = m(h)
        side = h.shape[-1]
        for _, modules in split.blocks:
            for _, m in modules:
                h = m(h)
            if h.shape[-1] < side:
                stage, side = stage + (1 if channels else 0), h.shape[-1]
            channels.append(int(h.shape[1]))
            stages.append(stage)
    net.train(was_training)
    return channels, stages


# ---- weights ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedWeights:
    """What loading a weights file did: whether the classifier was kept, and the normalisation and input size
    its metadata gives (None where it gives none)."""

    source: str
    classifier_kept: bool
    mean: list[float] | None = None
    std: list[float] | None = None
    image_size: int | None = None


def torchvision_weights_file(arch: str, name: str) -> tuple[Path, dict[str, Any]]:
    """Where torchvision's pretrained weights `name` ("DEFAULT", "IMAGENET1K_V1", ...) of `arch` lie in the torch
    cache, with their metadata (mean, std, input size); ConfigError when they are not on disk, since nothing is
    ever downloaded."""
    from torchvision import models

    family_of(arch)
    try:
        enum = models.get_model_weights(arch)
        weights = enum.DEFAULT if name == "DEFAULT" else enum[name]
    except (KeyError, ValueError):
        choices = ", ".join(["DEFAULT", *(w.name for w in models.get_model_weights(arch))])
        raise ConfigError(f"torchvision has no weights '{name}' for {arch}. Choose one of: {choices}.") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise ConfigError(
            f"torchvision's {arch} weights {weights.name} are not on this machine ({path}), and nothing is "
            "downloaded here: copy that file there, or pass your own weights file."
        )
    tf = weights.transforms()
    return path, {"mean": list(tf.mean), "std": list(tf.std), "image_size": int(tf.crop_size[0])}


def is_weights_name(weights: str) -> bool:
    """Whether `weights` names torchvision's pretrained weights ("DEFAULT", "IMAGENET1K_V1") rather than a file."""
    return weights == "DEFAULT" or (weights.isidentifier() and weights.isupper() and not Path(weights).exists())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from an untrusted file (weights only: no pickled code); CheckpointError otherwise. A dict
    holding it under "state_dict" or "model" is accepted too."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"Weights file {path} does not exist.") from None
    except Exception as e:  # any unpickling failure is a bad file
        raise CheckpointError(f"{path} is not a weights file torch can read safely: {str(e).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors).")
    state = OrderedDict((str(k).removeprefix("module."), v) for k, v in obj.items())
    state._metadata = getattr(obj, "_metadata", None)  # type: ignore[attr-defined]
    return state


def load_torchvision_weights(model: nn.Module, weights: str) -> LoadedWeights:
    """Load `weights` into an early-exit model on a torchvision backbone: a state_dict file of the torchvision
    model, or the name of torchvision's own pretrained weights when they are already on disk. The classifier is
    kept when its class count matches, else left newly initialised. ConfigError / CheckpointError with one
    message when the weights do not fit the architecture."""
    backbone = model.backbone
    if not isinstance(backbone, TorchvisionBackbone):
        raise ConfigError("Weights files for torchvision classifiers apply to torchvision backbones only.")
    arch, info = backbone.arch, {}
    if is_weights_name(weights):
        path, info = torchvision_weights_file(arch, weights)
    else:
        path = Path(weights)
    state = read_state_dict(path)
    net = _new_torchvision_model(arch)
    split = family_of(arch).build(net)
    num_classes = _last_out(last_of(model))
    _resize_classifier(split.classifier, num_classes, net)
    last_names = _last_layer_names(split.classifier)
    own = net.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape and k not in last_names)
    missing = sorted(set(own) - set(state) - last_names)
    unexpected = sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        problems = [
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(mismatched)} of another shape (e.g. {mismatched[0]})" if mismatched else "",
        ]
        raise CheckpointError(
            f"{path} does not hold {arch} weights: " + ", ".join(p for p in problems if p) + " entries."
        )
    kept = all(k in state and state[k].shape == own[k].shape for k in last_names)
    chosen = OrderedDict((k, v) for k, v in state.items() if kept or k not in last_names)
    # Some modules read their version from the metadata (MNASNet): the file's, else this torchvision's.
    chosen._metadata = getattr(state, "_metadata", None) or own._metadata  # type: ignore[attr-defined]
    net.load_state_dict(chosen, strict=False)
    loaded = TorchvisionBackbone(arch, _first_conv(backbone).in_channels, net)
    backbone.load_state_dict(loaded.state_dict())
    if model.final_is_native:  # a new last layer still takes the file's earlier classifier layers
        model.heads[-1].classifier.load_state_dict(loaded.native_classifier(num_classes).state_dict())
    return LoadedWeights(
        str(path), kept and model.final_is_native, info.get("mean"), info.get("std"), info.get("image_size")
    )


def last_of(model: nn.Module) -> nn.Module:
    """The layer giving the final exit's logits."""
    return [m for m in model.heads[-1].modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def _last_out(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))
