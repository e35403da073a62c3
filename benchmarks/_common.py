"""Shared helpers of the benchmark scripts: machine description, thread setting, data loading."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.paths import shipped_models_dir
from aep_core.threads import set_default_threads

DEFAULT_CHECKPOINT = shipped_models_dir() / f"{DEFAULT_MODEL}.pt"


def setup(threads: int) -> str:
    """Set torch's thread count and keep freed buffers (as the CLI and the app do); return a line naming
    the machine, threads and allocator setting."""
    from aep_core.allocator import keep_freed_buffers

    kept = keep_freed_buffers()
    set_default_threads(threads)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"python {platform.python_version()}; "
        f"freed buffers {'kept (glibc thresholds raised)' if kept else 'returned to the system'}"
    )


def checkpoint_or_exit(path: str | Path) -> Path:
    """The checkpoint path, or exit with a message saying how to get one."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(
            f"checkpoint {p} not found: pass --checkpoint PATH (train one with `python -m aep_core train`)."
        )
    return p


def load_model_and_records(path: str | Path):
    """The checkpoint at `path` (exits with a message if missing), its model, metadata and val/test evaluation files."""
    from aep_core.checkpoint import load_checkpoint
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation

    ckpt = checkpoint_or_exit(path)
    model, meta = load_checkpoint(ckpt)
    val, test = (load_evaluation(evaluation_path(ckpt, split)) for split in ("val", "test"))
    return ckpt, model, meta, val, test
