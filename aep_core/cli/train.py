"""Command-line sub-commands for training: train (one model, one checkpoint with its evaluation files and log)
and evaluate (save every exit's outputs on a split next to the checkpoint)."""

from __future__ import annotations

import argparse
import os
import sys

from aep_core.cli.common import (
    SPLITS,
    add_command,
    check_outputs,
    checkpoint_file,
    float_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
    unit_fraction,
)


def _cmd_train(a: argparse.Namespace) -> int:
    """train an early-exit model"""
    from aep_core.checkpoint.sidecars import training_outputs
    from aep_core.training import MethodSettings, TrainConfig
    from aep_core.training.job import TrainJob, run_train_job
    from aep_core.training.loop import TrainingInterrupted

    check_outputs(*training_outputs(a.out))  # before any epoch: the resumable state is written after the first
    cfg: dict = {}
    if a.width is not None:
        cfg["width"] = a.width
    if a.depth is not None:
        cfg["depth"] = a.depth
    if a.convs_per_stage is not None:
        cfg["convs_per_stage"] = a.convs_per_stage
    if a.widths:
        cfg["widths"] = a.widths
    if a.arch is not None:
        cfg["arch"] = a.arch
    exits = exit_placement(a.exits)
    job = TrainJob(
        out=a.out,
        dataset=a.dataset,
        data_dir=a.data_dir,
        val_size=a.val_size,
        split_seed=a.split_seed,
        limit=a.limit,
        image_size=a.image_size,
        in_channels=a.in_channels,
        model=a.model,
        model_config=cfg,
        placement=exits,
        num_early_exits=a.num_exits,
        head_pool=a.head_pool,
        init=a.init,
        weights=a.weights,
        mean=a.mean,
        std=a.std,
        method=MethodSettings(
            a.method,
            a.weighting,
            a.geometric_base,
            a.eenet_loss,
            a.lam,
            a.two_stage,
            a.temperature,
            a.alpha,
            a.freeze_epochs,
            a.backbone_epochs,
        ),
        train=TrainConfig(
            a.epochs,
            a.batch_size,
            a.lr,
            a.optimizer,
            a.weight_decay,
            a.seed,
            not a.no_augment,
            a.workers,
            a.device,
            a.threads,
            a.channels_last,
            not a.quiet,
            a.amp,
            a.save_every,
        ),
        resume=a.resume,
    )
    try:
        run_train_job(job)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"interrupted: {e}", file=sys.stderr)
        return 130
    return 0


def exit_placement(text: str) -> str | list[int | str]:
    """`--exits`: a placement rule's name, or comma-separated block indices or exit-point names."""
    from aep_core.models import PLACEMENTS

    if text in PLACEMENTS:
        return text
    items = [t.strip() for t in text.split(",") if t.strip()]
    return [int(t) if t.isdigit() else t for t in items]


