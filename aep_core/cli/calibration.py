"""Command-line sub-commands for calibrated exits: calibrate (fit one temperature per exit on the
validation split, store it in the checkpoint, print calibration before and after on the test split; given a
per-exit outputs file instead, fit on its val samples, report on its test samples and store nothing but an
optional JSON file) and
ood (AUROC of the "I don't know" score against rotated, inverted and noise images)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from aep_core.cli.common import (
    add_command,
    check_outputs,
    checkpoint_file,
    non_negative_int,
    open_fraction,
    positive_int,
    unit_fraction,
)
from aep_core.errors import ConfigError, DataError
from aep_core.threads import set_default_threads

if TYPE_CHECKING:
    from aep_core.checkpoint import CheckpointMeta
    from aep_core.evaluation import ExitRecord


def format_calibration_table(before: list, after: list, temperatures: list[float]) -> str:
    """Per exit: temperature, accuracy, and ECE / MCE / NLL / Brier before -> after scaling."""
    lines = [f"{'exit':>4} {'T':>7} {'acc %':>6}  {'ECE %':>13}  {'MCE %':>13}  {'NLL':>13}  {'Brier':>13}"]
    for k, (b, a) in enumerate(zip(before, after, strict=True)):
        lines.append(
            f"{k:>4} {temperatures[k]:>7.3f} {100 * b.accuracy:>6.2f}  "
            f"{100 * b.ece:>5.2f} -> {100 * a.ece:>5.2f}  "
            f"{100 * b.mce:>5.2f} -> {100 * a.mce:>5.2f}  {b.nll:>5.3f} -> {a.nll:>5.3f}  "
            f"{b.brier:>5.3f} -> {a.brier:>5.3f}"
        )
    return "\n".join(lines)


def _print_tables(report: ExitRecord, split: str, temps, bins: int) -> None:
    """The calibration table on `report` (the `split` split) before and after scaling with `temps`."""
    from aep_core.analysis.calibration import exit_calibration, scale_record

    print(f"calibration on the {split} split ({report.num_samples} samples, {bins} bins), before -> after scaling")
    before = exit_calibration(report, bins)
    after = exit_calibration(scale_record(report, temps), bins)
    print(format_calibration_table(before, after, list(temps)))


def _write_temperatures(path: str, temps, val: ExitRecord, source: str) -> None:
    """The fitted temperatures as a JSON file: {"temperatures": [...], "fitted_on": "val", "samples": n, ...}."""
    from aep_core.outputs import atomic_write_bytes

    doc = {
        "temperatures": [float(t) for t in temps],
        "fitted_on": "val",
        "samples": val.num_samples,
        "source": source,
    }
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())


def _calibrate_outputs(a: argparse.Namespace) -> int:
    """calibrate on a per-exit outputs file: fit on its val samples, report on its test samples (or val)."""
    from aep_core.analysis.calibration import fit_temperatures
    from aep_core.checkpoint.outputs_import import read_outputs

    if a.no_save:
        raise ConfigError(
            "--no-save is for checkpoints: temperatures fitted on an outputs file are never stored in it."
        )
    if a.out:
        check_outputs(a.out)
    recs = read_outputs(a.checkpoint)
    val = recs["val"]
    temps = fit_temperatures(val)
    name = Path(a.checkpoint).name
    print(
        f"temperatures fitted on {val.num_samples} validation samples of {name}"
        + (f", written to {a.out}" if a.out else " (not stored: --out FILE.json writes them)")
    )
    if a.out:
        _write_temperatures(a.out, temps, val, name)
    report, split = (recs["test"], "test") if "test" in recs else (val, "val")
    if split == "val":
        print(f"no test samples in {name}: the table below is on the validation samples themselves")
    _print_tables(report, split, temps, a.bins)
    return 0


def _cmd_calibrate(a: argparse.Namespace) -> int:
    """fit one temperature per exit on the validation split, store it in the checkpoint, print ECE/MCE/NLL/Brier before
    and after on the test split (a per-exit outputs file: fitted on its val samples, written to --out only)"""
    from aep_core.analysis.calibration import calibrate_checkpoint, fit_temperatures
    from aep_core.checkpoint import read_checkpoint
    from aep_core.checkpoint.outputs_import import is_outputs_file
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation

    if is_outputs_file(a.checkpoint):
        return _calibrate_outputs(a)
    read_checkpoint(checkpoint_file(a.checkpoint))  # a clear message for a bad checkpoint before anything else
    if not a.no_save:
        check_outputs(a.checkpoint, create_parents=False)  # the temperatures are stored in it
    if a.out:
        check_outputs(a.out)
    vpath, tpath = evaluation_path(a.checkpoint, "val"), evaluation_path(a.checkpoint, "test")
    if not vpath.is_file():
        raise ConfigError(
            f"{a.checkpoint} has no validation evaluation file ({vpath.name}); temperatures are fitted "
            "on the validation split. Create it with "
            f"`python -m aep_core evaluate {a.checkpoint} --split val`."
        )
    val = load_evaluation(vpath)
    temps = fit_temperatures(val) if a.no_save else calibrate_checkpoint(a.checkpoint, val)
    report, split = (load_evaluation(tpath), "test") if tpath.is_file() else (val, "val")
    print(
        f"temperatures fitted on {val.num_samples} validation samples"
        + (" (not stored: --no-save)" if a.no_save else f", stored in {a.checkpoint}")
        + (f"; written to {a.out}" if a.out else "")
    )
    if a.out:
        _write_temperatures(a.out, temps, val, Path(a.checkpoint).name)
    if split == "val":
        print(f"no test evaluation file ({tpath.name}): the table below is on the validation split itself")
    _print_tables(report, split, temps, a.bins)
    return 0


def _in_distribution_images(meta: CheckpointMeta, images: str, data_dir: str | None):
    """uint8 test images (n, c, h, w) of the checkpoint's dataset and a description of them."""
    import torch

    from aep_core.data import load_dataset, load_slice, reads_slice_images

    ds = meta.dataset
    if images == "slice":
        if not reads_slice_images(ds.in_channels, ds.image_size, len(ds.class_names)):
            raise DataError(
                "The shipped slice holds 28x28 grayscale Fashion-MNIST images; this model reads "
                f"{ds.in_channels}x{ds.image_size}x{ds.image_size} images. Use --images test."
            )
        s = load_slice()
        return torch.from_numpy(s["images"])[:, None], f"{len(s['images'])} Fashion-MNIST test images (shipped slice)"
    name = ds.name
    if name.startswith("folder"):
        raise DataError(
            "The ood command reads in-memory datasets (Fashion-MNIST, CIFAR-10); this model was trained "
            "on an image folder."
        )
    bundle = load_dataset(name, data_dir, ds.val_size, ds.val_seed)
    return bundle.test.images, f"{len(bundle.test)} {name} test images"


