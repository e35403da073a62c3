"""Deploy: the model split over device, edge and cloud. Sliders for tier speeds, bandwidth and link
latency, a picker for the split points; the latency breakdown, the share answered at each tier, and
accuracy against latency, all replayed from the saved per-exit outputs under the sidebar's exit rule."""
import math

import numpy as np
import pandas as pd
import streamlit as st

import app_shared as shared
from explorer.charts import deploy as deploy_charts
from aep_core.deploy.simulator import (DEFAULT_GMACS, DEFAULT_LINKS, MAX_TIERS, TIER_NAMES, decision_grid, default_splits,
                             feature_sizes, make_deployment, measure_macs_per_second, search, simulate)
from aep_core.errors import AepError
from aep_core.exits.rules import POLICY_INFO

GMACS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
MBPS = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 10000.0]

shared.ensure_entry("deploy")
st.title("Deploy across tiers")
st.markdown("The network split over a **device**, an **edge** box and the **cloud**: a sample leaves at the first "
            "confident exit, and only the hard ones send their features up the link. Every number below is replayed "
            "from the saved per-exit outputs under the sidebar's exit rule; no network runs when a slider moves.")
lm, rec = shared.model_and_record()
ss = st.session_state
s = shared.settings()
E = rec.num_exits
ds = lm.meta["dataset"]
shape = (int(ds["in_channels"]), int(ds["image_size"]), int(ds["image_size"]))


@st.cache_resource(show_spinner="Measuring feature sizes and this machine's speed...", max_entries=16)
def model_side(model_key: str, _model, shape: tuple) -> tuple:
    return feature_sizes(_model, shape), measure_macs_per_second(_model, shape, repeats=10) / 1e9


@st.cache_data(show_spinner="Replaying the rule over a grid of settings...", max_entries=32)
def rule_grid(model_key: str, rule: str, _rec):
    grid = np.round(np.linspace(0, 1, 101), 2) if POLICY_INFO[rule].setting == "thresholds" else None
    return decision_grid(_rec, rule, grid=grid)


sizes, local = model_side(lm.key, lm.model, shape)
speed_options = sorted(set(GMACS) | {round(local, 3)})


def gmacs_label(v: float) -> str:
    return f"{v:g} (this machine)" if v == round(local, 3) else f"{v:g}"


def exit_label(v: int) -> str:
    return "input (runs nothing)" if v == -1 else f"exit {v}"


with st.container(border=True):
    c1, c2, c3 = st.columns([1, 1, 2])
    k = c1.radio("Tiers", list(range(1, MAX_TIERS + 1)), index=2, key="dep_tiers", horizontal=True,
                 help="1: the device alone; 2: device and cloud; 3: device, edge, cloud; 4: device, edge, fog, cloud.")
    precision = c2.radio("Features sent as", ["fp32", "fp16", "int8"], key="dep_precision", horizontal=True,
                         help="Bytes per value of the feature maps (and of the input, when the first tier sends it).")
    names = TIER_NAMES[k]
    splits = []
    if k > 1:
        cols = c3.columns(k - 1)
        base = default_splits(E, k)
        for i in range(k - 1):
            ss.setdefault(f"dep_split_{k}_{i}", base[i])
            splits.append(cols[i].selectbox(f"Last exit on the {names[i]}", list(range(-1, E)), key=f"dep_split_{k}_{i}",
                                            format_func=exit_label,
                                            help="Samples not answered by then send this exit's feature map to the "
                                                 "next tier. 'input': this tier runs nothing and sends the image."))
    else:
        c3.caption("One tier: everything runs on the device.")
    st.markdown("**Tier speeds** (GMAC/s; the device starts at this machine's measured speed: batch 1, one thread)")
    cols = st.columns(k)
    speeds = []
    for t in range(k):
        default = round(local, 3) if t == 0 else DEFAULT_GMACS[k][t - 1]
        ss.setdefault(f"dep_speed_{k}_{t}", default)
        speeds.append(cols[t].select_slider(names[t], speed_options, key=f"dep_speed_{k}_{t}", format_func=gmacs_label))
    bws, lats = [], []
    if k > 1:
        st.markdown("**Links**")
        cols = st.columns(k - 1)
        for i in range(k - 1):
            bw0, lat0 = DEFAULT_LINKS[k][i]
            ss.setdefault(f"dep_bw_{k}_{i}", bw0)
            ss.setdefault(f"dep_lat_{k}_{i}", int(lat0))
            with cols[i]:
                bws.append(st.select_slider(f"{names[i]} → {names[i + 1]} bandwidth (Mbit/s)", MBPS, key=f"dep_bw_{k}_{i}"))
                lats.append(st.slider(f"{names[i]} → {names[i + 1]} latency (ms)", 0, 200, key=f"dep_lat_{k}_{i}"))
    with st.expander("Power (optional, for energy per sample)"):
        cols = st.columns(k)
        power = [cols[t].number_input(f"{names[t]} compute power (W)", 0.0, 1000.0, 0.0, 0.5, key=f"dep_power_{k}_{t}")
                 for t in range(k)]

try:
    dep = make_deployment([g * 1e9 for g in speeds], bws, lats, splits, precision,
                          [p if p > 0 else None for p in power], names)
    res = simulate(rec, sizes, dep, s.rule, **s.policy_kwargs())
except AepError as e:
    st.error(str(e))
    st.stop()

