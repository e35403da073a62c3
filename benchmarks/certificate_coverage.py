"""Benchmark: do promised drops hold on data the choice never saw? Each model's validation and test files are
pooled (15,000 samples) and re-split at random many times: 5,000 samples choose the thresholds, the other
10,000 judge them. Three ways to choose, all promising a drop of at most 0.5 points against the final exit:
  - uncertified: the cheapest per-exit thresholds whose drop on the 5,000 is within 0.5 points (`solve`);
  - global: the certified global threshold (90% confidence, `certify(..., family="global")`);
  - per_exit: the certified per-exit thresholds (90% confidence, the default).
Per model, rule and way, it prints how often the promise breaks on the held-out samples (a certificate may
break it in at most 10% of draws), the mean held-out drop and MACs ratio, and, for the certificates, how
often the held-out MACs ratio exceeds the certified bound and the mean bound.

    python -m benchmarks.certificate_coverage [--splits 100] [--models aep_hybrid,aep_uniform] [--rules entropy]
                                              [--methods global,per_exit] [--reference final]

(About 7 minutes with the defaults on one thread, most of it in the uncertified solver.)
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import numpy as np

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import REFERENCES, ScoredRecord, certify_scored
from aep_core.exits.rules import ModelExits, list_rules
from aep_core.exits.solvers import MinAccuracy, solve
from aep_core.paths import shipped_models_dir

from ._common import setup

METHODS = ("uncertified", "global", "per_exit")
DEFAULT_MODELS = (DEFAULT_MODEL, "aep_hybrid", "aep_uniform", "aep_linear", "eenet_l05", "eenet_l2")


@dataclass
class Coverage:
    """How one way of choosing thresholds fared over random re-splits of a model's samples."""

    method: str
    splits: int = 0
    refused: int = 0  # splits where no setting met the goal (a refusal breaks no promise)
    drop_breaks: int = 0  # held-out drop above the promised one
    cost_breaks: int = 0  # held-out MACs ratio above the certified bound (certificates only)
    drops: list[float] = field(default_factory=list)  # held-out drop in points, per split that chose
    macs: list[float] = field(default_factory=list)  # held-out MACs ratio, per split that chose
    bounds: list[float] = field(default_factory=list)  # certified MACs bound, per split that chose

    @property
    def drop_break_rate(self) -> float:
        """Share of all splits whose held-out drop broke the promise."""
        return self.drop_breaks / self.splits

    @property
    def cost_break_rate(self) -> float:
        """Share of all splits whose held-out MACs ratio exceeded the certified bound."""
        return self.cost_breaks / self.splits


def allowed_break_rate(splits: int, level: float = 0.1) -> float:
    """The break rate a certificate at 1 - `level` confidence may show over `splits` draws: `level` plus two
    standard errors."""
    return level + 2 * math.sqrt(level * (1 - level) / splits)


def pooled(val: ExitRecord, test: ExitRecord) -> ExitRecord:
    """One record holding the samples of both."""
    confidences = None
    if val.confidences is not None and test.confidences is not None:
        confidences = np.concatenate([val.confidences, test.confidences], 1)
    return ExitRecord(
        np.concatenate([val.logits, test.logits], 1),
        np.concatenate([val.labels, test.labels]),
        val.cum_macs,
        val.full_macs,
        confidences,
        val.info,
    )


def subset_record(rec: ExitRecord, idx: np.ndarray) -> ExitRecord:
    """The record of the samples `idx` only."""
    confidences = None if rec.confidences is None else rec.confidences[:, idx]
    return ExitRecord(rec.logits[:, idx], rec.labels[idx], rec.cum_macs, rec.full_macs, confidences, rec.info)


def load_pooled(model: str) -> ExitRecord:
    """The shipped validation and test files of `model`, pooled."""
    return pooled(*(load_evaluation(shipped_models_dir() / f"{model}.{split}.npz") for split in ("val", "test")))


def resplit_coverage(
    rec: ExitRecord,
    name: str,
    *,
    methods: tuple[str, ...] = ("global", "per_exit"),
    splits: int = 100,
    calibration: int = 5000,
    max_drop_points: float = 0.5,
    confidence: float = 0.9,
    reference: str = "final",
    seed: int = 0,
) -> dict[str, Coverage]:
    """For each of `splits` random splits of `rec` into `calibration` samples that choose the thresholds of rule
    `name` and the rest that judge them, whether each way of choosing (`METHODS`) broke its promised drop against
    `reference`, and its certified MACs bound, on the held-out samples. Every method sees the same splits."""
    if not 0 < calibration < rec.num_samples:
        raise ConfigError(f"calibration must be between 1 and {rec.num_samples - 1} samples, got {calibration}.")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"Unknown methods {sorted(unknown)}: choose from {', '.join(METHODS)}.")
    scored = ScoredRecord.of(rec, name, reference)
    rng = np.random.default_rng(seed)
    out = {m: Coverage(m) for m in methods}
    for _ in range(splits):
        perm = rng.permutation(rec.num_samples)
        cal, held = perm[:calibration], perm[calibration:]
        cal_scored, held_scored = scored.subset(cal), scored.subset(held)
        for method, cov in out.items():
            cov.splits += 1
            try:
                if method == "uncertified":
                    floor = float(cal_scored.reference_right.mean()) - max_drop_points / 100.0
                    thresholds = solve(subset_record(rec, cal), name, MinAccuracy(floor)).settings["thresholds"]
                    bound = math.nan
                else:
                    choice = certify_scored(
                        cal_scored, max_drop_points=max_drop_points, confidence=confidence, family=method
                    )
                    thresholds, bound = choice.thresholds, choice.macs_bound
            except ConfigError:
                cov.refused += 1
                continue
            drop, macs = held_scored.outcome(thresholds)
            cov.drops.append(drop)
            cov.macs.append(macs)
            cov.bounds.append(bound)
            cov.drop_breaks += drop > max_drop_points
            cov.cost_breaks += macs > bound  # never for nan
    return out