def _cmd_ood(a: argparse.Namespace) -> int:
    """AUROC of the 'I don't know' scores against shifted images: exit disagreement + final confidence, and Try an
    image's flag (distance to the nearest class + the input's own statistics)"""

    from aep_core.analysis import ood
    from aep_core.analysis.calibration import scale_logits, stored_temperatures
    from aep_core.checkpoint import load_checkpoint
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation

    if a.threads is not None:
        set_default_threads(a.threads)
    model, meta = load_checkpoint(checkpoint_file(a.checkpoint))
    temps = None
    if a.calibrated:
        temps = stored_temperatures(meta)
        if temps is None:
            raise ConfigError(
                f"{a.checkpoint} stores no temperatures; run "
                f"`python -m aep_core calibrate {a.checkpoint}` first, or leave out --calibrated."
            )
    scale = (lambda lg: scale_logits(lg, temps)) if temps else (lambda lg: lg)
    images, what = _in_distribution_images(meta, a.images, a.data_dir)
    d = meta.dataset
    in_logits = scale(ood.exit_logits(model, images, d.mean, d.std))
    shifted = {k: scale(ood.exit_logits(model, ood.shift_images(images, k, a.seed), d.mean, d.std)) for k in ood.SHIFTS}
    vpath = evaluation_path(a.checkpoint, "val")
    if vpath.is_file():
        val_scores = ood.ood_score(scale(load_evaluation(vpath).logits), a.weight)
        source = f"{len(val_scores)} validation images"
    else:
        val_scores = ood.ood_score(in_logits, a.weight)
        source = f"the in-distribution test images themselves (no {vpath.name})"
    thr = ood.ood_threshold(val_scores, a.quantile)
    in_flagged = float((ood.ood_score(in_logits, a.weight) > thr).mean())
    print(f"in-distribution: {what}; outputs {'calibrated' if temps else 'uncalibrated'}")
    print(
        f"score = {a.weight:g} x disagreement (share of consecutive exits changing class) + "
        f"{1 - a.weight:g} x (1 - final exit's top probability)"
    )
    print(
        f"threshold {thr:.4f}: the {100 * a.quantile:g}th percentile on {source}; "
        f"in-distribution test images flagged: {100 * in_flagged:.1f}%"
    )
    print(f"{'shift':<9} {'AUROC':>6} {'disagreement':>13} {'1-confidence':>13} {'flagged %':>10}")
    for r in ood.ood_report(in_logits, shifted, thr, a.weight):
        print(
            f"{r.kind:<9} {r.auroc:>6.3f} {r.auroc_disagreement:>13.3f} {r.auroc_confidence:>13.3f} "
            f"{100 * r.flagged:>10.1f}"
        )
    print("(AUROC columns: the combined score, then each part alone; 0.5 is chance, 1 is perfect separation)")
    if vpath.is_file():
        _print_distance_flag(model, meta, scale, images, in_logits, load_evaluation(vpath), a.seed)
    return 0


