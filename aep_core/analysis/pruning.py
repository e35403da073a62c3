"""AEP pruning: keep the exits up to the cut whose ensemble is best on the validation split, drop the
blocks and heads after it, and report what that saves.

The pruned model is a real, smaller EarlyExitNet: its checkpoint records the kept exits
(`meta.model.exit_blocks`) and block count (`meta.model.num_blocks`), so `build_model` rebuilds it
truncated. Its final exit is the cut exit and it predicts with the ensemble of the kept
exits under their training weights.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aep_core.checkpoint import CheckpointMeta, PruningMeta, load_checkpoint, save_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cost import exit_costs
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation, save_evaluation
from aep_core.exits.rules import ModelExits, resolve_ensemble_weights
from aep_core.models import EarlyExitNet, build_model
from aep_core.models.inference import as_model_input, prepare_for_inference


def choose_cut(val: ExitRecord, weights: list[float] | np.ndarray | None = None, tolerance: float = 0.0) -> int:
    """The exit k whose ensemble of exits 0..k is most accurate on `val`; with a tolerance (in accuracy,
    e.g. 0.005 = half a point), the smallest k within that of the best."""
    if val.num_samples == 0:
        raise ConfigError("The validation record holds no samples: a cut cannot be chosen.")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"The pruning tolerance is an accuracy fraction in [0, 1), got {tolerance}.")
    model = ModelExits.of_record(val)
    if weights is None and model.ensemble_weights is None:
        raise ConfigError(
            f"Pruning needs one ensemble weight per exit ({val.num_exits}); the record holds none, so give them."
        )
    acc = val.ensemble_accuracy(resolve_ensemble_weights(weights, model))
    return int(np.flatnonzero(acc >= acc.max() - tolerance)[0])


def prune_model(
    model: EarlyExitNet, meta: CheckpointMeta, cut: int, source: str | None = None, tolerance: float | None = None
) -> tuple[EarlyExitNet, CheckpointMeta]:
    """The model without the blocks and heads after exit `cut`, and its checkpoint metadata (naming the
    `source` checkpoint and the `tolerance` the cut was chosen with, when given)."""
    if not 0 <= cut < model.num_exits:
        raise ConfigError(f"Cut exit {cut} does not exist: this model has exits 0..{model.num_exits - 1}.")
    kept = cut + 1
    spec = replace(meta.model, exit_blocks=list(model.exit_blocks[:kept]), num_blocks=model.exit_blocks[cut] + 1)
    pruned = build_model(spec)
    own = pruned.state_dict()
    pruned.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=True)
    pruned.eval()
    calibration = meta.calibration
    if calibration is not None:  # the kept exits compute what they did, so their temperatures stay
        calibration = replace(calibration, temperatures=list(calibration.temperatures[:kept]))
    return pruned, replace(
        meta,
        model=spec,
        cost=exit_costs(pruned, meta.dataset.input_shape),
        training=replace(meta.training, ensemble_weights=list(meta.training.ensemble_weights[:kept])),
        metrics={
            split: replace(m, exit_acc=m.exit_acc[:kept], ensemble_acc=m.ensemble_acc[:kept])
            for split, m in meta.metrics.items()
        },
        calibration=calibration,
        pruning=PruningMeta(cut, list(model.exit_blocks), len(model.backbone.blocks), source, tolerance),
    )


def prune_record(rec: ExitRecord, cut: int, full_macs: int) -> ExitRecord:
    """An evaluation record restricted to exits 0..cut (the pruned model computes exactly these outputs)."""
    info = {**rec.info, "ensemble_weights": list(rec.info.get("ensemble_weights", []))[: cut + 1], "pruned_cut": cut}
    return ExitRecord(
        rec.logits[: cut + 1],
        rec.labels,
        rec.cum_macs[: cut + 1],
        int(full_macs),
        None if rec.confidences is None else rec.confidences[: cut + 1],
        info,
    )


@dataclass
class PruneReport:
    """Costs and accuracy before (network without exits; unpruned with exits) and after pruning."""

    cut: int
    kept_exit_blocks: list[int]
    val_ensemble_accuracy: list[float]  # ensemble of exits 0..k on validation, per k
    params_full: int  # network without exits
    params_with_exits: int
    params_pruned: int
    macs_full: int
    macs_with_exits: int  # all exits computed (the unpruned AEP ensemble)
    macs_pruned: int  # kept exits computed (the pruned AEP ensemble)
    test_acc_final_exit: float | None = None
    test_acc_full_ensemble: float | None = None
    test_acc_pruned: float | None = None
    latency_ms: dict[str, float] | None = None  # '<model>@<batch>' -> median ms

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view."""
        return asdict(self)

    def format(self) -> str:
        """The savings table as text."""

        def pct(a: float, b: float) -> str:
            return f"{100 * (a / b - 1):+.1f}%"

        lines = [
            f"cut at exit {self.cut} (kept exits after blocks {self.kept_exit_blocks}); "
            "validation ensemble accuracy per cut: " + " ".join(f"{100 * a:.2f}" for a in self.val_ensemble_accuracy),
            "",
            f"{'':22}{'no exits':>12}{'all exits':>12}{'pruned':>12}{'vs no exits':>13}",
            f"{'parameters':22}{self.params_full:>12,}{self.params_with_exits:>12,}{self.params_pruned:>12,}"
            f"{pct(self.params_pruned, self.params_full):>13}",
            f"{'MACs':22}{self.macs_full:>12,}{self.macs_with_exits:>12,}{self.macs_pruned:>12,}"
            f"{pct(self.macs_pruned, self.macs_full):>13}",
        ]
        if self.latency_ms:
            for b in sorted({int(k.split("@")[1]) for k in self.latency_ms}):
                f, a, p = (self.latency_ms[f"{m}@{b}"] for m in ("full", "with_exits", "pruned"))
                lines.append(f"{f'latency batch {b} (ms)':22}{f:>12.3f}{a:>12.3f}{p:>12.3f}{pct(p, f):>13}")
        if self.test_acc_pruned is not None:
            gain = self.test_acc_pruned - self.test_acc_final_exit
            lines.append(
                f"{'test accuracy (%)':22}{100 * self.test_acc_final_exit:>12.2f}"
                f"{100 * self.test_acc_full_ensemble:>12.2f}{100 * self.test_acc_pruned:>12.2f}"
                f"{100 * gain:>+12.2f}p"
            )
        lines.append("(no exits: final exit only; all exits / pruned: the AEP ensemble of the exits computed)")
        return "\n".join(lines)


