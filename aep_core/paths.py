"""Where the project's shipped files are: the `assets/` folder of a checkout (models, their evaluation files,
the Fashion-MNIST slice), or the folder named by AEP_ASSETS_DIR for an installed package."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent  # the checkout holding aep_core/, app.py and assets/


def assets_dir() -> Path:
    """The shipped assets folder: AEP_ASSETS_DIR if set, else the checkout's `assets/`."""
    return Path(os.environ.get("AEP_ASSETS_DIR") or PROJECT_DIR / "assets")


def shipped_models_dir() -> Path:
    """The folder of the shipped checkpoints and their evaluation files."""
    return assets_dir() / "models"


def data_slice_path() -> Path:
    """The shipped Fashion-MNIST slice (1,000 test images)."""
    return assets_dir() / "fashion_mnist_slice.npz"
