"""Command line: python -m aep_core {train, evaluate, info, list-models, make-slice} and the sub-commands
of cli_exits, cli_deploy, cli_calibration and cli_run.

User errors (missing data, bad checkpoints, impossible settings) print one clear line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aep_core.allocator import keep_freed_buffers
from aep_core.errors import AepError


def _add_train(sub: argparse._SubParsersAction) -> None:
    from aep_core.data import DATASETS
    from aep_core.models import PLACEMENTS, list_models
    from aep_core.training import METHODS, SCHEMES

    p = sub.add_parser("train", help="train an early-exit model", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/model.pt", help="checkpoint path; evaluation files and log go next to it")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="dataset")
    g.add_argument("--data-dir", default=None, help="dataset directory (default: Debian's /usr/share/datasets/fashion-mnist)")
    g.add_argument("--val-size", type=int, default=None, help="validation images held out of training (default 5000; slice: 1/5)")
    g.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    g.add_argument("--image-size", type=int, default=32, help="image side for image folders")
    g.add_argument("--in-channels", type=int, default=3, choices=(1, 3), help="channels for image folders")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="compact_cnn", choices=list(list_models()), help="backbone")
    g.add_argument("--width", type=int, default=None, help="ResNet width factor (channels of the first stage)")
    g.add_argument("--depth", type=int, default=None, help="depth for --model resnet (6n+2)")
    g.add_argument("--widths", default=None, help="compact_cnn stage widths, e.g. 32,64,128")
    g.add_argument("--exits", default="blocks", help=f"exit placement: one of {', '.join(PLACEMENTS)}, or block indices like 1,3")
    g.add_argument("--num-exits", type=int, default=None, help="number of early exits for cost-fraction placements")
    g.add_argument("--head-pool", type=int, default=4,
                   help="exit heads average-pool to an N x N grid before their linear layer (default 4; 1: global pooling as in the AEP and EENet papers)")
    g.add_argument("--init", default=None, help="initialise from this checkpoint's backbone and final classifier")
    g = p.add_argument_group("method")
    g.add_argument("--method", default="aep", choices=METHODS, help="training method")
    g.add_argument("--weighting", default="hybrid", choices=SCHEMES, help="AEP weighting scheme")
    g.add_argument("--geometric-base", type=float, default=2.0, help="ratio between consecutive geometric weights")
    g.add_argument("--eenet-loss", default="v2", choices=("v1", "v2"), help="EENet loss version")
    g.add_argument("--lambda", dest="lam", type=float, default=1.0, help="EENet weight of the computational-cost term")
    g.add_argument("--two-stage", action="store_true", help="EENet: per-exit loss for the first half of the epochs")
    g.add_argument("--temperature", type=float, default=3.0, help="self-distillation temperature")
    g.add_argument("--alpha", type=float, default=0.5, help="self-distillation weight of the teacher term")
    g.add_argument("--freeze-epochs", type=int, default=None, help="classifier-wise: backbone epochs before freezing (default half)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10, help="epochs")
    g.add_argument("--batch-size", type=int, default=128, help="batch size")
    g.add_argument("--lr", type=float, default=0.05, help="peak learning rate (cosine schedule to 0)")
    g.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"), help="optimiser (SGD: momentum 0.9, Nesterov)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, split and shuffling")
    g.add_argument("--no-augment", action="store_true", help="disable random shift and flip")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (2 is best on a 2-core machine)")
    g.add_argument("--workers", type=int, default=0, help="data loader workers for image folders")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on CPU)")
    g.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="mixed precision autocast (fp16 needs a GPU)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("resuming and several processes",
                             "Start with `torchrun --nproc_per_node=N -m aep_core train ...` to train on N processes "
                             "(DDP; gloo on CPU, NCCL with --device cuda); --batch-size is per process. "
                             "See docs/DISTRIBUTED.md.")
    g.add_argument("--resume", default=None, metavar="PATH", help="continue from a resumable state (<out stem>.resume.pt)")
    g.add_argument("--save-every", type=int, default=1, help="epochs between resumable states (0: only when interrupted)")


def _cmd_train(a: argparse.Namespace) -> int:
    import os

    from aep_core.training.job import TrainJob, run_train_job
    from aep_core.training import MethodSettings, TrainConfig
    from aep_core.training.loop import TrainingInterrupted

    cfg: dict = {}
    if a.width is not None:
        cfg["width"] = a.width
    if a.depth is not None:
        cfg["depth"] = a.depth
    if a.widths:
        cfg["widths"] = [int(w) for w in a.widths.split(",")]
    exits = a.exits if not a.exits.replace(",", "").isdigit() else [int(b) for b in a.exits.split(",")]
    job = TrainJob(
        out=a.out, dataset=a.dataset, data_dir=a.data_dir, val_size=a.val_size, limit=a.limit,
        image_size=a.image_size, in_channels=a.in_channels, model=a.model, model_config=cfg, placement=exits,
        num_early_exits=a.num_exits, head_pool=a.head_pool, init=a.init,
        method=MethodSettings(a.method, a.weighting, a.geometric_base, a.eenet_loss, a.lam, a.two_stage,
                              a.temperature, a.alpha, a.freeze_epochs),
        train=TrainConfig(a.epochs, a.batch_size, a.lr, a.optimizer, a.weight_decay, a.seed, not a.no_augment,
                          a.workers, a.device, a.threads, a.channels_last, not a.quiet, a.amp, a.save_every),
        resume=a.resume,
    )
    try:
        run_train_job(job)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    return 0


def format_info(meta: dict) -> str:
    """A checkpoint's metadata as text: model, data, method, and the per-exit accuracy and cost table."""
    m, d, t, c = meta["model"], meta["dataset"], meta["training"], meta["cost"]
    lines = [
        f"model     {m['backbone']} {m['backbone_config'] or ''} head={m['head']} exits after blocks {m['exit_blocks']}",
        f"data      {d['name']} ({d['in_channels']}x{d['image_size']}x{d['image_size']}, {len(d['class_names'])} classes, "
        f"train/val/test {d['sizes']['train']}/{d['sizes']['val']}/{d['sizes']['test']})",
        f"method    " + ", ".join(f"{k}={v}" for k, v in t.items() if k in ("method", "weighting", "eenet_loss", "lam",
                                                                            "two_stage", "temperature", "alpha", "freeze_epochs")),
        f"training  {t['config']['epochs']} epochs, {t['config']['optimizer']} lr {t['config']['lr']}, seed {t['config']['seed']}, "
        f"{t['seconds']:.0f} s on {t['device']}",
        f"network without exits: {c['full_macs'] / 1e6:.2f} M MACs, {c['full_params'] / 1e3:.1f} k params "
        f"(with exits {c['with_exits_params'] / 1e3:.1f} k)",
        "",
        f"{'exit':>4} {'block':>5} {'MACs (M)':>9} {'MACs %':>7} {'params (k)':>10} {'ens. w':>6} "
        f"{'val acc':>8} {'val ens':>8} {'test acc':>8} {'test ens':>8}",
    ]
    mv, mt = meta["metrics"].get("val", {}), meta["metrics"].get("test", {})
    w = t.get("ensemble_weights", [])
    for i, e in enumerate(c["exits"]):
        get = lambda mm, key: f"{100 * mm[key][i]:7.2f}%" if key in mm else "      -"  # noqa: E731
        lines.append(f"{i:>4} {e['block']:>5} {e['cum_macs'] / 1e6:>9.2f} {100 * e['macs_fraction']:>6.1f}% "
                     f"{e['cum_params'] / 1e3:>10.1f} {w[i] if i < len(w) else 0:>6.3f} {get(mv, 'exit_acc')} "
                     f"{get(mv, 'ensemble_acc')} {get(mt, 'exit_acc')} {get(mt, 'ensemble_acc')}")
    return "\n".join(lines)