def _cmd_evaluate(a: argparse.Namespace) -> int:
    """save every exit's outputs on a split (evaluation file next to the checkpoint)"""
    from aep_core.checkpoint.sidecars import evaluation_paths
    from aep_core.training.job import evaluate_checkpoint

    check_outputs(*evaluation_paths(checkpoint_file(a.checkpoint), a.split), create_parents=False)
    for split in a.split:
        rec, path = evaluate_checkpoint(a.checkpoint, split, a.dataset, a.data_dir)
        acc = " ".join(f"{100 * v:.2f}" for v in rec.exit_accuracy())
        print(f"{split}: {rec.num_samples} samples, per-exit accuracy % {acc} -> {path}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from aep_core.data import DATASETS
    from aep_core.models import PLACEMENTS, list_models
    from aep_core.training import METHODS, SCHEMES

    p = add_command(sub, "train", _cmd_train)
    p.add_argument("--out", default="runs/model.pt", help="checkpoint path; evaluation files and log go next to it")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="dataset")
    g.add_argument(
        "--data-dir", default=None, help="dataset directory (default: Debian's /usr/share/datasets/fashion-mnist)"
    )
    g.add_argument(
        "--val-size",
        type=positive_int,
        default=None,
        help="validation images held out of training (default 5000; slice: 1/5)",
    )
    g.add_argument("--limit", type=positive_int, default=None, help="train on the first N training images only")
    g.add_argument("--image-size", type=positive_int, default=32, help="image side for image folders")
    g.add_argument("--in-channels", type=int, default=3, choices=(1, 3), help="channels for image folders")
    g.add_argument(
        "--mean",
        type=float_list,
        default=None,
        help="image folders: per-channel normalisation mean, e.g. 0.485,0.456,0.406 (default: the --weights' "
        "own when torchvision names them, else 0.5)",
    )
    g.add_argument("--std", type=float_list, default=None, help="image folders: per-channel normalisation std")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="compact_cnn", choices=list(list_models()), help="backbone")
    g.add_argument(
        "--arch",
        default=None,
        help="for --model torchvision: the torchvision classifier, e.g. mobilenet_v3_small "
        "(`python -m aep_core list-models --torchvision` lists them)",
    )
    g.add_argument(
        "--weights",
        default=None,
        metavar="FILE|NAME",
        help="for --model torchvision: the backbone's starting weights, a state_dict file of the torchvision "
        "model (read with weights_only), or torchvision's pretrained weights' name (DEFAULT, IMAGENET1K_V1, ...) "
        "when they are already in the torch cache (nothing is downloaded)",
    )
    g.add_argument("--width", type=positive_int, default=None, help="ResNet width factor (channels of the first stage)")
    g.add_argument("--depth", type=positive_int, default=None, help="depth for --model resnet (6n+2)")
    g.add_argument("--widths", type=positive_int_list, default=None, help="compact_cnn stage widths, e.g. 32,64,128")
    g.add_argument(
        "--convs-per-stage", type=positive_int, default=None, help="compact_cnn conv blocks per stage (default 2)"
    )
    g.add_argument(
        "--exits",
        default="blocks",
        help=f"exit placement: one of {', '.join(PLACEMENTS)}, or block indices like 1,3, or (torchvision) "
        "exit-point names like layer2.1,layer3.1",
    )
    g.add_argument(
        "--num-exits", type=positive_int, default=None, help="number of early exits for cost-fraction placements"
    )
    g.add_argument(
        "--head-pool",
        type=positive_int,
        default=4,
        help="exit heads average-pool to an N x N grid before their linear layer (default 4; 1: global "
        "pooling as in the AEP and EENet papers)",
    )
    g.add_argument("--init", default=None, help="initialise from this checkpoint's backbone and final classifier")
    g = p.add_argument_group("method")
    g.add_argument("--method", default="aep", choices=list(METHODS), help="training method")
    g.add_argument("--weighting", default="hybrid", choices=list(SCHEMES), help="AEP weighting scheme")
    g.add_argument(
        "--geometric-base", type=positive_float, default=2.0, help="ratio between consecutive geometric weights"
    )
    g.add_argument(
        "--eenet-loss",
        default=None,
        choices=("v1", "v2"),
        help="EENet loss version (default: v2, or v1 after the first stage of --two-stage, as the authors' code)",
    )
    g.add_argument(
        "--lambda", dest="lam", type=non_negative_float, default=1.0, help="EENet weight of the computational-cost term"
    )
    g.add_argument(
        "--two-stage",
        action="store_true",
        help="EENet: per-exit losses for the first sixth of the epochs, then the cumulative loss",
    )
    g.add_argument("--temperature", type=positive_float, default=3.0, help="self-distillation temperature")
    g.add_argument("--alpha", type=unit_fraction, default=0.5, help="self-distillation weight of the teacher term")
    g.add_argument(
        "--freeze-epochs",
        type=non_negative_int,
        default=None,
        help="classifier-wise: backbone epochs before freezing (default half; 0: a pretrained backbone frozen "
        "from the start, BatchNorm statistics included)",
    )
    g.add_argument(
        "--backbone-epochs",
        type=non_negative_int,
        default=0,
        help="aep, eenet, distillation: epochs training the backbone and final classifier alone before the "
        "joint training of every exit (backbone first, then joint)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=10, help="epochs")
    g.add_argument("--batch-size", type=positive_int, default=128, help="batch size")
    g.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate (cosine schedule to 0)")
    g.add_argument(
        "--optimizer", default="sgd", choices=("sgd", "adam"), help="optimiser (SGD: momentum 0.9, Nesterov)"
    )
    g.add_argument("--weight-decay", type=non_negative_float, default=5e-4, help="weight decay")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initial weights and the shuffling")
    g.add_argument(
        "--split-seed",
        type=non_negative_int,
        default=0,
        help="seed of the validation split, kept fixed across --seed so that runs compare on the same data",
    )
    g.add_argument("--no-augment", action="store_true", help="disable random shift and flip")
    g.add_argument("--threads", type=positive_int, default=None, help="CPU threads (2 is best on a 2-core machine)")
    g.add_argument("--workers", type=non_negative_int, default=0, help="data loader workers for image folders")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on CPU)")
    g.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="mixed precision autocast (fp16 needs a GPU)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "resuming and several processes",
        "Start with `torchrun --nproc_per_node=N -m aep_core train ...` to train on N processes "
        "(DDP; gloo on CPU, NCCL with --device cuda); --batch-size is per process. "
        "See docs/DISTRIBUTED.md.",
    )
    g.add_argument(
        "--resume", default=None, metavar="PATH", help="continue from a resumable state (<out stem>.resume.pt)"
    )
    g.add_argument(
        "--save-every",
        type=non_negative_int,
        default=1,
        help="epochs between resumable states (0: only when interrupted)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `train` and `evaluate` on `sub`."""
    _add_train(sub)
    e = add_command(sub, "evaluate", _cmd_evaluate)
    e.add_argument("checkpoint")
    e.add_argument("--split", nargs="+", default=["val", "test"], choices=SPLITS, help="splits")
    e.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's own)")
    e.add_argument("--data-dir", default=None, help="dataset directory")
