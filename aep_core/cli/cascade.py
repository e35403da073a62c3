"""Command-line sub-command for cascades: cascade (separate networks, small first, as one early-exit model whose
exit k is member k's network; every other command then reads its checkpoint as any model's)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aep_core.cli.common import add_command, check_outputs, checkpoint_file


def _cmd_cascade(a: argparse.Namespace) -> int:
    """build a cascade of separate networks (small first) as one early-exit model: member k answers at exit k"""
    from aep_core.checkpoint.sidecars import evaluation_paths
    from aep_core.cli.models import format_info
    from aep_core.models.cascade import make_cascade

    members = [checkpoint_file(p) for p in a.members]
    out = Path(a.out)
    check_outputs(out, *evaluation_paths(out))
    path, meta = make_cascade(members, out, log=print)
    print(format_info(meta))
    print(f"saved {path} (+ its val/test evaluation files)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `cascade` on `sub`."""
    c = add_command(sub, "cascade", _cmd_cascade)
    c.add_argument(
        "--members",
        nargs="+",
        required=True,
        metavar="CHECKPOINT",
        help="member checkpoints, smallest first (two or more, trained on the same data)",
    )
    c.add_argument("--out", required=True, help="the cascade's checkpoint path (its evaluation files go beside it)")