def _print_distance_flag(model, meta: CheckpointMeta, scale, images, in_logits, val, seed: int) -> None:
    """The flag Try an image uses (distance of the exits' logits to the nearest class, fitted on validation
    outputs, plus the input's own statistics): its false-flag rate and its AUROC per shifted set."""
    from dataclasses import replace

    from aep_core.analysis import ood

    d = meta.dataset
    flag = ood.flag_threshold(replace(val, logits=scale(val.logits)), None)
    in_scores = flag.scores(in_logits, images.numpy())
    print(
        f"\nTry an image's flag: threshold {flag.format(flag.value)} ({flag.description}); "
        f"in-distribution test images flagged: {100 * float((in_scores > flag.value).mean()):.1f}%"
    )
    print(f"{'shift':<13} {'AUROC':>6} {'flagged %':>10}")
    for kind in (*ood.SHIFTS, *ood.SYNTHETIC):
        make = ood.shift_images if kind in ood.SHIFTS else ood.synthetic_images
        shifted = make(images, kind, seed)
        scores = flag.scores(scale(ood.exit_logits(model, shifted, d.mean, d.std)), shifted.numpy())
        print(f"{kind:<13} {ood.auroc(in_scores, scores):>6.3f} {100 * float((scores > flag.value).mean()):>10.1f}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `calibrate` and `ood` on `sub`."""
    from aep_core.analysis.calibration import DEFAULT_BINS
    from aep_core.analysis.ood import DEFAULT_QUANTILE, DEFAULT_WEIGHT

    c = add_command(sub, "calibrate", _cmd_calibrate)
    c.add_argument("checkpoint", help="checkpoint (.pt) or per-exit outputs file (.npz, .csv or .parquet)")
    c.add_argument(
        "--bins", type=positive_int, default=DEFAULT_BINS, help="equal-width confidence bins for ECE and MCE"
    )
    c.add_argument("--no-save", action="store_true", help="print the table without storing the temperatures")
    c.add_argument("--out", default=None, help="also write the temperatures to this JSON file")
    o = add_command(sub, "ood", _cmd_ood)
    o.add_argument("checkpoint")
    o.add_argument(
        "--images",
        default="slice",
        choices=("slice", "test"),
        help="in-distribution images: the shipped 1000-image slice or the dataset's whole test split",
    )
    o.add_argument("--data-dir", default=None, help="dataset directory (with --images test)")
    o.add_argument(
        "--weight", type=unit_fraction, default=DEFAULT_WEIGHT, help="share of the disagreement in the score"
    )
    o.add_argument(
        "--quantile",
        type=open_fraction,
        default=DEFAULT_QUANTILE,
        help="flagging threshold: this quantile of the score on validation images",
    )
    o.add_argument("--calibrated", action="store_true", help="use the checkpoint's stored temperatures")
    o.add_argument("--seed", type=non_negative_int, default=0, help="seed of the noise images")
    o.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
