"""Command-line sub-command for data: make-slice (the shipped Fashion-MNIST test slice)."""

from __future__ import annotations

import argparse

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `make-slice` on `sub`."""
    from aep_core.data import SLICE_PATH

    s = add_command(sub, "make-slice", _cmd_make_slice)
    s.add_argument("--out", default=str(SLICE_PATH), help="output file")
    s.add_argument("--size", type=positive_int, default=1000, help="test images in the slice")
    s.add_argument("--seed", type=non_negative_int, default=0, help="seed of the images chosen")
    s.add_argument("--data-dir", default=None, help="Fashion-MNIST directory")
