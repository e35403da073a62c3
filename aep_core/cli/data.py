"""Command-line sub-commands for data: make-slice (the shipped Fashion-MNIST test slice) and export-folder
(Fashion-MNIST as an image folder, the layout a user's own data takes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aep_core.cli.common import add_command, check_outputs, non_negative_int, positive_int
from aep_core.errors import ConfigError


def _cmd_make_slice(a: argparse.Namespace) -> int:
    """write the shipped Fashion-MNIST test slice"""
    import io

    import numpy as np

    from aep_core.checkpoint import atomic_write_bytes
    from aep_core.data import load_fashion_mnist_arrays

    check_outputs(a.out)
    arr = load_fashion_mnist_arrays(a.data_dir)
    if a.size > len(arr["test_y"]):
        raise ConfigError(f"--size must be at most the {len(arr['test_y'])} test images, got {a.size}.")
    idx = np.sort(np.random.default_rng(a.seed).choice(len(arr["test_y"]), a.size, replace=False))
    buf = io.BytesIO()
    np.savez_compressed(buf, images=arr["test_x"][idx], labels=arr["test_y"][idx], indices=idx)
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"wrote {a.size} test images to {a.out}")
    return 0


def _cmd_export_folder(a: argparse.Namespace) -> int:
    """write Fashion-MNIST as an image folder: train/<class>/*.png and test/<class>/*.png"""
    import numpy as np

    from aep_core.data import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays
    from aep_core.outputs import check_folder

    root = Path(a.out)
    check_folder(root)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty: export into a new folder.")
    arr = load_fashion_mnist_arrays(a.data_dir)
    rng = np.random.default_rng(a.seed)
    counts = {}
    for split, per_class in (("train", a.train_per_class), ("test", a.test_per_class)):
        x, y = arr[f"{split}_x"], arr[f"{split}_y"]
        written = 0
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            idx = np.flatnonzero(y == c)
            idx = np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                _write_png(folder / f"{i:05d}.png", x[i])
            written += len(idx)
        counts[split] = written
    print(f"wrote {counts['train']} training and {counts['test']} test images in 10 class folders under {root}")
    return 0


def _write_png(path: Path, image: object) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `make-slice` and `export-folder` on `sub`."""
    from aep_core.data import SLICE_PATH

    s = add_command(sub, "make-slice", _cmd_make_slice)
    s.add_argument("--out", default=str(SLICE_PATH), help="output file")
    s.add_argument("--size", type=positive_int, default=1000, help="test images in the slice")
    s.add_argument("--seed", type=non_negative_int, default=0, help="seed of the images chosen")
    s.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
    f = add_command(sub, "export-folder", _cmd_export_folder)
    f.add_argument("--out", required=True, help="new folder to write train/ and test/ into")
    f.add_argument("--train-per-class", type=positive_int, default=600, help="training images per class")
    f.add_argument("--test-per-class", type=positive_int, default=100, help="test images per class")
    f.add_argument("--seed", type=non_negative_int, default=0, help="seed of the images chosen")
    f.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