@torch.inference_mode()
def measure_prune_latency(
    model: EarlyExitNet,
    pruned: EarlyExitNet,
    input_shape: tuple[int, int, int],
    batch_sizes: tuple[int, ...] = (1, 256),
    repeats: int = 20,
) -> dict[str, float]:
    """Fastest latency in ms of the network without exits, the unpruned model with all exits, and the
    pruned model, at each batch size; the three are timed in turn, so background load hits them alike.
    All three run as deployed: copies prepared for inference (BatchNorm folded, channels-last)."""
    out: dict[str, float] = {}
    model, pruned = prepare_for_inference(model), prepare_for_inference(pruned)
    for b in batch_sizes:
        x = as_model_input(torch.randn(b, *input_shape))
        fns = {
            "full": lambda x=x: model.forward_final(x),
            "with_exits": lambda x=x: model(x),
            "pruned": lambda x=x: pruned(x),
        }
        for fn in fns.values():  # warm-up
            fn()
        best = {name: float("inf") for name in fns}
        for _ in range(max(3, repeats if b <= 16 else repeats // 4)):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        out.update({f"{name}@{b}": 1e3 * t for name, t in best.items()})
    return out


def prune_report(
    model: EarlyExitNet,
    meta: CheckpointMeta,
    pruned: EarlyExitNet,
    pruned_meta: CheckpointMeta,
    val: ExitRecord,
    test: ExitRecord | None,
    latency_repeats: int = 0,
) -> PruneReport:
    """Savings of a pruned model against its source (latency measured only if `latency_repeats` > 0)."""
    if pruned_meta.pruning is None:
        raise ConfigError("The pruned model's metadata does not say where it was cut.")
    cut = pruned_meta.pruning.cut
    w = resolve_ensemble_weights(None, ModelExits.of_model(model, meta.ensemble_weights))  # trained, else uniform
    c, pc = meta.cost, pruned_meta.cost
    rep = PruneReport(
        cut,
        list(pruned.exit_blocks),
        val.ensemble_accuracy(w).tolist(),
        c.full_params,
        c.with_exits_params,
        pc.with_exits_params,
        c.full_macs,
        c.exits[-1].cum_macs,
        pc.exits[-1].cum_macs,
    )
    if test is not None:
        ens = test.ensemble_accuracy(w)
        rep.test_acc_final_exit = float(test.exit_accuracy()[-1])
        rep.test_acc_full_ensemble, rep.test_acc_pruned = float(ens[-1]), float(ens[cut])
    if latency_repeats > 0:
        rep.latency_ms = measure_prune_latency(model, pruned, meta.dataset.input_shape, repeats=latency_repeats)
    return rep


def prune_checkpoint(
    path: str | Path, out: str | Path, tolerance: float = 0.0, cut: int | None = None, latency_repeats: int = 0
) -> tuple[Path, PruneReport]:
    """Prune a checkpoint at the cut chosen on its validation evaluation file (or at `cut`); write the
    pruned checkpoint and its val/test evaluation files next to `out`; return the path and the report."""
    model, meta = load_checkpoint(path)
    if model.head_kind != "aep":
        raise ConfigError(
            "AEP pruning needs an AEP model (exits predicting as a weighted ensemble); this one has "
            f"'{model.head_kind}' heads."
        )
    records: dict[str, ExitRecord] = {}
    for split in ("val", "test"):
        p = evaluation_path(path, split)
        if not p.is_file():
            from aep_core.training.job import evaluate_checkpoint

            evaluate_checkpoint(path, split)
        records[split] = load_evaluation(p)
        if records[split].num_exits != model.num_exits:
            raise ConfigError(
                f"{p} has {records[split].num_exits} exits; the checkpoint has {model.num_exits}. "
                f"Re-create it with `python -m aep_core evaluate {path}`."
            )
    k = choose_cut(records["val"], meta.ensemble_weights, tolerance) if cut is None else cut
    pruned, pmeta = prune_model(model, meta, k, Path(path).name, tolerance)
    out = Path(out)
    save_checkpoint(out, pruned, pmeta)
    for split, rec in records.items():
        save_evaluation(evaluation_path(out, split), prune_record(rec, k, pmeta.cost.full_macs))
    return out, prune_report(model, meta, pruned, pmeta, records["val"], records["test"], latency_repeats)
