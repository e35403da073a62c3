"""The early-exit wrapper: one interface for every backbone.

The backbone's blocks are cut into segments, one per exit: segment k runs the blocks after exit k-1
up to and including the block that feeds exit k (segment 0 also runs the stem). The last exit is the
network's classifier: a head of the chosen kind, or the network's own classifier when the backbone brings one
(torchvision classifiers). Any exit may be a classifier of its own instead of a head: in a cascade
(`models.cascade`) every exit is a whole member network.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from aep_core.models.backbones import Backbone
from aep_core.models.heads import HEAD_TYPES, OwnClassifierHead, make_head


class ExitOutputs(NamedTuple):
    """Outputs of exits 0..k for a batch: logits (b, classes) per exit, and EENet confidences (b,) per exit."""

    logits: list[torch.Tensor]
    confidences: list[torch.Tensor] | None


class EarlyExitNet(nn.Module):
    """A backbone with exit heads after the blocks listed in `exit_blocks` (the last one is the final block); the
    final exit is `final_classifier` (features -> logits) when given, else a head like the others. With
    `exit_classifiers` (one entry per exit, None where a head of the chosen kind goes) any exit is a classifier
    of its own."""

    def __init__(
        self,
        backbone: Backbone,
        exit_blocks: list[int],
        head: str,
        num_classes: int,
        head_pool: int = 1,
        final_classifier: nn.Module | None = None,
        exit_classifiers: list[nn.Module | None] | None = None,
    ) -> None:
        super().__init__()
        if not exit_blocks or exit_blocks != sorted(set(exit_blocks)):
            raise ValueError(f"exit_blocks must be strictly increasing, got {exit_blocks}")
        if exit_blocks[-1] != len(backbone.blocks) - 1:
            raise ValueError("the last exit must follow the last block (it is the network's classifier)")
        own = _own_classifiers(len(exit_blocks), final_classifier, exit_classifiers)
        self.backbone = backbone
        self.exit_blocks = list(exit_blocks)
        self.head_kind = head
        self.num_classes = num_classes
        heads = [make_head(head, backbone.block_channels[b], num_classes, head_pool) for b in exit_blocks]
        for k, classifier in enumerate(own):
            if classifier is not None:
                heads[k] = OwnClassifierHead(classifier, HEAD_TYPES[head].has_confidence)
        self.heads = nn.ModuleList(heads)
        self.final_pretrained = False  # set when the final classifier's weights came from a weights file

    @property
    def final_is_native(self) -> bool:
        """Whether the final exit is the network's own classifier rather than an exit head."""
        return isinstance(self.heads[-1], OwnClassifierHead)

    @property
    def num_exits(self) -> int:
        """Number of exits, the final classifier included."""
        return len(self.exit_blocks)

    @property
    def has_confidence(self) -> bool:
        """Whether the exits carry a learned confidence branch (EENet heads)."""
        return HEAD_TYPES[self.head_kind].has_confidence

    def segment_blocks(self, k: int) -> range:
        """Indices of the backbone blocks run between exit k-1 and exit k."""
        start = 0 if k == 0 else self.exit_blocks[k - 1] + 1
        return range(start, self.exit_blocks[k] + 1)

    def forward_segment(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Run segment k: from the input (k=0) or from the features at exit k-1, to the features at exit k."""
        if k == 0:
            h = self.backbone.stem(h)
        for b in self.segment_blocks(k):
            h = self.backbone.blocks[b](h)
        return h

    def forward_head(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Exit k's logits (b, classes) and confidence (b,) or None, from the features at exit k."""
        return self.heads[k](h)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> ExitOutputs:
        """Outputs of every exit, or of exits 0..upto only (the later blocks are not run)."""
        last = self.num_exits - 1 if upto is None else upto
        if not 0 <= last < self.num_exits:
            raise IndexError(f"exit {upto} does not exist: this model has exits 0..{self.num_exits - 1}")
        logits, confs = [], []
        h = x
        for k in range(last + 1):
            h = self.forward_segment(h, k)
            z, c = self.forward_head(h, k)
            logits.append(z)
            confs.append(c)
        return ExitOutputs(logits, confs if self.has_confidence else None)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """The network without exits: all blocks, then the final classifier only."""
        h = x
        for k in range(self.num_exits):
            h = self.forward_segment(h, k)
        return self.forward_head(h, self.num_exits - 1)[0]


def _own_classifiers(
    num_exits: int, final: nn.Module | None, per_exit: list[nn.Module | None] | None
) -> list[nn.Module | None]:
    """The classifier of each exit that is not a head of the chosen kind (None where a head goes)."""
    own: list[nn.Module | None] = [None] * num_exits if per_exit is None else list(per_exit)
    if len(own) != num_exits:
        raise ValueError(f"exit_classifiers must have one entry per exit ({num_exits}), got {len(own)}")
    if final is not None:
        if own[-1] is not None:
            raise ValueError("the final classifier is given twice: as final_classifier and in exit_classifiers")
        own[-1] = final
    return own