def _cmd_info(a: argparse.Namespace) -> int:
    from aep_core.checkpoint import read_checkpoint

    meta = read_checkpoint(a.checkpoint)["meta"]
    print(json.dumps(meta, indent=1) if a.json else format_info(meta))
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from aep_core.training.job import evaluate_checkpoint

    for split in a.split:
        rec, path = evaluate_checkpoint(a.checkpoint, split, a.dataset, a.data_dir)
        acc = " ".join(f"{100 * v:.2f}" for v in rec.exit_accuracy())
        print(f"{split}: {rec.num_samples} samples, per-exit accuracy % {acc} -> {path}")
    return 0


def _cmd_list(a: argparse.Namespace) -> int:
    from aep_core.models import list_models

    for name, desc in list_models().items():
        print(f"{name:12} {desc}")
    return 0


def _cmd_make_slice(a: argparse.Namespace) -> int:
    import numpy as np

    from aep_core.checkpoint import atomic_write_bytes
    from aep_core.data import load_fashion_mnist_arrays
    import io

    arr = load_fashion_mnist_arrays(a.data_dir)
    idx = np.sort(np.random.default_rng(a.seed).choice(len(arr["test_y"]), a.size, replace=False))
    buf = io.BytesIO()
    np.savez_compressed(buf, images=arr["test_x"][idx], labels=arr["test_y"][idx], indices=idx)
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"wrote {a.size} test images to {a.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m aep_core`."""
    from aep_core.data import SLICE_PATH

    p = argparse.ArgumentParser(prog="python -m aep_core", description="Early-exit networks: train, evaluate, inspect.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    e = sub.add_parser("evaluate", help="save every exit's outputs on a split (evaluation file next to the checkpoint)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("checkpoint")
    e.add_argument("--split", nargs="+", default=["val", "test"], choices=("train", "val", "test"), help="splits")
    e.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's own)")
    e.add_argument("--data-dir", default=None, help="dataset directory")
    i = sub.add_parser("info", help="print a checkpoint's metadata and per-exit table")
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    sub.add_parser("list-models", help="list registered backbones")
    s = sub.add_parser("make-slice", help="write the shipped Fashion-MNIST test slice",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--out", default=str(SLICE_PATH))
    s.add_argument("--size", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", default=None)
    from aep_core.cli import exits as cli_exits

    COMMANDS.update(cli_exits.add_commands(sub))
    from aep_core.cli import deploy as cli_deploy
    COMMANDS.update(cli_deploy.add_commands(sub))
    from aep_core.cli import calibration as cli_calibration
    COMMANDS.update(cli_calibration.add_commands(sub))
    from aep_core.cli import run as cli_run
    COMMANDS.update(cli_run.add_commands(sub))
    return p


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "info": _cmd_info, "list-models": _cmd_list,
            "make-slice": _cmd_make_slice}


def entry() -> None:
    """The `aep` console command."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    keep_freed_buffers()
    try:
        return COMMANDS[args.command](args)
    except AepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
