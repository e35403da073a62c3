"""Exit heads: the classifiers that sit along the backbone.

Both kinds map a feature map (b, c, h, w) to logits (b, classes); the EENet kind also returns a
confidence in (0, 1) per sample.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def grid_pool_matrix(height: int, width: int, pool: int) -> torch.Tensor:
    """(height * width, pool * pool) matrix whose product with a flattened feature map averages each cell of
    the pool x pool grid, with the cell bounds of `nn.AdaptiveAvgPool2d`."""

    def axis(n: int) -> torch.Tensor:  # (pool, n): row i averages the positions of cell i along one axis
        m = torch.zeros(pool, n)
        for i in range(pool):
            start, end = (i * n) // pool, -(-(i + 1) * n // pool)
            m[i, start:end] = 1.0 / (end - start)
        return m

    return torch.kron(axis(height), axis(width)).t().contiguous()


class GridAvgPool(nn.Module):
    """Average pooling to a pool x pool grid, equal to `nn.AdaptiveAvgPool2d(pool)`.

    When a gradient is needed it is one matrix product: the adaptive pooling's backward pass on CPU costs
    several times its forward pass (21 ms against 4 ms, forward and backward, for a 128 x 32 x 28 x 28 batch
    on one thread). Forward-only calls use the library op, the fastest there (channels-last above all).
    The matrix has no parameters and is built per feature-map size, so checkpoints are unchanged."""

    def __init__(self, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self._matrices: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not (h.requires_grad and torch.is_grad_enabled()):
            return F.adaptive_avg_pool2d(h, self.pool)
        b, c, height, width = h.shape
        if self.pool == 1:
            return h.mean((2, 3), keepdim=True)  # (b, c, 1, 1)
        key = (height, width, h.device, h.dtype)
        if key not in self._matrices:
            self._matrices[key] = grid_pool_matrix(height, width, self.pool).to(h.device, h.dtype)
        return (h.reshape(b, c, height * width) @ self._matrices[key]).view(b, c, self.pool, self.pool)


class ExitHead(nn.Module):
    """An exit head: features (b, c, h, w) -> logits (b, classes) and, with a confidence branch, (b,) confidences."""

    has_confidence: ClassVar[bool] = False


class AEPHead(ExitHead):
    """AEP exit: a replica of the network's own classifier (average pooling to a pool x pool grid + linear;
    pool = 1 is global average pooling)."""

    def __init__(self, in_channels: int, num_classes: int, pool: int = 1) -> None:
        super().__init__()
        self.pool = GridAvgPool(pool)
        self.fc = nn.Linear(in_channels * pool * pool, num_classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        z = self.pool(h).flatten(1)  # (b, c * pool * pool)
        return self.fc(z), None  # (b, classes)


class EENetHead(ExitHead):
    """EENet exit ("pool" type of the authors): pooling, then a softmax branch and a sigmoid confidence branch."""

    has_confidence = True

    def __init__(self, in_channels: int, num_classes: int, pool: int = 1) -> None:
        super().__init__()
        self.pool = GridAvgPool(pool)
        self.classifier = nn.Linear(in_channels * pool * pool, num_classes)
        self.confidence = nn.Linear(in_channels * pool * pool, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.pool(h).flatten(1)  # (b, c * pool * pool)
        return self.classifier(z), torch.sigmoid(self.confidence(z)).squeeze(1)  # (b, classes), (b,)


class OwnClassifierHead(ExitHead):
    """A network's own classifier as its final exit (a torchvision model's pooling and head). Beside EENet heads
    it answers with confidence 1: the final exit always answers."""

    def __init__(self, classifier: nn.Module, with_confidence: bool) -> None:
        super().__init__()
        self.classifier = classifier
        self.with_confidence = with_confidence

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.classifier(h)  # (b, classes)
        return z, (z.new_ones(z.shape[0]) if self.with_confidence else None)


HEAD_TYPES: dict[str, type[ExitHead]] = {"aep": AEPHead, "eenet": EENetHead}


def make_head(kind: str, in_channels: int, num_classes: int, pool: int = 1) -> ExitHead:
    """Build an exit head of a kind named in HEAD_TYPES, pooling to a pool x pool grid."""
    if kind not in HEAD_TYPES:
        from aep_core.errors import ConfigError

        raise ConfigError(f"Unknown exit head '{kind}'. Choose one of: {', '.join(HEAD_TYPES)}.")
    return HEAD_TYPES[kind](in_channels, num_classes, pool)
