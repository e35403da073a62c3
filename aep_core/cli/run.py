"""Command-line sub-command `run`: real early-exit inference with `aep_core.exits.runtime` on a split of the
checkpoint's dataset or on a folder of images, on one of the registered engines (PyTorch, ONNX Runtime), with
measured throughput and, optionally, the speed-up over the same network without exits on the faster static
engine."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aep_core.cli.common import (
    SPLITS,
    add_command,
    add_goal_arguments,
    add_rule_arguments,
    check_outputs,
    checkpoint_file,
    describe_operating_point,
    goal_flag,
    operating_point,
    parse_rule_settings,
    positive_int,
    solve_for_goal,
)
from aep_core.errors import ConfigError
from aep_core.threads import set_default_threads

if TYPE_CHECKING:  # heavy imports stay inside the command, so `--help` is quick
    import numpy as np
    import torch

    from aep_core.checkpoint import CheckpointMeta
    from aep_core.exits.runtime import RunResult


def _choose_settings(a: argparse.Namespace, ckpt: Path) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """The rule's settings, where they come from, and the operating point (`operating_point`) when a goal chose
    them on the validation file (certified unless --optimistic; replayed on the saved test file to report)."""
    from aep_core.exits.rules import get_rule, list_rules

    settings = parse_rule_settings(a)
    setting = get_rule(a.rule).setting
    if goal_flag(a) is None:
        if setting is not None and setting.keyword not in settings:
            goal = " or a goal that chooses them on validation (--max-drop, --budget)" if setting.per_exit else ""
            raise ConfigError(f"{a.rule} needs --{setting.keyword}{goal}.")
        return settings, "as given", None
    if not get_rule(a.rule).has_thresholds:
        raise ConfigError(
            f"--max-drop and --budget choose thresholds; {a.rule} has none. "
            f"Use one of: {', '.join(list_rules(deployable=True, thresholds=True))}."
        )
    if setting is not None and setting.keyword in settings:
        raise ConfigError(
            f"Give either --{setting.keyword} or a goal (--max-drop, --budget) that chooses them, not both."
        )
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation

    val = load_evaluation(evaluation_path(ckpt, "val"))
    test_path = evaluation_path(ckpt, "test")
    test = load_evaluation(test_path) if test_path.is_file() else None
    sol = solve_for_goal(a, val, test, settings.get("weights"))
    op = operating_point(a, sol, val, test)
    how = "certified on validation" if op["certified"] else "optimistic: chosen on validation without a guarantee"
    return dict(sol.settings), how, op


def _inputs(
    a: argparse.Namespace, meta: CheckpointMeta
) -> tuple[torch.Tensor, np.ndarray | None, list[str] | None, list[tuple[str, str]]]:
    """(images, labels or None, names or None, skipped files) from the split or the folder asked for."""
    import numpy as np

    if a.images:
        from aep_core.preprocess import prepare_folder

        ds = meta.dataset
        folder = prepare_folder(a.images, ds.image_size, ds.in_channels, ds.mean, ds.std, a.limit)
        return folder.tensor, None, folder.files, folder.skipped
    from aep_core.data import first_images
    from aep_core.training.job import checkpoint_dataset

    subset = getattr(checkpoint_dataset(meta, a.dataset, a.data_dir), a.split)
    n = len(subset) if a.limit is None else min(a.limit, len(subset))
    if n == 0:
        raise ConfigError(f"The {a.split} split is empty: there is nothing to run.")
    x, y = first_images(subset, n)
    return x, np.asarray(y), None, []


def _cmd_run(a: argparse.Namespace) -> int:
    """really run early-exit inference (a sample stops computing where it exits) on a split or a folder of images;
    report throughput, optionally against no exits"""
    import numpy as np
    import torch

    from aep_core.checkpoint import load_checkpoint
    from aep_core.exits.rules import ModelExits, make_rule
    from aep_core.exits.runtime import get_engine

    ckpt = checkpoint_file(a.checkpoint)
    if a.out:
        check_outputs(a.out)
    engine = get_engine(a.engine)
    if a.threads is not None:
        set_default_threads(a.threads)
    model, meta = load_checkpoint(ckpt)
    settings, how, op = _choose_settings(a, ckpt)
    # The ensemble's weights default to the ones the model was trained with, as in the replay and the solvers.
    rule = make_rule(a.rule, ModelExits.of_model(model, meta.ensemble_weights), **settings)
    x, labels, files, skipped = _inputs(a, meta)
    runner = engine.runner(model, rule)
    x_run = runner.as_input(x)
    runner.run(x_run[: a.batch_size], a.batch_size)  # untimed: sessions, kernels and buffers set up
    res = runner.run(x_run, a.batch_size)
    cost = meta.cost
    cum_macs = np.array(cost.cum_macs, dtype=np.float64)
    counts = np.bincount(res.exit_index, minlength=model.num_exits)
    out: dict[str, Any] = {
        "rule": a.rule,
        "settings": dict(rule.settings),
        "settings_from": how,
        "samples": len(res.exit_index),
        "batch_size": a.batch_size,
        "engine": a.engine,
        "threads": torch.get_num_threads(),
        "seconds": res.seconds,
        "samples_per_s": res.samples_per_s,
        "exit_distribution": (counts / counts.sum()).tolist(),
        "macs_ratio": float(cum_macs[res.exit_index].mean() / cost.full_macs),
    }
    if op is not None:
        out["operating_point"] = op
    if labels is not None:
        out["accuracy"] = float((res.prediction == labels).mean())
    if a.compare:
        out.update(_compare(model, x, a.batch_size, res, labels))
    if skipped:
        out["skipped"] = [{"file": f, "reason": r} for f, r in skipped]
    if a.out:
        _write_predictions(a.out, res, files, labels, meta.class_names)
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(_format(out, a, files is not None))
    for f, r in skipped:
        print(f"skipped {f}: {r}", file=sys.stderr)
    if a.out:
        print(f"wrote one row per input to {a.out}")
    return 0


def _compare(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, res: RunResult, labels: np.ndarray | None
) -> dict[str, Any]:
    """The network without exits timed on every installed engine (one round each after a warm-up batch), and
    the early-exit run against the faster."""
    from aep_core.exits.runtime import best_static

    base = best_static(model, x, batch_size, rounds=1)
    full_pred = base.prediction
    seconds = len(x) / base.best_per_s
    return {
        "without_exits": {
            "engine": base.engine,
            "seconds": seconds,
            "samples_per_s": base.best_per_s,
            "accuracy": float((full_pred == labels).mean()) if labels is not None else None,
            "engines": {name: {"samples_per_s": v, "seconds": len(x) / v} for name, v in base.samples_per_s.items()},
        },
        "speed_up": seconds / res.seconds,
        "same_prediction_as_without_exits": float((full_pred == res.prediction).mean()),
    }


def _format(out: dict[str, Any], a: argparse.Namespace, folder: bool) -> str:
    shown = {
        k: ([round(x, 4) for x in v] if isinstance(v, list) else v)
        for k, v in out["settings"].items()
        if k != "weights"
    }
    source = f"images under {a.images}" if folder else f"the {a.split} split"
    lines = [f"{out['rule']} {shown} ({out['settings_from']})"]
    if "operating_point" in out:
        lines += describe_operating_point(out["operating_point"], "test (saved outputs)")
    lines += [
        f"{out['samples']} inputs from {source}, batch {out['batch_size']}, {out['threads']} thread(s), "
        f"engine {out['engine']}",
    ]
    if "accuracy" in out:
        lines.append(f"accuracy {100 * out['accuracy']:.2f}%")
    lines.append("exit distribution %  " + " ".join(f"{100 * v:5.1f}" for v in out["exit_distribution"]))
    lines.append(f"MACs spent: {100 * out['macs_ratio']:.1f}% of the network without exits")
    lines.append(f"early exit: {out['samples_per_s']:.0f} samples/s ({out['seconds']:.3f} s)")
    if "without_exits" in out:
        w = out["without_exits"]
        acc = f", accuracy {100 * w['accuracy']:.2f}%" if w["accuracy"] is not None else ""
        each = ", ".join(f"{name} {v['samples_per_s']:.0f}" for name, v in w["engines"].items())
        lines.append(f"without exits, per engine: {each} samples/s")
        lines.append(
            f"without exits on the best static engine ({w['engine']}): {w['samples_per_s']:.0f} samples/s "
            f"({w['seconds']:.3f} s){acc}"
        )
        lines.append(
            f"speed-up {out['speed_up']:.2f}x over {w['engine']} without exits; "
            f"{100 * out['same_prediction_as_without_exits']:.1f}% of the predictions equal the network without exits'"
        )
    return "\n".join(lines)


def _write_predictions(
    path: str, res: RunResult, files: list[str] | None, labels: np.ndarray | None, class_names: list[str]
) -> None:
    import io

    from aep_core.checkpoint import atomic_write_bytes

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["input", "exit", "prediction", "class"] + (["label"] if labels is not None else []))
    for i, (k, p) in enumerate(zip(res.exit_index, res.prediction, strict=True)):
        name = files[i] if files is not None else str(i)
        w.writerow([name, int(k), int(p), class_names[int(p)]] + ([int(labels[i])] if labels is not None else []))
    atomic_write_bytes(path, buf.getvalue().encode())


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `run` on `sub`."""
    from aep_core.exits.runtime import ENGINES, list_engines

    p = add_command(sub, "run", _cmd_run)
    p.add_argument("checkpoint")
    add_rule_arguments(p, deployable=True, evaluation=False, json=False)
    add_goal_arguments(p)
    p.add_argument("--split", default="test", choices=SPLITS, help="split of the checkpoint's dataset")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's own)")
    p.add_argument("--data-dir", default=None, help="dataset directory")
    p.add_argument("--images", default=None, metavar="DIR", help="run on every image under DIR instead of a split")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N inputs")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (exited samples leave the batch)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
    p.add_argument(
        "--engine",
        default="torch",
        choices=list_engines(),
        help="inference engine: " + "; ".join(f"{n}: {s.help.rstrip('.')}" for n, s in ENGINES.items()),
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also time the network without exits, same weights, on every installed engine, and report the "
        "speed-up over the faster",
    )
    p.add_argument("--out", default=None, help="write one CSV row per input: exit, prediction, class (and label)")
    p.add_argument("--json", action="store_true", help="print JSON")