COVERAGE_BEGIN, COVERAGE_END = "<!-- coverage:begin -->", "<!-- coverage:end -->"


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, default=100, help="random re-splits per model and rule")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated shipped models")
    ap.add_argument("--rules", default="", help="comma-separated threshold rules (default: every one the model has)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--max-drop", type=float, default=0.5, help="promised drop against the reference, in points")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument(
        "--reference",
        default="final",
        choices=REFERENCES,
        help="what the drop is measured against: the final exit, or the rule's own full-depth prediction",
    )
    ap.add_argument("--write", action="store_true", help="also write the table into docs/RESULTS.md")
    a = ap.parse_args()
    if a.splits < 1:
        raise SystemExit("--splits must be at least 1.")
    machine = setup(1)
    print(machine)
    methods = tuple(a.methods.split(","))
    rows_md: list[str] = []
    allowed = allowed_break_rate(a.splits, 1 - a.confidence)
    print(
        f"{a.splits} random splits per model: 5,000 samples choose, the other pooled samples judge; promise: drop "
        f"<= {a.max_drop:g} points against the {a.reference} reference; a {100 * a.confidence:g}% certificate may "
        f"break it in <= {100 * allowed:.1f}% of splits (its level plus two standard errors)"
    )
    header = (
        f"\n{'model':12} {'rule':17} {'method':12} {'refused':>7} {'drop breaks':>11} {'mean drop':>9} "
        f"{'mean MACs':>9} {'MACs breaks':>11} {'mean bound':>10}"
    )
    print("(drops in points, MACs as a fraction of the network without exits; means over the splits that chose)")
    print(header)
    saving = []
    t0 = time.perf_counter()
    for model in a.models.split(","):
        try:
            rec = load_pooled(model)
        except Exception as e:  # a model not shipped here
            print(f"{model}: skipped ({e})")
            continue
        rules = a.rules.split(",") if a.rules else list_rules(thresholds=True, model=ModelExits.of_record(rec))
        for name in rules:
            try:
                result = resplit_coverage(
                    rec,
                    name,
                    methods=methods,
                    splits=a.splits,
                    max_drop_points=a.max_drop,
                    confidence=a.confidence,
                    reference=a.reference,
                )
            except ConfigError as e:
                print(f"{model:12} {name:17} skipped: {e}")
                continue
            for cov in result.values():
                certified = cov.method != "uncertified"
                rows_md.append(
                    f"| {model} | {name} | {cov.method.replace('uncertified', 'optimistic (no guarantee)')} | "
                    f"{cov.refused} | {100 * cov.drop_break_rate:.1f}% | {_mean(cov.drops)} | {_mean(cov.macs)} | "
                    + (f"{100 * cov.cost_break_rate:.1f}% | {_mean(cov.bounds)} |" if certified else "– | – |")
                )
                print(
                    f"{model:12} {name:17} {cov.method:12} {cov.refused:7d} {100 * cov.drop_break_rate:10.1f}% "
                    f"{_mean(cov.drops):>9} {_mean(cov.macs):>9} "
                    f"{f'{100 * cov.cost_break_rate:.1f}%' if certified else '-':>11} "
                    f"{_mean(cov.bounds) if certified else '-':>10}"
                )
            both = [result.get(m) for m in ("global", "per_exit")]
            if all(c is not None and c.macs for c in both):
                saving.append(np.mean(both[0].macs) - np.mean(both[1].macs))
    if saving:
        print(
            f"\nper_exit against global, same guarantee: mean held-out MACs ratio lower by {np.mean(saving):.3f} "
            f"on average over {len(saving)} model/rule pairs (lower in {sum(s > 0 for s in saving)} of them)"
        )
    print(f"({time.perf_counter() - t0:.0f} s; refusals count as kept promises in the break rates)")
    if a.write:
        write_block(a, machine, allowed, rows_md, saving)


def write_block(a: argparse.Namespace, machine: str, allowed: float, rows: list[str], saving: list[float]) -> None:
    """The coverage table as the `coverage` block of docs/RESULTS.md."""
    from benchmarks.results_table import DOCS, replace_block

    body = "\n".join(
        [
            f"{a.splits} random re-splits of each model's pooled validation and test outputs: 5,000 samples choose, "
            f"the others judge whether the promise (drop <= {a.max_drop:g} points against the {a.reference} "
            f"reference) held. A {100 * a.confidence:g}% certificate may break it in at most "
            f"{100 * allowed:.1f}% of the splits (its level plus two standard errors).",
            "",
            "| model | rule | choice | refused | drop breaks | mean drop (pt) | mean MACs | MACs breaks "
            "| mean MACs bound |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            (
                f"Per-exit against global thresholds at the same guarantee: the held-out MACs ratio is lower by "
                f"{np.mean(saving):.3f} on average over {len(saving)} model/rule pairs (lower in "
                f"{sum(v > 0 for v in saving)})."
                if saving
                else ""
            ),
            "",
            f"_Printed by `python -m benchmarks.certificate_coverage --splits {a.splits} --write` ({machine})._",
        ]
    )
    md = DOCS / "RESULTS.md"
    md.write_text(replace_block(md.read_text(), COVERAGE_BEGIN, COVERAGE_END, body))
    print(f"wrote the coverage table into {md}")


if __name__ == "__main__":
    main()
