"""The files that live next to a checkpoint `<stem>.pt`: its evaluation files, training log and resumable
training state. Every reader and writer names them through this module."""

from __future__ import annotations

from pathlib import Path

RESUME_SUFFIX = ".resume.pt"


def evaluation_path(checkpoint: str | Path, split: str) -> Path:
    """The evaluation file of a checkpoint on a split: `<stem>.<split>.npz`."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.{split}.npz")


def log_path(checkpoint: str | Path) -> Path:
    """The training log of a checkpoint: `<stem>.log.json`."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.log.json")


def resume_path(checkpoint: str | Path) -> Path:
    """The resumable training state written while a checkpoint trains: `<stem>.resume.pt`."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}{RESUME_SUFFIX}")


def is_model_file(path: str | Path) -> bool:
    """Whether a `.pt` file is a model checkpoint (not a resumable training state)."""
    name = Path(path).name
    return name.endswith(".pt") and not name.endswith(RESUME_SUFFIX)


def evaluation_paths(checkpoint: str | Path, splits: tuple[str, ...] | list[str] = ("val", "test")) -> list[Path]:
    """The evaluation files of a checkpoint on `splits`."""
    return [evaluation_path(checkpoint, s) for s in splits]


def training_outputs(checkpoint: str | Path) -> list[Path]:
    """Every file a training run writes for `checkpoint`: the checkpoint, its evaluation files on the
    validation and test splits, its log and its resumable state."""
    return [Path(checkpoint), *evaluation_paths(checkpoint), log_path(checkpoint), resume_path(checkpoint)]
