"""Deploy: the model split over device, edge and cloud. Sliders for tier speeds, bandwidth and link
latency, a picker for the split points, compute timed from MACs or from per-segment latencies measured on an
engine; the latency breakdown, the share answered at each tier, and accuracy against latency, all replayed from
the saved per-exit outputs under the sidebar's exit rule. A per-exit outputs file (no network) is simulated from
its own costs, in MACs or in milliseconds, and the feature sizes it gives."""

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from aep_core.deploy.export import export_archive
from aep_core.deploy.simulator import (
    DEFAULT_GMACS,
    DEFAULT_LINKS,
    MAX_TIERS,
    MS_WORK_PER_S,
    TIER_NAMES,
    Deployment,
    FeatureSizes,
    SegmentTimes,
    decision_grid,
    default_splits,
    feature_sizes,
    make_deployment,
    measure_macs_per_second,
    measure_segment_latencies,
    search,
    simulate,
)
from aep_core.errors import AepError
from aep_core.exits.rules import get_rule
from aep_core.exits.runtime import get_engine, list_engines
from explorer import glossary, models
from explorer.charts import deploy as deploy_charts
from explorer.entry import run_inside_app
from explorer.state import setting_key, settings
from explorer.widgets import noted_metric

GMACS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
MBPS = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 10000.0]
SPEEDUPS = [0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0]  # x the machine that measured the ms
DEFAULT_SPEEDUPS = {1: [], 2: [20.0], 3: [4.0, 20.0], 4: [2.0, 5.0, 20.0]}  # tiers after the device, in ms files
DEVICE_GMACS = 5.0  # the device's default speed when there is no network to time on this machine
FROM_MACS = "macs"  # the compute-time choice that divides MACs by the tier's speed; the others are engines
SEGMENT_ROUNDS = 50

run_inside_app()
st.title("Deploy across tiers")
st.markdown(
    "The network split over a **device**, an **edge** box and the **cloud**: a sample leaves at the first "
    "confident exit, and only the hard ones send their features up the link. Every number below is replayed "
    "from the saved per-exit outputs under the sidebar's exit rule; no network runs when a slider moves."
)
loaded, record = models.model_and_record()
state = st.session_state
current = settings()
num_exits = record.num_exits


@st.cache_resource(show_spinner="Measuring feature sizes and this machine's speed...", max_entries=16)
def model_side(model_key: str, _model, input_shape: tuple) -> tuple:
    return feature_sizes(_model, input_shape), measure_macs_per_second(_model, input_shape, repeats=10) / 1e9


@st.cache_resource(show_spinner="Timing each segment on this machine...", max_entries=16)
def segment_latencies(model_key: str, engine: str, _model, input_shape: tuple) -> tuple[list[float], str]:
    # A constant of the machine shared by every session, shown with the time it was taken and re-measurable.
    seconds = measure_segment_latencies(_model, input_shape, engine, threads=1, rounds=SEGMENT_ROUNDS)
    return seconds, time.strftime("%H:%M:%S")


def remeasure(model_key: str, engine: str, input_shape: tuple) -> None:
    """Forget this model's segment times on `engine`, so the next run times them again."""
    segment_latencies.clear(model_key, engine, None, input_shape)


@st.cache_data(show_spinner="Replaying the rule over a grid of settings...", max_entries=32)
def rule_grid(model_key: str, rule: str, _record):
    # thresholds on the sidebar slider's 0.01 steps, so the best one can be applied there exactly
    grid = np.round(np.linspace(0, 1, 101), 2) if get_rule(rule).has_thresholds else None
    return decision_grid(_record, rule, grid=grid)


def outputs_sizes(record) -> FeatureSizes | None:
    """The values one sample sends at each exit and before any, as an outputs file gives them (None without)."""
    exits, inputs = record.info.get("feature_sizes"), record.info.get("input_size")
    if exits is None or inputs is None:
        return None
    return FeatureSizes((int(inputs),), tuple((int(v),) for v in exits))


