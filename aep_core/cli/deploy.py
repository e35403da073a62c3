"""Command-line sub-commands for deployment across tiers: deploy (simulate a split over device, edge and
cloud from a checkpoint's evaluation file, or from a per-exit outputs file written by any framework; optionally
search split points and thresholds under a latency deadline) and export (ONNX per segment, checked with
onnxruntime; TorchScript of the whole or pruned model)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from aep_core.cli.common import (
    SPLITS,
    add_command,
    add_rule_arguments,
    check_outputs,
    checkpoint_file,
    non_negative_int,
    parse_rule_settings,
    positive_float,
    positive_int,
    with_default_setting,
)
from aep_core.errors import ConfigError
from aep_core.threads import set_default_threads


def _numbers(text: str | None, what: str, allow_empty: bool = False) -> list[float | None] | None:
    """Comma-separated numbers ('' items are None when allowed); None when not given."""
    if text is None:
        return None
    if text.strip() == "":
        return []
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "" and allow_empty:
            out.append(None)
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise ConfigError(f"{what} must be comma-separated numbers, got '{text}'.") from None
    return out


def _splits(text: str | None) -> list[int] | None:
    if text is None:
        return None
    vals = _numbers(text, "--splits") or []
    if any(v is None or not float(v).is_integer() for v in vals):
        raise ConfigError(f"--splits must be comma-separated exit indices, got '{text}'.")
    return [int(v) for v in vals]


def _load(a: argparse.Namespace):
    """Model, metadata, input shape and the evaluation record of the chosen split."""
    from aep_core.checkpoint import load_checkpoint
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.evaluation import load_evaluation

    model, meta = load_checkpoint(checkpoint_file(a.checkpoint))
    shape = meta.dataset.input_shape
    rec = load_evaluation(evaluation_path(a.checkpoint, a.split)) if hasattr(a, "split") else None
    if rec is not None and rec.num_exits != model.num_exits:
        raise ConfigError(
            f"The {a.split} evaluation file has {rec.num_exits} exits; the checkpoint has "
            f"{model.num_exits}. Re-create it with `python -m aep_core evaluate {a.checkpoint}`."
        )
    return model, meta, shape, rec


def _speed_items(a: argparse.Namespace, unit: str, has_model: bool) -> list[str]:
    """Each tier's speed as given: GMAC/s or 'local' (costs in MACs), or a multiple of the measuring machine's
    speed (--speedups, for costs in milliseconds)."""
    from aep_core.deploy.simulator import DEFAULT_GMACS, MAX_TIERS

    if unit == "ms":
        if a.speeds_gmacs is not None:
            raise ConfigError(
                "This outputs file gives each exit's cost in milliseconds, not MACs: give each tier's speed as a "
                "multiple of the machine that measured them with --speedups (e.g. 1,4,20), not --speeds-gmacs."
            )
        if a.speedups is not None:
            return [s.strip() for s in a.speedups.split(",")]
        if a.tiers == 1:
            return ["1"]
        raise ConfigError(
            f"This outputs file gives each exit's cost in milliseconds: give the speed of each of the {a.tiers} tiers "
            "as a multiple of the machine that measured them with --speedups (e.g. 1,4,20 for three tiers), or "
            "simulate that machine alone with --tiers 1."
        )
    if a.speedups is not None:
        raise ConfigError("--speedups is for outputs files whose costs are milliseconds; give --speeds-gmacs.")
    if a.speeds_gmacs is not None:
        items = [s.strip() for s in a.speeds_gmacs.split(",")]
    else:
        if not 1 <= a.tiers <= MAX_TIERS:
            raise ConfigError(f"--tiers must be 1 to {MAX_TIERS}, got {a.tiers}.")
        items = ["local", *[f"{g:g}" for g in DEFAULT_GMACS[a.tiers]]]
    if "local" in items and not has_model:
        raise ConfigError(
            "An outputs file comes without a model to time on this machine ('local'): give every tier's speed "
            f"in GMAC/s with --speeds-gmacs, e.g. {','.join(['5', *[f'{g:g}' for g in DEFAULT_GMACS[3]]])}."
        )
    return items


def _deployment(a: argparse.Namespace, model, shape, num_exits: int, unit: str = "macs"):
    """The deployment the options describe, and the measured local speed (None if not measured). `model` is
    None for a per-exit outputs file; `unit` is the unit of the exits' costs."""
    from aep_core.deploy.simulator import (
        DEFAULT_LINKS,
        MAX_TIERS,
        MS_WORK_PER_S,
        default_splits,
        make_deployment,
        measure_macs_per_second,
    )

    items = _speed_items(a, unit, model is not None)
    k = len(items)
    if not 1 <= k <= MAX_TIERS:
        flag = "--speedups" if unit == "ms" else "--speeds-gmacs"
        raise ConfigError(f"A deployment has 1 to {MAX_TIERS} tiers; {flag} gave {k}.")
    local = None
    speeds = []
    for s in items:
        if unit == "ms":
            v = (_numbers(s, "--speedups (multiples of the measuring machine's speed)") or [None])[0]
            speeds.append(float(v) * MS_WORK_PER_S)
        elif s == "local":
            if local is None:
                local = measure_macs_per_second(model, shape, repeats=a.repeats, threads=a.threads or 1)
            speeds.append(local)
        else:
            v = (_numbers(s, "--speeds-gmacs (GMAC/s or 'local')") or [None])[0]
            speeds.append(float(v) * 1e9)
    links = DEFAULT_LINKS.get(k, [])
    bw = _numbers(a.bandwidth_mbps, "--bandwidth-mbps")
    lat = _numbers(a.link_ms, "--link-ms")
    bw = bw if bw is not None else [b for b, _ in links]
    lat = lat if lat is not None else [m for _, m in links]
    splits = _splits(a.splits)
    splits = splits if splits is not None else default_splits(num_exits, k)
    power = _numbers(a.power_w, "--power-w", allow_empty=True)
    dep = make_deployment(speeds, bw, lat, splits, a.precision, power)
    radio = _numbers(a.radio_w, "--radio-w", allow_empty=True)
    if radio is not None:
        if len(radio) != k - 1:
            raise ConfigError(f"--radio-w needs one value per link ({k - 1}); got {len(radio)}.")
        from dataclasses import replace

        dep = replace(dep, links=tuple(replace(link, power_w=r) for link, r in zip(dep.links, radio, strict=True)))
    return dep, local


