"""Backbones as a stem followed by a flat list of blocks; exits may follow any block.

Every backbone exposes `stem`, `blocks` (nn.ModuleList), `block_channels` (output channels of each
block) and `block_stage` (the stage each block belongs to). The final classifier is not part of the
backbone: it is the last exit head of the early-exit wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block (two 3x3 convs) with an option-B projection shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ConvBNReLU(nn.Sequential):
    """conv3x3 -> BatchNorm -> ReLU, optionally preceded by 2x2 max pooling."""

    def __init__(self, in_channels: int, out_channels: int, pool_first: bool = False) -> None:
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool_first else []
        layers += [conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Backbone(nn.Module):
    """Base class: a stem and a flat list of blocks."""

    stem: nn.Module
    blocks: nn.ModuleList
    block_channels: list[int]
    block_stage: list[int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return h


@dataclass
class ResNetConfig:
    """CIFAR-style ResNet of depth 6n+2 (ResNet-20/32/56/110 for n = 3/5/9/18)."""

    depth: int = 20
    width: int = 16  # channels of the first stage; stages use width, 2*width, 4*width
    in_channels: int = 3


class CifarResNet(Backbone):
    """ResNet 6n+2 of He et al. as used by EENets: 3 stages of n basic blocks each."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        if cfg.depth < 8 or (cfg.depth - 2) % 6 != 0:
            from aep_core.errors import ConfigError

            raise ConfigError(f"ResNet depth must be 6n+2 with n >= 1 (20, 32, 56, 110, ...), got {cfg.depth}.")
        n = (cfg.depth - 2) // 6
        widths = [cfg.width, 2 * cfg.width, 4 * cfg.width]
        self.stem = nn.Sequential(conv3x3(cfg.in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        self.block_channels, self.block_stage = [], []
        in_ch = widths[0]
        for stage, w in enumerate(widths):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_ch, w, stride))
                self.block_channels.append(w)
                self.block_stage.append(stage)
                in_ch = w
        self.blocks = nn.ModuleList(blocks)
        _init_weights(self)


@dataclass
class CompactCNNConfig:
    """VGG-style CNN sized for CPU training on 28x28 images."""

    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 2
    in_channels: int = 1


class CompactCNN(Backbone):
    """Stages of conv-BN-ReLU blocks, 2x2 max pooling between stages; the first conv is the stem."""

    def __init__(self, cfg: CompactCNNConfig) -> None:
        super().__init__()
        widths = list(cfg.widths)
        if not widths or cfg.convs_per_stage < 1:
            from aep_core.errors import ConfigError

            raise ConfigError("CompactCNN needs at least one stage width and one conv per stage.")
        self.stem = ConvBNReLU(cfg.in_channels, widths[0])
        blocks: list[nn.Module] = []
        self.block_channels, self.block_stage = [], []
        in_ch = widths[0]
        for stage, w in enumerate(widths):
            n_blocks = cfg.convs_per_stage - 1 if stage == 0 else cfg.convs_per_stage
            for b in range(n_blocks):
                blocks.append(ConvBNReLU(in_ch, w, pool_first=(stage > 0 and b == 0)))
                self.block_channels.append(w)
                self.block_stage.append(stage)
                in_ch = w
        if not blocks:
            from aep_core.errors import ConfigError

            raise ConfigError("CompactCNN needs at least one block after the stem.")
        self.blocks = nn.ModuleList(blocks)
        _init_weights(self)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
