"""A model prepared for fast CPU inference: BatchNorm folded into the convolution before it, weights in
channels-last layout. Outputs equal the original's up to float rounding (about 1e-5 on logits).

On this project's compact CNN at one thread this makes batch-256 inference about twice as fast: the first
convolutions (few channels, 28 x 28 maps) are the slowest per MAC in the default layout.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

from aep_core.models.backbones import BasicBlock
from aep_core.models.early_exit import EarlyExitNet


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into that convolution, in place
    (the BatchNorm becomes an identity); return how many were folded."""
    folded = 0
    for mod in list(module.modules()):
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(mod[i], mod[i + 1])
                    mod[i + 1] = nn.Identity()
                    folded += 1
        elif isinstance(mod, BasicBlock):
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
                if isinstance(getattr(mod, bn), nn.BatchNorm2d):
                    setattr(mod, conv, fuse_conv_bn_eval(getattr(mod, conv), getattr(mod, bn)))
                    setattr(mod, bn, nn.Identity())
                    folded += 1
    return folded


def prepare_for_inference(model: EarlyExitNet, channels_last: bool = True) -> EarlyExitNet:
    """A copy of `model` in eval mode with BatchNorm folded and, optionally, channels-last weights; the
    original is left untouched."""
    fast = copy.deepcopy(model).eval()
    with torch.no_grad():
        fold_batchnorm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def as_model_input(x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """Images (n, c, h, w) in the memory layout a prepared model runs fastest on."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