def _ms(s: float) -> str:
    return f"{1e3 * s:.3f}"


def format_result(r: Any, local: float | None = None, local_threads: int = 1, unit: str = "macs") -> str:
    """A simulated deployment as text: per-tier and per-link tables, then accuracy, latency and traffic. With
    `unit` "ms" (costs measured in milliseconds) each tier's speed is shown as a multiple of the measuring
    machine's."""
    from aep_core.deploy.simulator import MS_WORK_PER_S

    dep = r.deployment
    e = len(r.timings.tier)
    b = r.breakdown()
    share, acc = r.tier_share, r.tier_accuracy
    speed_head, speed_scale = ("speed x", MS_WORK_PER_S) if unit == "ms" else ("GMAC/s", 1e9)
    lines = [
        f"{'tier':<8}{speed_head:>10}{'exits':>10}{'answered':>10}{'accuracy':>10}{'compute ms':>12}{'power W':>9}"
    ]
    for t, (tier, exits) in enumerate(zip(dep.tiers, dep.tier_exits(e), strict=True)):
        ex = "-" if len(exits) == 0 else (f"{exits[0]}" if len(exits) == 1 else f"{exits[0]}-{exits[-1]}")
        name = tier.name + ("*" if local is not None and tier.macs_per_s == local else "")
        a = "-" if math.isnan(acc[t]) else f"{100 * acc[t]:.2f}%"
        pw = "-" if tier.power_w is None else f"{tier.power_w:g}"
        lines.append(
            f"{name:<8}{tier.macs_per_s / speed_scale:>10.3g}{ex:>10}{100 * share[t]:>9.1f}%{a:>10}"
            f"{_ms(b['compute'][t]):>12}{pw:>9}"
        )
    if dep.links:
        lines += ["", f"{'link':<16}{'Mbit/s':>8}{'lat ms':>8}{'crossed by':>12}{'transfer ms':>13}{'latency ms':>12}"]
        crossed = [(r.tier > t).mean() for t in range(len(dep.links))]
        for t, link in enumerate(dep.links):
            name = f"{dep.tiers[t].name}->{dep.tiers[t + 1].name}"
            lines.append(
                f"{name:<16}{link.bandwidth_mbps:>8g}{link.latency_ms:>8g}{100 * crossed[t]:>11.1f}%"
                f"{_ms(b['transfer'][t]):>13}{_ms(b['link_latency'][t]):>12}"
            )
    st = r.latency_stats()
    lines += [
        "",
        f"accuracy {100 * r.accuracy:.2f}%   latency ms: mean {_ms(st['mean'])}  p50 {_ms(st['p50'])}  "
        f"p95 {_ms(st['p95'])}  p99 {_ms(st['p99'])}",
        f"sent per sample: {r.bytes_sent.mean():,.0f} bytes on average ({dep.precision} features)"
        + ("" if r.energy_j is None else f"   energy {1e3 * r.energy_j.mean():.3f} mJ per sample"),
    ]
    if unit == "ms":
        lines.append("(speed x: times the speed of the machine that measured the outputs file's milliseconds)")
    if local is not None:
        threads = f"{local_threads} thread{'s' if local_threads > 1 else ''}"
        lines.append(f"* measured on this machine: {local / 1e9:.3g} GMAC/s (batch 1, {threads})")
    lines.append(
        "(compute and transfer: mean per sample over all samples; tiers after the last exit are never reached)"
    )
    return "\n".join(lines)


