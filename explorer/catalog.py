"""The model picker's list: checkpoints and per-exit outputs files found in the app's folders, then this session's
uploaded ones."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from aep_core.checkpoint.discovery import discover_models, model_folders, trained_models_dir
from aep_core.checkpoint.outputs_import import is_outputs_file, sidecar_path
from aep_core.paths import shipped_models_dir
from explorer import APP_DIR

UPLOAD_PREFIX = "uploaded: "
OUTPUTS_PREFIX = "uploaded outputs: "  # an uploaded per-exit outputs file


def trained_dir() -> Path:
    """Where models trained on the Train page go (git-ignored): runs/app, or AEP_APP_RUNS_DIR."""
    return trained_models_dir(APP_DIR / "runs" / "app")


def model_files() -> dict[str, str]:
    """Label -> path of every checkpoint the app offers: shipped models, models trained on the Train page,
    and the AEP_MODELS_DIR folders."""
    return discover_models(model_folders(shipped_models_dir(), trained_dir()))


@st.cache_data(show_spinner=False, max_entries=64)
def _outputs_in(folder: str, mtime: float) -> list[str]:
    # Listed again when the folder's entries change (its mtime): the picker asks on every rerun.
    return [
        str(p)
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
        and is_outputs_file(p)  # a .csv or .parquet, or a .npz that is not a checkpoint's evaluation file
        and (p.suffix == ".npz" or sidecar_path(p).is_file())
    ]


def outputs_files() -> dict[str, str]:
    """Label (file name) -> path of every per-exit outputs file in the model folders: a .npz that is not an
    evaluation file, or a .csv or .parquet with its .json beside it."""
    found: dict[str, str] = {}
    for folder in model_folders(shipped_models_dir(), trained_dir()):
        if not folder.is_dir():
            continue
        for path in _outputs_in(str(folder), folder.stat().st_mtime):
            name = Path(path).name
            found[name if name not in found else f"{folder.name}/{name}"] = path
    return found


def reserved_names() -> set[str]:
    """File stems of the picker's models outside the trained folder: a model trained here must not take one of
    them, since it could neither replace that model nor be told apart from it in the picker."""
    own = trained_dir().resolve()
    return {Path(p).stem for p in model_files().values() if Path(p).parent.resolve() != own}


def uploads() -> dict[str, tuple[str, bytes]]:
    """This session's uploaded checkpoints: file name -> (content digest, bytes)."""
    return st.session_state.setdefault("uploads", {})


def outputs_uploads() -> dict[str, tuple[str, tuple[tuple[str, bytes], ...]]]:
    """This session's uploaded per-exit outputs files: file name -> (content digest, (name, bytes) of each file
    uploaded with it: the outputs file and, for a table, its .json)."""
    return st.session_state.setdefault("outputs_uploads", {})


def available_models() -> list[str]:
    """Model labels the picker offers: checkpoints and outputs files on disk, then this session's uploads."""
    return [
        *model_files(),
        *outputs_files(),
        *(UPLOAD_PREFIX + name for name in uploads()),
        *(OUTPUTS_PREFIX + name for name in outputs_uploads()),
    ]
