"""Finding model checkpoints in folders: the model picker's list (shipped models, models trained from the
app, and the folders named in AEP_MODELS_DIR), each labelled by its file stem.

Environment: AEP_MODELS_DIR adds folders (os.pathsep-separated); AEP_MODELS_ONLY=1 leaves the shipped
models out (tests, demos); AEP_APP_RUNS_DIR moves the folder that models trained from the app go to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aep_core.checkpoint.sidecars import is_model_file

# the shipped model a picker opens on: a cascade built to exit early (networks of 1/4, 1/2 and 3/2 the compact
# CNN's width; scripts/train_pretrained.sh)
DEFAULT_MODEL = "cascade_w025_w050_w150"


def trained_models_dir(default: str | Path, env: Mapping[str, str] = os.environ) -> Path:
    """The folder models trained from the app go to: AEP_APP_RUNS_DIR if set, else `default`."""
    return Path(env.get("AEP_APP_RUNS_DIR") or default)


def model_folders(shipped: str | Path, trained: str | Path, env: Mapping[str, str] = os.environ) -> list[Path]:
    """The folders searched for checkpoints, in order: the shipped models (left out when AEP_MODELS_ONLY=1),
    the trained models, then the AEP_MODELS_DIR entries."""
    extra = [Path(p) for p in env.get("AEP_MODELS_DIR", "").split(os.pathsep) if p.strip()]
    first = [] if env.get("AEP_MODELS_ONLY") == "1" else [Path(shipped)]
    return [*first, Path(trained), *extra]


def discover_models(folders: Iterable[str | Path]) -> dict[str, str]:
    """Label -> path of every model checkpoint in the folders (not recursive; resumable training states are
    skipped). A label is the file stem, prefixed with its folder's name when an earlier folder took the stem."""
    found: dict[str, str] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.pt")):
            if not is_model_file(path):
                continue
            label = path.stem if path.stem not in found else f"{path.parent.name}/{path.stem}"
            found[label] = str(path)
    return found


def default_model(labels: Sequence[str]) -> str | None:
    """The label a picker starts on: the shipped AEP model if listed, else the first one (None if none)."""
    if DEFAULT_MODEL in labels:
        return DEFAULT_MODEL
    return labels[0] if labels else None
