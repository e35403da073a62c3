"""Command-line sub-commands for models: info (a checkpoint's metadata and per-exit table) and list-models
(the registered backbones)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from aep_core.cli.common import add_command, checkpoint_file, positive_int

if TYPE_CHECKING:
    from aep_core.checkpoint import CheckpointMeta, SplitMetrics


def format_info(meta: CheckpointMeta) -> str:
    """A checkpoint's metadata as text: model, data, method, and the per-exit accuracy and cost table."""
    from aep_core.models.cascade import CASCADE, member_descriptions

    m, d, t, c = meta.model, meta.dataset, meta.training, meta.cost
    config = t.config
    model = f"{m.backbone} {m.backbone_config or ''} head={m.head} exits after blocks {m.exit_blocks}"
    if m.backbone == CASCADE:
        model = "cascade of " + " -> ".join(member_descriptions(m.backbone_config))
    lines = [
        f"model     {model}",
        f"data      {d.name} ({d.in_channels}x{d.image_size}x{d.image_size}, {len(d.class_names)} classes, "
        f"train/val/test {d.sizes.get('train')}/{d.sizes.get('val')}/{d.sizes.get('test')})",
        "method    " + ", ".join(f"{k}={v}" for k, v in {"method": t.method, **t.settings}.items()),
        (
            f"training  {config.get('epochs')} epochs, {config.get('optimizer')} lr {config.get('lr')}, "
            f"seed {config.get('seed')}, {t.seconds or 0:.0f} s on {t.device}"
            if config.get("epochs") is not None
            else "training  none of its own"
        ),
        f"network without exits: {c.full_macs / 1e6:.2f} M MACs, {c.full_params / 1e3:.1f} k params "
        f"(with exits {c.with_exits_params / 1e3:.1f} k)",
        "",
        f"{'exit':>4} {'block':>5} {'MACs (M)':>9} {'MACs %':>7} {'params (k)':>10} {'ens. w':>6} "
        f"{'val acc':>8} {'val ens':>8} {'test acc':>8} {'test ens':>8}",
    ]
    mv, mt = meta.metrics.get("val"), meta.metrics.get("test")
    w = t.ensemble_weights

    def pct(metrics: SplitMetrics | None, values: str, i: int) -> str:
        got = getattr(metrics, values) if metrics is not None else []
        return f"{100 * got[i]:7.2f}%" if i < len(got) else "      -"

    for i, e in enumerate(c.exits):
        lines.append(
            f"{i:>4} {e.block:>5} {e.cum_macs / 1e6:>9.2f} {100 * e.macs_fraction:>6.1f}% "
            f"{e.cum_params / 1e3:>10.1f} {w[i] if i < len(w) else 0:>6.3f} {pct(mv, 'exit_acc', i)} "
            f"{pct(mv, 'ensemble_acc', i)} {pct(mt, 'exit_acc', i)} {pct(mt, 'ensemble_acc', i)}"
        )
    return "\n".join(lines)


def _cmd_info(a: argparse.Namespace) -> int:
    """print a checkpoint's metadata and per-exit table"""
    from aep_core.checkpoint import read_checkpoint

    meta = read_checkpoint(checkpoint_file(a.checkpoint)).meta
    print(json.dumps(meta.to_dict(), indent=1) if a.json else format_info(meta))
    return 0


def _cmd_list_models(a: argparse.Namespace) -> int:
    """list registered backbones, the torchvision classifiers that take exits, or one's exit points"""
    from aep_core.models import list_models

    if a.torchvision is None:
        for name, desc in list_models().items():
            print(f"{name:12} {desc}")
        return 0
    if a.torchvision == "":
        from aep_core.models.torchvision_backbones import FAMILIES, UNSUPPORTED

        for family in FAMILIES.values():
            print(f"{family.name:12} {family.description}\n{'':12} {', '.join(family.archs)}")
        print("not supported: " + "; ".join(f"{name.rstrip('_')}*: {why}" for name, why in UNSUPPORTED.items()))
        return 0
    print(format_exit_points(a.torchvision, a.in_channels, a.image_size))
    return 0


def format_exit_points(arch: str, in_channels: int, image_size: int) -> str:
    """The exit points of torchvision classifier `arch` as text: per block, its name, the graph node giving its
    output, channels, stage, and the share of the network's MACs spent up to it at `image_size`."""
    from aep_core.cost import cumulative_block_macs
    from aep_core.models import ModelSpec, build_model
    from aep_core.models.torchvision_backbones import block_output_nodes

    model = build_model(
        ModelSpec(
            backbone="torchvision", backbone_config={"arch": arch}, in_channels=in_channels, image_size=image_size
        )
    )
    backbone = model.backbone
    cum = cumulative_block_macs(backbone, (in_channels, image_size, image_size))
    nodes = block_output_nodes(arch)
    lines = [
        f"{arch}: {len(backbone.blocks)} blocks; exits follow any of them (--exits takes indices or names); "
        f"MACs at {in_channels}x{image_size}x{image_size}, classifier excluded",
        f"{'block':>5}  {'name':24} {'graph node':32} {'channels':>8} {'stage':>5} {'MACs %':>7}",
    ]
    for b, name in enumerate(backbone.block_names):
        lines.append(
            f"{b:>5}  {name:24} {nodes[b]:32} {backbone.block_channels[b]:>8} {backbone.block_stage[b]:>5} "
            f"{100 * cum[b] / cum[-1]:>6.1f}%"
        )
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `info` and `list-models` on `sub`."""
    i = add_command(sub, "info", _cmd_info, show_defaults=False)
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true", help="print the metadata as JSON")
    m = add_command(sub, "list-models", _cmd_list_models, show_defaults=False)
    m.add_argument(
        "--torchvision",
        nargs="?",
        const="",
        default=None,
        metavar="ARCH",
        help="list the torchvision classifiers that take exits, or ARCH's exit points",
    )
    m.add_argument("--image-size", type=positive_int, default=224, help="input side for the exit points' MACs")
    m.add_argument("--in-channels", type=int, default=3, choices=(1, 3), help="input channels")