def _cmd_deploy(a: argparse.Namespace) -> int:
    """simulate an early-exit model split over device, edge and cloud; optionally search splits and thresholds under a
    latency deadline"""

    from aep_core.checkpoint.outputs_import import cost_unit, is_outputs_file
    from aep_core.deploy.simulator import decision_grid, feature_sizes, search, simulate

    if a.threads is not None:
        set_default_threads(a.threads)
    if is_outputs_file(a.checkpoint):
        model, rec = None, _outputs_record(a)
        unit = cost_unit(rec)
        dep, local = _deployment(a, None, None, rec.num_exits, unit)
        sizes = _outputs_feature_sizes(rec, dep)
    else:
        model, _, shape, rec = _load(a)
        unit = "macs"
        sizes = feature_sizes(model, shape)
        dep, local = _deployment(a, model, shape, rec.num_exits)
    settings = with_default_setting(a.rule, parse_rule_settings(a))
    r = simulate(rec, sizes, dep, a.rule, **settings)
    out: dict[str, Any] = {"simulation": r.summary(), "local_macs_per_s": local, "feature_sizes": sizes.to_dict()}
    if model is None:
        out["cost_unit"] = unit
    if not a.json:
        print(
            f"{Path(a.checkpoint).name} on {rec.num_samples} {a.split} samples, {r.replay.rule} {r.replay.settings}, "
            f"splits {list(dep.splits)}"
        )
        print(format_result(r, local, a.threads or 1, unit))
    if a.deadline_ms is not None:
        grid = decision_grid(rec, a.rule, points=a.points, weights=settings.get("weights"))
        res = search(grid, rec.cum_macs, sizes, dep, a.deadline_ms / 1e3, a.stat)
        best = res.point(res.best)
        out["search"] = {"best": best, "front": res.front(), "points": len(res.accuracy)}
        if not a.json:
            shown = {k: v for k, v in best["settings"].items() if k != "weights"}
            print(
                f"\nsearch: {len(res.accuracy)} configurations ({len(set(res.splits))} split assignments x "
                f"{len(grid.settings)} settings of {a.rule}), {a.stat} latency <= {a.deadline_ms:g} ms"
            )
            print(
                f"best: splits {best['splits']} {shown}: accuracy {100 * best['accuracy']:.2f}%, "
                f"{a.stat} {_ms(best[f'{a.stat}_latency_s'])} ms, mean {_ms(best['mean_latency_s'])} ms"
            )
            print(f"Pareto front (accuracy vs {a.stat} latency):")
            print(f"{'splits':>12}{'setting':>12}{'accuracy %':>12}{a.stat + ' ms':>12}{'mean ms':>12}")
            for p in res.front():
                val = next((f"{v:.4g}" for k, v in p["settings"].items() if k != "weights"), "-")
                print(
                    f"{p['splits']!s:>12}{val:>12}{100 * p['accuracy']:>12.2f}{_ms(p[f'{a.stat}_latency_s']):>12}"
                    f"{_ms(p['mean_latency_s']):>12}"
                )
    if a.json:
        print(json.dumps(out, indent=1, default=float))
    return 0