in_ms = loaded.cost_unit == "ms"  # costs measured in milliseconds: tier speeds are multiples of that machine's
if loaded.has_network:
    sizes, local_gmacs = model_side(loaded.key, loaded.model, loaded.input_shape)
    speed_options = sorted(set(GMACS) | {round(local_gmacs, 3)})
    device_speed = round(local_gmacs, 3)
else:
    sizes, local_gmacs = outputs_sizes(record), None
    speed_options, device_speed = (SPEEDUPS, 1.0) if in_ms else (GMACS, DEVICE_GMACS)
speed_key, work_per_s = ("dep_speedup", MS_WORK_PER_S) if in_ms else ("dep_speed", 1e9)


def gmacs_label(value: float) -> str:
    if in_ms:
        return f"{value:g}x" + (" (the measuring machine)" if value == 1 else "")
    return f"{value:g} (this machine)" if local_gmacs is not None and value == round(local_gmacs, 3) else f"{value:g}"


def exit_label(value: int) -> str:
    return "input (runs nothing)" if value == -1 else f"exit {value}"


def compute_label(value: str) -> str:
    return "MACs / speed" if value == FROM_MACS else f"measured per-segment latency ({get_engine(value).label})"


def speeds_heading() -> str:
    """What the tier speed sliders measure."""
    if in_ms:
        return "**Tier speeds** (times the speed of the machine that measured the outputs file's milliseconds)"
    if local_gmacs is None:
        return "**Tier speeds** (GMAC/s)"
    return "**Tier speeds** (GMAC/s; the device starts at this machine's measured speed: batch 1, one thread)"


with st.container(border=True):
    c1, c2, c3 = st.columns([1, 1, 2])
    if sizes is None:
        num_tiers = 1
        sizes = FeatureSizes((0,), tuple((0,) for _ in range(num_exits)))  # one tier sends nothing
        c1.caption(
            "One tier: the outputs file gives no feature_sizes and input_size, so what a split sends over a link "
            "is not known. Add them to the file to split it over tiers (docs/BRING_YOUR_OWN.md)."
        )
    else:
        num_tiers = c1.radio(
            "Tiers",
            list(range(1, MAX_TIERS + 1)),
            index=2,
            key="dep_tiers",
            horizontal=True,
            help=glossary.help_text(
                "tier",
                "split point",
                lead="1: the device alone; 2: device and cloud; 3: device, edge, cloud; 4: device, edge, fog, cloud.",
            ),
        )
    precision = c2.radio(
        "Features sent as",
        ["fp32", "fp16", "int8"],
        key="dep_precision",
        horizontal=True,
        help="Bytes per value of the feature maps (and of the input, when the first tier sends it).",
    )
    names = TIER_NAMES[num_tiers]
    splits = []
    if num_tiers > 1:
        cols = c3.columns(num_tiers - 1)
        suggested = default_splits(num_exits, num_tiers)
        for i in range(num_tiers - 1):
            key = f"dep_split_{num_tiers}_{i}"
            state.setdefault(key, suggested[i])
            splits.append(
                cols[i].selectbox(
                    f"Last exit on the {names[i]}",
                    list(range(-1, num_exits)),
                    key=key,
                    format_func=exit_label,
                    help="Samples not answered by then send this exit's feature map to the "
                    "next tier. 'input': this tier runs nothing and sends the image.",
                )
            )
    else:
        c3.caption("One tier: everything runs on the device.")
    compute_from = FROM_MACS
    if models.require_network(loaded, "timing each segment on this machine or exporting the segments", stop=False):
        compute_from = st.radio(
            "Compute time from",
            [FROM_MACS, *list_engines(available=True)],
            key="dep_compute",
            format_func=compute_label,
            horizontal=True,
            help="MACs / speed: each tier computes at its speed in MACs per second. Measured: each segment (the "
            "blocks and head of one exit) is timed for one image on this machine with the chosen engine, and a tier "
            "at another speed scales those times by this machine's speed over its own.",
        )
    st.markdown(speeds_heading())
    cols = st.columns(num_tiers)
    speeds = []
    for t in range(num_tiers):
        later = DEFAULT_SPEEDUPS if in_ms else DEFAULT_GMACS
        state.setdefault(f"{speed_key}_{num_tiers}_{t}", device_speed if t == 0 else later[num_tiers][t - 1])
        speeds.append(
            cols[t].select_slider(names[t], speed_options, key=f"{speed_key}_{num_tiers}_{t}", format_func=gmacs_label)
        )
    bandwidths, latencies = [], []
    if num_tiers > 1:
        st.markdown("**Links**")
        cols = st.columns(num_tiers - 1)
        for i in range(num_tiers - 1):
            default_bandwidth, default_latency = DEFAULT_LINKS[num_tiers][i]
            state.setdefault(f"dep_bw_{num_tiers}_{i}", default_bandwidth)
            state.setdefault(f"dep_lat_{num_tiers}_{i}", int(default_latency))
            link = f"{names[i]} → {names[i + 1]}"
            with cols[i]:
                bandwidths.append(st.select_slider(f"{link} bandwidth (Mbit/s)", MBPS, key=f"dep_bw_{num_tiers}_{i}"))
                latencies.append(st.slider(f"{link} latency (ms)", 0, 200, key=f"dep_lat_{num_tiers}_{i}"))
    with st.expander("Power (optional, for energy per sample)"):
        cols = st.columns(num_tiers)
        power = [
            cols[t].number_input(
                f"{names[t]} compute power (W)", 0.0, 1000.0, 0.0, 0.5, key=f"dep_power_{num_tiers}_{t}"
            )
            for t in range(num_tiers)
        ]

