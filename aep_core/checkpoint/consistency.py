"""Whether a checkpoint's metadata agrees with its weights: class names with the outputs, per-exit entries
(costs, ensemble weights, temperatures, metrics) with the exits, the input description with the first layer,
and the costs with themselves. Each disagreement is refused with one message naming it, so no page or command
meets an index or shape error later."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from aep_core.checkpoint.meta import CheckpointMeta
from aep_core.errors import CheckpointError
from aep_core.models import EarlyExitNet


def first_layer_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (None if it has none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else first.in_channels


def _finite(values: Sequence[object]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def check_agreement(
    meta: CheckpointMeta,
    num_classes: int | None,
    exit_blocks: list[int] | None,
    in_channels: int | None,
    name: str = "checkpoint",
) -> None:
    """CheckpointError unless the metadata agrees with itself and with a model of `num_classes` outputs, exits
    after `exit_blocks` and `in_channels` input channels (None: not known)."""
    _check_classes(meta, num_classes, name)
    _check_exits(meta, exit_blocks, name)
    _check_input(meta, in_channels, name)
    _check_costs(meta, name)


def _check_classes(meta: CheckpointMeta, num_classes: int | None, name: str) -> None:
    names = meta.dataset.class_names
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise CheckpointError(f"{name}: its class names are not a list of non-empty names.")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{name}: its class names repeat a name, so predictions could not be told apart.")
    if num_classes is not None and len(names) != num_classes:
        raise CheckpointError(f"{name}: its metadata names {len(names)} classes but the model predicts {num_classes}.")


def _check_exits(meta: CheckpointMeta, exit_blocks: list[int] | None, name: str) -> None:
    cost_blocks = [e.block for e in meta.cost.exits]
    if exit_blocks is not None and cost_blocks != list(exit_blocks):
        raise CheckpointError(
            f"{name}: its metadata gives the cost of {len(cost_blocks)} exits (after blocks "
            f"{cost_blocks}) but the model has {len(exit_blocks)} (after blocks "
            f"{list(exit_blocks)})."
        )
    exits = len(cost_blocks)
    weights = meta.training.ensemble_weights
    if weights and (len(weights) != exits or not _finite(weights) or min(weights) < 0):
        raise CheckpointError(
            f"{name}: its ensemble weights ({len(weights)}) are not one non-negative number per exit ({exits})."
        )
    if meta.calibration is not None:
        temperatures = meta.calibration.temperatures
        if len(temperatures) != exits or not _finite(temperatures) or min(temperatures) <= 0:
            raise CheckpointError(
                f"{name}: its calibration temperatures ({len(temperatures)}) are not one positive number per "
                f"exit ({exits})."
            )
    for split, metrics in meta.metrics.items():
        acc = metrics.exit_acc
        if len(acc) != exits or not _finite(acc) or not all(0 <= a <= 1 for a in acc):
            raise CheckpointError(
                f"{name}: its '{split}' accuracies ({len(acc)}) are not one fraction per exit ({exits})."
            )


def _check_input(meta: CheckpointMeta, in_channels: int | None, name: str) -> None:
    data = meta.dataset
    if in_channels is not None and data.in_channels != in_channels:
        raise CheckpointError(
            f"{name}: its dataset has {data.in_channels} channels but the model's first layer reads {in_channels}."
        )
    if not isinstance(data.image_size, int) or data.image_size <= 0:
        raise CheckpointError(f"{name}: its input size {data.image_size!r} is not a positive number of pixels.")
    if data.image_size != meta.model.image_size:
        raise CheckpointError(
            f"{name}: its dataset reads {data.image_size}x{data.image_size} images but the model was built for "
            f"{meta.model.image_size}x{meta.model.image_size}."
        )
    for entry, values in (("mean", data.mean), ("std", data.std)):
        if len(values) != data.in_channels or not _finite(values):
            raise CheckpointError(
                f"{name}: its normalisation {entry} has {len(values)} values for {data.in_channels} channels."
            )
    if min(data.std) <= 0:
        raise CheckpointError(f"{name}: its normalisation std is not positive.")


def _check_costs(meta: CheckpointMeta, name: str) -> None:
    cost = meta.cost
    cum = cost.cum_macs
    if not cum or cost.full_macs <= 0 or cum[0] <= 0 or any(b <= a for a, b in pairwise(cum)):
        raise CheckpointError(
            f"{name}: its per-exit costs are missing or not increasing (MACs {cum}, full network {cost.full_macs})."
        )


def check_model_agreement(meta: CheckpointMeta, model: EarlyExitNet, name: str = "checkpoint") -> None:
    """CheckpointError unless the metadata agrees with the model's outputs, exits and first layer, and the model
    runs on one input of the shape the metadata describes."""
    check_agreement(meta, model.num_classes, model.exit_blocks, first_layer_channels(model), name)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *meta.dataset.input_shape))
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{name}: the model cannot read {meta.dataset.image_size}x{meta.dataset.image_size} inputs ({first})."
        ) from None
    finally:
        model.train(was_training)