def _outputs_record(a: argparse.Namespace):
    """The record of the chosen split of a per-exit outputs file."""
    from aep_core.checkpoint.outputs_import import read_outputs, split_record

    return split_record(read_outputs(a.checkpoint), a.split, Path(a.checkpoint).name)


def _outputs_feature_sizes(rec, dep):
    """The feature sizes a per-exit outputs file gives (`feature_sizes`, `input_size`), as one value per
    position; ConfigError saying how to add them when a deployment over several tiers needs them. One tier sends
    nothing, so it needs none."""
    from aep_core.deploy.simulator import FeatureSizes

    sizes, inputs = rec.info.get("feature_sizes"), rec.info.get("input_size")
    if sizes is not None and inputs is not None:
        return FeatureSizes((int(inputs),), tuple((int(v),) for v in sizes))
    if dep.num_tiers == 1:
        return FeatureSizes((0,), tuple((0,) for _ in range(rec.num_exits)))
    missing = " and ".join(k for k, v in (("feature_sizes", sizes), ("input_size", inputs)) if v is None)
    raise ConfigError(
        f"{rec.info.get('outputs_file', 'The outputs file')} has no {missing}: a split over {dep.num_tiers} tiers "
        "sends a feature map (or the input) over each link, and its size is not known. Add feature_sizes (one "
        "per exit: the values per sample in the output of the module the exit reads, e.g. out[0].numel() in a "
        "forward hook) and input_size (the values in one input) to the file, or simulate one tier with --tiers 1."
    )


