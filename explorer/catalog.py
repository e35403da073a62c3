"""The model picker's list: checkpoints found in the app's folders, then this session's uploaded ones."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from aep_core.checkpoint.discovery import discover_models, model_folders, trained_models_dir
from aep_core.paths import shipped_models_dir
from explorer import APP_DIR

UPLOAD_PREFIX = "uploaded: "


def trained_dir() -> Path:
    """Where models trained on the Train page go (git-ignored): runs/app, or AEP_APP_RUNS_DIR."""
    return trained_models_dir(APP_DIR / "runs" / "app")


def model_files() -> dict[str, str]:
    """Label -> path of every checkpoint the app offers: shipped models, models trained on the Train page,
    and the AEP_MODELS_DIR folders."""
    return discover_models(model_folders(shipped_models_dir(), trained_dir()))


def reserved_names() -> set[str]:
    """File stems of the picker's models outside the trained folder: a model trained here must not take one of
    them, since it could neither replace that model nor be told apart from it in the picker."""
    own = trained_dir().resolve()
    return {Path(p).stem for p in model_files().values() if Path(p).parent.resolve() != own}


def uploads() -> dict[str, tuple[str, bytes]]:
    """This session's uploaded checkpoints: file name -> (content digest, bytes)."""
    return st.session_state.setdefault("uploads", {})


def available_models() -> list[str]:
    """Model labels the picker offers: checkpoints on disk, then this session's uploads."""
    return list(model_files()) + [UPLOAD_PREFIX + name for name in uploads()]