segments, measured_at = None, ""
if compute_from != FROM_MACS:
    try:
        segment_s, measured_at = segment_latencies(loaded.key, compute_from, loaded.model, loaded.input_shape)
    except AepError as e:
        st.error(str(e))
        st.stop()
    # the speed the sliders call "this machine": a tier at it takes exactly the measured times
    segments = SegmentTimes(tuple(segment_s), round(local_gmacs, 3) * 1e9)
    engine_label = get_engine(compute_from).label
    with st.expander(f"Per-segment latency on {engine_label}, measured on this server at {measured_at}"):
        macs = np.diff(np.concatenate([[0], np.asarray(record.cum_macs, dtype=np.float64)]))
        st.dataframe(
            pd.DataFrame(
                {
                    "segment": [f"to exit {k}" for k in range(num_exits)],
                    "MMACs": (macs / 1e6).round(3),
                    "measured (ms)": np.round(1e3 * np.asarray(segment_s), 4),
                    "MACs / this machine's speed (ms)": np.round(1e3 * macs / segments.reference_macs_per_s, 4),
                }
            ),
            hide_index=True,
            width="stretch",
        )
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(
            f"Segment k: the blocks after exit k-1 up to exit k and exit k's head, one image, one CPU thread, run as "
            f"the {engine_label} early-exit engine runs it; the median of {SEGMENT_ROUNDS} rounds that each time "
            f"every segment once. A constant of this machine shared by every session, measured at {measured_at}; "
            "other work on the machine moves it. A tier at speed S runs each segment in its measured time x "
            f"{round(local_gmacs, 3):g} / S (this machine's GMAC/s over the tier's): every tier is assumed to run "
            "the same engine, as much faster or slower than this machine as its speed says."
        )
        c2.button(
            "Measure again",
            key="dep_remeasure",
            on_click=remeasure,
            args=(loaded.key, compute_from, loaded.input_shape),
            help="Time every segment again on this engine (for every session).",
        )

try:
    deployment = make_deployment(
        [g * work_per_s for g in speeds],
        bandwidths,
        latencies,
        splits,
        precision,
        [p if p > 0 else None for p in power],
        names,
    )
    result = simulate(record, sizes, deployment, current.rule, segments, **current.rule_settings())
