"""Saved outputs for the commands that replay exit rules: the record of a split from a per-exit outputs file
(.npz, .csv or .parquet written by any framework), an evaluation file (.npz) or a checkpoint (.pt, whose
`<name>.<split>.npz` is read); and the import-outputs sub-command, which turns a per-exit outputs file into the
standard evaluation files `<name>.val.npz` and `<name>.test.npz`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from aep_core.cli.common import add_command, check_outputs, evaluation_or_checkpoint

if TYPE_CHECKING:
    from aep_core.evaluation import ExitRecord


def is_outputs(path: str | Path) -> bool:
    """Whether `path` is a per-exit outputs file rather than an evaluation file or a checkpoint."""
    from aep_core.checkpoint.outputs_import import is_outputs_file

    return is_outputs_file(path)


def evaluation_file(path: str | Path, split: str) -> Path:
    """An evaluation file given directly (.npz) or as its checkpoint (.pt) plus a split."""
    from aep_core.checkpoint.sidecars import evaluation_path

    p = evaluation_or_checkpoint(path)
    return p if p.suffix == ".npz" else evaluation_path(p, split)


def records(path: str | Path, splits: tuple[str, ...]) -> dict[str, ExitRecord]:
    """The records of `splits` present at `path`: from a per-exit outputs file (the splits it holds among
    them; validation is always there), else the evaluation files of a checkpoint, or the evaluation file given
    (for the first split)."""
    from aep_core.checkpoint.outputs_import import read_outputs, restore_costs
    from aep_core.evaluation import load_evaluation

    if is_outputs(path):
        found = read_outputs(path)
        return {s: found[s] for s in splits if s in found}
    if Path(path).suffix == ".npz":
        return {splits[0]: restore_costs(load_evaluation(evaluation_file(path, splits[0])))}
    return {s: restore_costs(load_evaluation(evaluation_file(path, s))) for s in splits}


def record(path: str | Path, split: str) -> ExitRecord:
    """The record of one split: from a per-exit outputs file (OutputsFileError when it has no such split), an
    evaluation file, or a checkpoint's evaluation file."""
    from aep_core.checkpoint.outputs_import import read_outputs, split_record

    if is_outputs(path):
        return split_record(read_outputs(path), split, Path(path).name)
    return records(path, (split,))[split]


def _cmd_import_outputs(a: argparse.Namespace) -> int:
    """turn a per-exit outputs file (.npz, .csv or .parquet from any framework) into evaluation files
    <name>.val.npz and <name>.test.npz that every command and the app read"""
    from aep_core.checkpoint.outputs_import import OutputsFileError, format_cost, read_outputs
    from aep_core.evaluation import save_evaluation

    if not is_outputs(a.file) and Path(a.file).is_file():
        raise OutputsFileError(
            f"{a.file} is not a per-exit outputs file (a .csv, a .parquet, or a .npz holding cum_cost); "
            "see docs/BRING_YOUR_OWN.md."
        )
    recs = read_outputs(a.file)
    out = Path(a.out)
    stem = out.name.removesuffix(".pt")
    targets = {s: out.with_name(f"{stem}.{s}.npz") for s in recs}
    check_outputs(*targets.values())
    for s, rec in recs.items():
        save_evaluation(targets[s], rec)
    first = next(iter(recs.values()))
    unit = first.info["cost_unit"]
    written = " and ".join(f"{targets[s]} ({r.num_samples} samples)" for s, r in recs.items())
    print(f"wrote {written}")
    print(
        f"{first.num_exits} exits, {first.logits.shape[2]} classes, from {first.info['scores']}; cost per exit "
        + ", ".join(format_cost(float(c), unit) for c in first.cum_macs)
        + f"; the network without exits {format_cost(float(first.full_macs), unit)}"
    )
    if "test" not in recs:
        print("no test samples in the file: commands report on the validation samples")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `import-outputs` on `sub`."""
    p = add_command(sub, "import-outputs", _cmd_import_outputs)
    p.add_argument("file", help="per-exit outputs file (.npz, .csv or .parquet; see docs/BRING_YOUR_OWN.md)")
    p.add_argument(
        "--out", required=True, help="DIR/NAME: writes DIR/NAME.val.npz and DIR/NAME.test.npz (evaluation files)"
    )
