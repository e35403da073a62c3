"""A small registry: backbones are registered by name with a one-line description, listed, and built by
name with a config.

A `ModelSpec` is the plain-data description of an early-exit model (stored in every checkpoint), so a
model can always be rebuilt from its checkpoint's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aep_core.errors import ConfigError
from aep_core.models.backbones import Backbone, CifarResNet, CompactCNN, CompactCNNConfig, ResNetConfig
from aep_core.models.early_exit import EarlyExitNet
from aep_core.models.heads import HEAD_TYPES
from aep_core.models.placement import COST_FRACTIONS, place_exits
from aep_core.registry import Registry

BackboneBuilder = Callable[..., Backbone]  # fn(in_channels=..., **config) -> Backbone


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: its name, a one-line description, its builder and its tiny config."""

    name: str
    description: str
    build: BackboneBuilder | None = None
    tiny_config: dict[str, Any] = field(default_factory=dict)  # the smallest sensible settings, for quick checks


BACKBONES: Registry[BackboneSpec] = Registry("model")


def register_model(
    name: str, description: str, tiny_config: dict[str, Any] | None = None
) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering a backbone builder `fn(in_channels=..., **config) -> Backbone` under `name`, with a
    one-line description and `tiny_config`, settings that make it small enough to build and run in a second."""

    return BACKBONES.register_spec(BackboneSpec(name, description, None, dict(tiny_config or {})))


def list_models() -> dict[str, str]:
    """Registered backbone names with a one-line description each."""
    return {name: spec.description for name, spec in BACKBONES.items()}


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone called `name`; ConfigError naming the choices otherwise."""
    return BACKBONES.lookup(name)


@register_model(
    "compact_cnn",
    "VGG-style 32/64/128-channel CNN, 5 blocks, ~0.29M params; trains on CPU in minutes",
    tiny_config={"widths": [4, 8, 8]},
)
def _compact_cnn(
    in_channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64, 128), convs_per_stage: int = 2
) -> Backbone:
    return CompactCNN(CompactCNNConfig(tuple(widths), convs_per_stage, in_channels))


def _resnet_builder(depth: int) -> BackboneBuilder:
    def build(in_channels: int = 3, width: int = 16) -> Backbone:
        return CifarResNet(ResNetConfig(depth, width, in_channels))

    return build


for _depth in (20, 32, 56, 110):
    register_model(
        f"resnet{_depth}",
        f"CIFAR ResNet-{_depth} (6n+2, n={(_depth - 2) // 6}), width factor via 'width'",
        tiny_config={"width": 2},
    )(_resnet_builder(_depth))


@register_model("resnet", "CIFAR ResNet of any depth 6n+2 ('depth', 'width')", tiny_config={"depth": 8, "width": 4})
def _resnet_any(in_channels: int = 3, depth: int = 20, width: int = 16) -> Backbone:
    return CifarResNet(ResNetConfig(depth, width, in_channels))


@register_model(
    "torchvision",
    "any torchvision classifier ('arch': resnet18, mobilenet_v3_small, efficientnet_b0, ...), its own "
    "classifier as the final exit",
    tiny_config={"arch": "mobilenet_v3_small"},
)
def _torchvision(in_channels: int = 3, arch: str = "resnet18") -> Backbone:
    from aep_core.models.torchvision_backbones import TorchvisionBackbone

    return TorchvisionBackbone(arch, in_channels)


_TINY_MEMBERS = [
    {"backbone": "compact_cnn", "backbone_config": {"widths": w}, "placement": []} for w in ([4], [4, 8], [4, 8, 8])
]


@register_model(
    "cascade",
    "separate networks run one after another ('members': their model specs); member k answers at exit k",
    tiny_config={"members": _TINY_MEMBERS},
)
def _cascade(in_channels: int = 1, members: list[dict[str, Any]] | None = None) -> Backbone:
    from aep_core.models.cascade import CascadeBackbone

    return CascadeBackbone(members, in_channels)


@dataclass
class ModelSpec:
    """Everything needed to rebuild an early-exit model."""

    backbone: str = "compact_cnn"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    head: str = "aep"
    head_pool: int = 1  # side of the pooled grid every exit head classifies (1: global average pooling)
    placement: str | list[int | str] = "blocks"  # a rule, or the blocks (indices or names) exits follow
    num_early_exits: int | None = None  # for cost-fraction placements
    exit_blocks: list[int] | None = None  # resolved block indices (filled by build_model)
    num_blocks: int | None = None  # blocks kept (smaller than the backbone's after pruning)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view for checkpoint metadata."""
        d = asdict(self)
        d["backbone_config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["backbone_config"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of to_dict; unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"Unknown model settings: {sorted(unknown)}.")
        return cls(**d)


def build_backbone(spec: ModelSpec) -> Backbone:
    """The backbone named in `spec`, built with its config."""
    build = get_backbone(spec.backbone).build
    try:
        return build(in_channels=spec.in_channels, **spec.backbone_config)
    except TypeError as e:
        raise ConfigError(f"Bad settings for model '{spec.backbone}': {e}.") from None


def _named_block(backbone: Backbone, name: str) -> int:
    """The index of the block an exit named `name` follows (backbones that name their blocks)."""
    if name.strip().lstrip("-").isdigit():
        return int(name)
    find = getattr(backbone, "exit_point_index", None)
    if find is None:
        raise ConfigError(f"Exit '{name}': this backbone's exits are given as block indices, e.g. 1,3.")
    return find(name)


def build_model(spec: ModelSpec) -> EarlyExitNet:
    """Build the early-exit model described by `spec`; fills in `spec.exit_blocks` and `spec.num_blocks`."""
    from aep_core.cost import cumulative_block_macs

    backbone = build_backbone(spec)
    if spec.exit_blocks is None:
        cum = None
        if isinstance(spec.placement, str) and spec.placement in COST_FRACTIONS:
            cum = cumulative_block_macs(backbone, (spec.in_channels, spec.image_size, spec.image_size))
        placement = spec.placement
        if not isinstance(placement, str):
            placement = [b if isinstance(b, int) else _named_block(backbone, b) for b in placement]
        spec.exit_blocks = place_exits(placement, backbone.block_stage, cum, spec.num_early_exits)
    n_all = len(backbone.blocks)
    if spec.num_blocks is not None and spec.num_blocks < n_all:
        # A pruned model: keep the blocks up to the last kept exit.
        del backbone.blocks[spec.num_blocks :]
        backbone.block_channels = backbone.block_channels[: spec.num_blocks]
        backbone.block_stage = backbone.block_stage[: spec.num_blocks]
    spec.num_blocks = len(backbone.blocks)
    if spec.head not in HEAD_TYPES:
        raise ConfigError(f"Unknown exit head '{spec.head}'. Choose one of: {', '.join(HEAD_TYPES)}.")
    if spec.head_pool < 1:
        raise ConfigError(f"The exit heads' pooled grid must be at least 1x1, got {spec.head_pool}.")
    # A network that brings its own classifier keeps it as the final exit, unless pruning cut it away.
    own = getattr(backbone, "native_classifier", None)
    final = own(spec.num_classes) if own is not None and spec.num_blocks == n_all else None
    # A backbone whose exits are classifiers of their own (a cascade's member networks) gives them here.
    per_exit = getattr(backbone, "exit_classifiers", None)
    classifiers = per_exit(spec) if per_exit is not None else None
    return EarlyExitNet(backbone, spec.exit_blocks, spec.head, spec.num_classes, spec.head_pool, final, classifiers)