st.caption(f"Rule: {s.describe()} (sidebar). Replayed on {rec.num_samples:,} saved {rec.info.get('split', 'test')} outputs.")
stats = res.latency_stats()
m = st.columns(6 if res.energy_j is not None else 5)
m[0].metric("Accuracy", f"{100 * res.accuracy:.2f}%")
m[1].metric("Mean latency", f"{1e3 * stats['mean']:.2f} ms")
m[2].metric("p95 latency", f"{1e3 * stats['p95']:.2f} ms", f"p50 {1e3 * stats['p50']:.2f} ms", delta_color="off",
            delta_arrow="off")
m[3].metric("p99 latency", f"{1e3 * stats['p99']:.2f} ms")
m[4].metric("Sent per sample", f"{res.bytes_sent.mean() / 1e3:.2f} kB", f"{precision} features", delta_color="off",
            delta_arrow="off")
if res.energy_j is not None:
    m[5].metric("Energy per sample", f"{1e3 * res.energy_j.mean():.3f} mJ")



def holds(d) -> list[str]:
    """What each tier of a deployment holds, as text."""
    return ["none" if len(r) == 0 else (f"exit {r[0]}" if len(r) == 1 else f"exits {r[0]}-{r[-1]}") for r in d.tier_exits(E)]


exits_text = holds(dep)
share, tacc = res.tier_share, res.tier_accuracy
counts = np.bincount(res.exit_index, minlength=E).astype(np.float64)
groups = [("all samples", counts / counts.sum())]
for t in range(k):
    w = np.where(res.timings.tier == t, counts, 0.0)
    if w.sum() > 0:
        groups.append((f"answered on {names[t]}", w / w.sum()))
c1, c2 = st.columns([3, 2])
parts = deploy_charts.latency_parts(names, res.timings.compute_s, res.timings.transfer_s, res.timings.link_latency_s, groups)
c1.altair_chart(deploy_charts.latency_breakdown(parts), width="stretch")
c2.altair_chart(deploy_charts.tier_share(names, share, tacc, exits_text), width="stretch")

b = res.breakdown()
table = pd.DataFrame({"tier": names, "GMAC/s": speeds, "holds": exits_text,
                      "answered %": (100 * share).round(1),
                      "accuracy %": ["–" if math.isnan(a) else f"{100 * a:.2f}" for a in tacc],
                      "mean compute (ms)": (1e3 * b["compute"]).round(3)})
st.dataframe(table, hide_index=True, width="stretch")
if k > 1:
    hand = [("input" if s_ == -1 else f"exit {s_}") for s_ in dep.splits]
    st.caption("Handed on per crossing: " + "; ".join(
        f"{names[i]} → {names[i + 1]}: {hand[i]} = "
        f"{(sizes.input_bytes(precision) if dep.splits[i] == -1 else int(sizes.exit_bytes(precision)[dep.splits[i]])):,} bytes"
        for i in range(k - 1)) + f" ({precision}).")

st.subheader("Best configuration under a deadline")
c1, c2, c3 = st.columns([1, 1, 2])
deadline = c1.number_input("Latency deadline (ms)", 0.01, 100000.0, 50.0, key="dep_deadline")
stat = c2.radio("Deadline on", ["mean", "p95"], key="dep_stat", horizontal=True)
grid = rule_grid(lm.key, s.rule, rec)
sr = search(grid, rec.cum_macs, sizes, dep, stat=stat)
best, message = None, None
try:
    best = search(grid, rec.cum_macs, sizes, dep, deadline / 1e3, stat).best
except AepError as e:
    message = str(e)
cur = (1e3 * stats[stat], res.accuracy)


def apply_best(splits_: list[int], setting: dict, kk: int) -> None:
    """Put the best configuration into the split pickers and the sidebar's setting."""
    for i, v in enumerate(splits_):
        ss[f"dep_split_{kk}_{i}"] = int(v)
    info = POLICY_INFO[s.rule]
    if info.setting == "thresholds":
        ss[shared.threshold_key(s.rule)] = float(setting["thresholds"])
        ss["per_exit_on"] = False
        ss["pe_toggle"] = False
    elif info.setting is not None:
        ss[shared.threshold_key(s.rule)] = int(setting[info.setting])


if best is not None:
    p = sr.point(best)
    shown = ", ".join(f"{kk} = {v:g}" for kk, v in p["settings"].items() if kk != "weights")
    splits_text = ", ".join(f"{n}: {h}" for n, h in zip(names, holds(dep.with_splits(p["splits"]))))
    c3.success(f"**{100 * p['accuracy']:.2f}%** accuracy at {1e3 * p[f'{stat}_latency_s']:.2f} ms {stat} "
               f"({splits_text}; {shown}).")
    c3.button("Use this configuration", on_click=apply_best, args=(p["splits"], p["settings"], k), key="dep_apply")
else:
    c3.warning(message)
st.altair_chart(deploy_charts.accuracy_latency(1e3 * sr.latency_s, sr.accuracy, sr.pareto, stat, cur, deadline,
                                               None if best is None else (1e3 * sr.latency_s[best], sr.accuracy[best])),
                width="stretch")
st.caption(f"Every split of the {k} tier(s) with every {POLICY_INFO[s.rule].setting or 'setting'} of the rule "
           f"({len(sr.accuracy):,} configurations, grey); the line is the Pareto front. Red: the current setting; green: "
           "the most accurate within the deadline. Export the segments with "
           "`python -m aep_core export CHECKPOINT --splits ... --out DIR` (see docs/DEPLOY.md).")