def _cmd_export(a: argparse.Namespace) -> int:
    """export each tier's segment to ONNX and check it with onnxruntime; optionally TorchScript of the (pruned) model"""

    from aep_core.deploy.export import export_onnx, export_torchscript, verify_onnx, write_manifest
    from aep_core.outputs import check_folder

    checkpoint_file(a.checkpoint)  # a missing checkpoint is named before an output folder is created
    out = check_folder(a.out)
    if a.threads is not None:
        set_default_threads(a.threads)
    model, meta, shape, _ = _load(a)
    splits = _splits(a.splits) or []
    ts_path = out / f"{Path(a.checkpoint).stem}{'.pruned' if a.prune else ''}.torchscript.pt"
    segments = [out / f"segment_{i}.onnx" for i in range(len(splits) + 1)]
    check_outputs(*segments, out / "manifest.json", *([ts_path] if a.torchscript or a.prune else []))
    paths = export_onnx(model, splits, out, shape)
    check = verify_onnx(model, splits, paths, shape, batch=a.batch)
    manifest = write_manifest(out, model, splits, paths, shape, check, Path(a.checkpoint).name)
    print(f"wrote {len(paths)} ONNX segments for splits {splits} and {manifest.name} to {out}")
    print(check.format())
    if a.torchscript or a.prune:
        ts_model, weights, what = model, meta.ensemble_weights, "model"
        if a.prune:
            from aep_core.analysis.pruning import choose_cut, prune_model
            from aep_core.checkpoint.sidecars import evaluation_path
            from aep_core.evaluation import load_evaluation

            if model.head_kind != "aep":
                raise ConfigError(
                    "--prune needs an AEP model (exits predicting as a weighted ensemble); this one has "
                    f"'{model.head_kind}' heads."
                )
            if a.cut is not None:
                cut = a.cut
            else:
                cut = choose_cut(load_evaluation(evaluation_path(a.checkpoint, "val")), weights)
            ts_model, pmeta = prune_model(model, meta, cut)
            weights, what = pmeta.ensemble_weights, f"model pruned after exit {cut}"
        if model.head_kind != "aep":
            weights = None
        diff = export_torchscript(ts_model, ts_path, shape, weights)
        print(
            f"wrote TorchScript of the {what} to {ts_path} (outputs: per-exit logits"
            f"{', confidences' if model.has_confidence else ''}{', ensemble probabilities' if weights else ''}; "
            f"max |loaded - torch| {diff:.2e})"
        )
    if not check.ok:
        print("error: an exported segment does not reproduce the PyTorch model within tolerance")
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `deploy` and `export` on `sub`."""
    from aep_core.deploy.simulator import PRECISION_BYTES, STATS

    d = add_command(sub, "deploy", _cmd_deploy)
    d.add_argument(
        "checkpoint",
        help="checkpoint (.pt; its <name>.<split>.npz evaluation file is replayed) or per-exit outputs file "
        "(.npz, .csv or .parquet; its samples of --split)",
    )
    d.add_argument("--split", default="test", choices=SPLITS, help="evaluation split")
    d.add_argument(
        "--tiers",
        type=positive_int,
        default=3,
        help="number of tiers (1-4: device, edge, fog, cloud) when --speeds-gmacs is not given",
    )
    d.add_argument(
        "--splits",
        default=None,
        help="last exit on each tier but the last, e.g. 1,3 (-1: the first tier "
        "sends the input; default: exits spread evenly)",
    )
    d.add_argument(
        "--speeds-gmacs",
        default=None,
        help="speed of each tier in GMAC/s, 'local' to measure this machine, "
        "e.g. local,100,1000 (default: local, then the --tiers defaults)",
    )
    d.add_argument(
        "--speedups",
        default=None,
        help="with an outputs file whose costs are milliseconds: the speed of each tier as a multiple of the "
        "machine that measured them, e.g. 1,4,20 (default with --tiers 1: 1)",
    )
    d.add_argument("--bandwidth-mbps", default=None, help="bandwidth of each link in Mbit/s (default by tier count)")
    d.add_argument("--link-ms", default=None, help="one-way latency of each link in ms (default by tier count)")
    d.add_argument("--power-w", default=None, help="compute power of each tier in W; leave an item empty if unknown")
    d.add_argument("--radio-w", default=None, help="sender's radio power on each link in W while transmitting")
    d.add_argument("--precision", default="fp32", choices=list(PRECISION_BYTES), help="features sent at this precision")
    add_rule_arguments(d, evaluation=False, json=False)
    d.add_argument(
        "--deadline-ms",
        type=positive_float,
        default=None,
        help="search split points and a global setting of the rule for the best accuracy within this latency",
    )
    d.add_argument("--stat", default="mean", choices=list(STATS), help="latency statistic the deadline bounds")
    d.add_argument(
        "--points", type=positive_int, default=64, help="score quantiles added to the 0.01-step threshold grid"
    )
    d.add_argument("--repeats", type=positive_int, default=10, help="timing repeats when measuring the local speed")
    d.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads the local speed is measured on (default 1)"
    )
    d.add_argument("--json", action="store_true", help="print JSON")
    x = add_command(sub, "export", _cmd_export)
    x.add_argument("checkpoint")
    x.add_argument("--splits", default="", help="last exit of each segment but the last, e.g. 1,3 (empty: one segment)")
    x.add_argument("--out", required=True, help="output folder (segment_<i>.onnx, manifest.json)")
    x.add_argument("--batch", type=positive_int, default=8, help="random inputs for the check")
    x.add_argument("--torchscript", action="store_true", help="also write <name>.torchscript.pt of the whole model")
    x.add_argument(
        "--prune", action="store_true", help="TorchScript of the model AEP-pruned at its best validation cut"
    )
    x.add_argument(
        "--cut", type=non_negative_int, default=None, help="with --prune: cut after this exit instead of choosing"
    )
    x.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