except AepError as e:
    st.error(str(e))
    st.stop()

compute_text = (
    f"{'the milliseconds the outputs file gives' if in_ms else 'MACs'} / each tier's speed"
    if segments is None
    else f"per-segment latency measured on {get_engine(compute_from).label} at {measured_at}, scaled by tier speed"
)
st.caption(
    f"Rule: {current.describe()} (sidebar). Replayed on {record.num_samples:,} saved "
    f"{record.info.get('split', 'test')} outputs. Compute time: {compute_text}."
)
stats = result.latency_stats()
metrics = st.columns(6 if result.energy_j is not None else 5)
metrics[0].metric("Accuracy", f"{100 * result.accuracy:.2f}%")
metrics[1].metric("Mean latency", f"{1e3 * stats['mean']:.2f} ms")
noted_metric(metrics[2], "p95 latency", f"{1e3 * stats['p95']:.2f} ms", f"p50 {1e3 * stats['p50']:.2f} ms")
metrics[3].metric("p99 latency", f"{1e3 * stats['p99']:.2f} ms")
noted_metric(metrics[4], "Sent per sample", f"{result.bytes_sent.mean() / 1e3:.2f} kB", f"{precision} features")
if result.energy_j is not None:
    metrics[5].metric("Energy per sample", f"{1e3 * result.energy_j.mean():.3f} mJ")


def holds(candidate: Deployment) -> list[str]:
    """What each tier of a deployment holds, as text."""
    return [
        "none" if len(r) == 0 else (f"exit {r[0]}" if len(r) == 1 else f"exits {r[0]}-{r[-1]}")
        for r in candidate.tier_exits(num_exits)
    ]


exits_text = holds(deployment)
share, tier_accuracy = result.tier_share, result.tier_accuracy
counts = np.bincount(result.exit_index, minlength=num_exits).astype(np.float64)
groups = [("all samples", counts / counts.sum())]
for t in range(num_tiers):
    answered_here = np.where(result.timings.tier == t, counts, 0.0)
    if answered_here.sum() > 0:
        groups.append((f"answered on {names[t]}", answered_here / answered_here.sum()))
c1, c2 = st.columns([3, 2])
timings = result.timings
parts = deploy_charts.latency_parts(names, timings.compute_s, timings.transfer_s, timings.link_latency_s, groups)
c1.altair_chart(deploy_charts.latency_breakdown(parts), width="stretch")
c2.altair_chart(deploy_charts.tier_share(names, share, tier_accuracy, exits_text), width="stretch")

breakdown = result.breakdown()
table = pd.DataFrame(
    {
        "tier": names,
        "speed x" if in_ms else "GMAC/s": speeds,
        "holds": exits_text,
        "answered %": (100 * share).round(1),
        "accuracy %": ["–" if math.isnan(a) else f"{100 * a:.2f}" for a in tier_accuracy],
        "mean compute (ms)": (1e3 * breakdown["compute"]).round(3),
    }
)
st.dataframe(table, hide_index=True, width="stretch")
if num_tiers > 1:

    def handed_on(split: int) -> str:
        sent = sizes.input_bytes(precision) if split == -1 else int(sizes.exit_bytes(precision)[split])
        return f"{'input' if split == -1 else f'exit {split}'} = {sent:,} bytes"

    st.caption(
        "Handed on per crossing: "
        + "; ".join(f"{names[i]} → {names[i + 1]}: {handed_on(split)}" for i, split in enumerate(deployment.splits))
        + f" ({precision})."
    )

st.subheader("Best configuration under a deadline")
c1, c2, c3 = st.columns([1, 1, 2])
deadline = c1.number_input("Latency deadline (ms)", 0.01, 100000.0, 50.0, key="dep_deadline")
stat = c2.radio("Deadline on", ["mean", "p95"], key="dep_stat", horizontal=True)
grid = rule_grid(loaded.key, current.rule, record)
searched = search(grid, record.cum_macs, sizes, deployment, stat=stat, segments=segments)
best, message = None, None
try:
    best = search(grid, record.cum_macs, sizes, deployment, deadline / 1e3, stat, segments=segments).best
