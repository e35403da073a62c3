"""Exit heads: the classifiers that sit along the backbone.

Both kinds map a feature map (b, c, h, w) to logits (b, classes); the EENet kind also returns a
confidence in (0, 1) per sample.
"""
from __future__ import annotations

import torch
from torch import nn


class AEPHead(nn.Module):
    """AEP exit: a replica of the network's own classifier (average pooling to a pool x pool grid + linear;
    pool = 1 is global average pooling)."""

    def __init__(self, in_channels: int, num_classes: int, pool: int = 1) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(in_channels * pool * pool, num_classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        z = self.pool(h).flatten(1)  # (b, c * pool * pool)
        return self.fc(z), None  # (b, classes)


class EENetHead(nn.Module):
    """EENet exit ("pool" type of the authors): pooling, then a softmax branch and a sigmoid confidence branch."""

    def __init__(self, in_channels: int, num_classes: int, pool: int = 1) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Linear(in_channels * pool * pool, num_classes)
        self.confidence = nn.Linear(in_channels * pool * pool, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.pool(h).flatten(1)  # (b, c * pool * pool)
        return self.classifier(z), torch.sigmoid(self.confidence(z)).squeeze(1)  # (b, classes), (b,)


HEAD_TYPES: dict[str, type[nn.Module]] = {"aep": AEPHead, "eenet": EENetHead}


def make_head(kind: str, in_channels: int, num_classes: int, pool: int = 1) -> nn.Module:
    """Build an exit head of the named kind ('aep' or 'eenet') pooling to a pool x pool grid."""
    if kind not in HEAD_TYPES:
        from ..errors import ConfigError

        raise ConfigError(f"Unknown exit head '{kind}'. Choose one of: {', '.join(HEAD_TYPES)}.")
    return HEAD_TYPES[kind](in_channels, num_classes, pool)
