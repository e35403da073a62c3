"""Command-line sub-command for AEP pruning: prune (cut a checkpoint at its best validation ensemble exit,
save the smaller model and print what it saves)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aep_core.cli.common import (
    add_command,
    check_outputs,
    checkpoint_file,
    drop_points,
    non_negative_int,
    positive_int,
)
from aep_core.threads import set_default_threads


def _cmd_prune(a: argparse.Namespace) -> int:
    """AEP prune a checkpoint at its best validation ensemble cut; print the savings"""

    from aep_core.analysis.pruning import prune_checkpoint
    from aep_core.checkpoint.sidecars import evaluation_paths

    if a.threads is not None:
        set_default_threads(a.threads)
    src = checkpoint_file(a.checkpoint)
    out = Path(a.out) if a.out else src.with_name(f"{src.stem}.pruned.pt")
    check_outputs(out, *evaluation_paths(out))
    # Missing evaluation files of the source are created beside it first.
    check_outputs(*(p for p in evaluation_paths(src) if not p.is_file()), create_parents=False)
    path, report = prune_checkpoint(src, out, a.tolerance / 100.0, a.cut, a.latency_repeats)
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.format())
    print(f"saved {path} (+ its val/test evaluation files)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `prune` on `sub`."""
    r = add_command(sub, "prune", _cmd_prune)
    r.add_argument("checkpoint")
    r.add_argument("--out", default=None, help="pruned checkpoint path (default: <name>.pruned.pt)")
    r.add_argument(
        "--tolerance", type=drop_points, default=0.0, help="take the smallest cut within this many points of the best"
    )
    r.add_argument("--cut", type=non_negative_int, default=None, help="cut at this exit instead of choosing")
    r.add_argument("--latency-repeats", type=non_negative_int, default=20, help="timing repeats (0: skip latency)")
    r.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the latency measurement")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