except AepError as e:
    message = str(e)
current_point = (1e3 * stats[stat], result.accuracy)


def apply_best(best_splits: list[int], best_settings: dict, tiers: int) -> None:
    """Put the best configuration into the split pickers and the sidebar's setting."""
    for i, split in enumerate(best_splits):
        state[f"dep_split_{tiers}_{i}"] = int(split)
    setting = current.spec.setting
    if setting is None:
        return
    value = best_settings[setting.keyword]
    state[setting_key(current.rule)] = int(value) if setting.integer else float(value)
    if setting.per_exit:  # a grid point is one global threshold
        state["per_exit_on"] = False
        state["pe_toggle"] = False


if best is not None:
    point = searched.point(best)
    shown = ", ".join(f"{name} = {value:g}" for name, value in point["settings"].items() if name != "weights")
    best_holds = holds(deployment.with_splits(point["splits"]))
    splits_text = ", ".join(f"{tier}: {held}" for tier, held in zip(names, best_holds, strict=True))
    c3.success(
        f"**{100 * point['accuracy']:.2f}%** accuracy at {1e3 * point[f'{stat}_latency_s']:.2f} ms {stat} "
        f"({splits_text}; {shown})."
    )
    c3.button(
        "Use this configuration",
        on_click=apply_best,
        args=(point["splits"], point["settings"], num_tiers),
        key="dep_apply",
    )
else:
    c3.warning(message)
best_point = None if best is None else (1e3 * searched.latency_s[best], searched.accuracy[best])
st.altair_chart(
    deploy_charts.accuracy_latency(
        1e3 * searched.latency_s, searched.accuracy, searched.pareto, stat, current_point, deadline, best_point
    ),
    width="stretch",
)
setting_name = current.spec.setting.keyword if current.spec.setting is not None else "setting"
st.caption(
    f"Every split of the {num_tiers} tier(s) with every {setting_name} of the rule "
    f"({len(searched.accuracy):,} configurations, grey); the line is the Pareto front. Red: the current "
    f"setting; green: the most accurate within the deadline."
)


def export_section() -> None:
    """Export the current split's segments as ONNX files checked with onnxruntime, and offer them as a zip."""
    splits = list(deployment.splits)
    wanted = (loaded.key, tuple(splits))
    if st.button("Export these segments (ONNX)", key="dep_export", icon=":material/deployed_code:"):
        with st.spinner("Exporting each segment and checking it with ONNX Runtime..."):
            try:
                data, check = export_archive(loaded.model, splits, loaded.input_shape, Path(loaded.label).name)
            except AepError as e:
                state.pop("dep_export_zip", None)
                st.error(str(e))
                return
        state["dep_export_zip"] = (wanted, data, check.ok, check.format())
    done = state.get("dep_export_zip")
    if done is None or done[0][0] != loaded.key:
        return
    (_, done_splits), data, ok, report = done
    tiers = f"split after exits {list(done_splits)}" if done_splits else "one segment"
    (st.success if ok else st.error)(
        f"{len(done_splits) + 1} segment file(s), {tiers}: "
        + ("each reproduces PyTorch within tolerance." if ok else "a segment does not reproduce PyTorch.")
    )
    st.code(report, language=None)
    if done_splits != tuple(splits):
        st.caption("The splits have changed since: export again for the current ones.")
    st.download_button(
        "Download the segments (.zip)",
        data,
        file_name=f"{Path(loaded.label).stem}_segments.zip",
        mime="application/zip",
        key="dep_export_download",
        disabled=not ok,
    )


with st.container(border=True):
    st.markdown(
        "**Export**: one ONNX file per tier's segment with a manifest, as `python -m aep_core export` writes them "
        "(see docs/DEPLOY.md)"
    )
    if models.require_network(loaded, "exporting the segments", stop=False):
        export_section()
