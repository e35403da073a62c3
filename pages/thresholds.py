"""Thresholds: tune the exit rule and watch accuracy, compute, the exit distribution, the Pareto curve
and per-class depth update together. Every number is replayed from saved per-exit outputs."""
import numpy as np
import streamlit as st
import torch

import app_shared as shared
from explorer.charts import exits as charts
from aep_core.errors import AepError
from aep_core.exits.rules import POLICY_INFO, make_rule
from aep_core.exits.certify import certify_max_drop
from aep_core.exits.runtime import measure_speedup
from aep_core.exits.solvers import accuracy_floor, pareto_sweep, solve_accuracy, solve_budget

shared.ensure_entry("thresholds")
st.title("Thresholds")
lm, rec = shared.model_and_record()
if rec.num_exits < 2:
    st.info(f"{lm.label} has no early exits: every sample runs the whole network, so there is no threshold to tune. "
            "Pick a model trained with exits (AEP, EENet, distillation) in the sidebar.")
    st.stop()
ss = st.session_state
s = shared.settings()
E = rec.num_exits
tuning = POLICY_INFO[s.rule].setting == "thresholds"
solve_rec = lm.val if lm.val is not None else rec
CERTIFY_CONFIDENCE = 0.9


@st.cache_data(show_spinner="Sweeping thresholds...", max_entries=64)
def sweep(model_key: str, rule: str, _rec) -> dict:
    sw = pareto_sweep(_rec, rule, points=80)
    return {"macs": sw.macs_ratio.tolist(), "acc": sw.accuracy.tolist(), "pareto": sw.pareto.tolist()}


@st.cache_data(show_spinner="Solving...", max_entries=64)
def solve(model_key: str, rule: str, goal: str, value: float, _val, _test) -> dict:
    if goal == "budget":
        sol = solve_budget(_val, rule, value, _test)
    elif goal == "certified":
        sol = certify_max_drop(_val, rule, value, CERTIFY_CONFIDENCE, _test)
    else:
        sol = solve_accuracy(_val, rule, accuracy_floor(_val, value), _test)
    return sol.summary()


def apply_preset(goal: str, value: float) -> None:
    """Solve on the validation split and put the solution into the shared settings."""
    if goal == "certified" and lm.val is None:
        ss["preset_msg"] = ("error", "A certified setting needs the model's validation outputs, and this model has none.")
        return
    try:
        sol = solve(lm.key, s.rule, goal, value, solve_rec, rec)
    except AepError as e:
        ss["preset_msg"] = ("error", str(e))
        return
    st_ = sol["settings"]
    if "thresholds" in st_:
        ts = [float(np.clip(t, 0, 1)) for t in st_["thresholds"]]
        ss["per_exit_on"] = ss["pe_toggle"] = True
        ss["per_exit_thresholds"] = ts
        for k, t in enumerate(ts):
            ss[f"pe_{k}"] = round(t, 3)
    elif "t" in st_:
        ss[shared.threshold_key(s.rule)] = int(st_["t"])
    r = sol.get("test", sol["val"])
    how = (f"certified on the validation split: a drop of at most {value:g} points with {100 * CERTIFY_CONFIDENCE:.0f}% "
           "probability" if goal == "certified" else "chosen on the validation split")
    ss["preset_msg"] = ("success", f"Preset applied: {100 * r['accuracy']:.2f}% accuracy at {100 * r['macs_ratio']:.1f}% "
                                   f"of the full network's MACs ({how}; shown on {rec.info.get('split', 'test')}).")


with st.container(border=True):
    st.markdown("**One-click presets** (solved on the validation split, shown on test)")
    p1, p2 = st.columns([2, 3], vertical_alignment="bottom")
    budget = p1.number_input("Compute budget (% of the full network)", 5, 100, value=50, step=5, key="budget_pct")
    p2.button(f"Best accuracy within {budget}% of the compute", on_click=apply_preset, args=("budget", budget / 100),
              key="preset_budget", width="stretch")
    p3, p4 = st.columns(2)
    p3.button("Cheapest within 0.5 points of the final exit", on_click=apply_preset, args=("accuracy", 0.5),
              key="preset_accuracy", width="stretch",
              help="The cheapest per-exit thresholds that stay within 0.5 points on the validation split. On new "
                   "data the drop scatters around 0.5 points.")
    p4.button(f"Guaranteed within 0.5 points ({100 * CERTIFY_CONFIDENCE:.0f}% confidence)", on_click=apply_preset,
              args=("certified", 0.5), key="preset_certified", width="stretch",
              help="The cheapest global threshold whose accuracy drop is certified on the validation split: with "
                   f"{100 * CERTIFY_CONFIDENCE:.0f}% probability the drop on new data of the same kind is at most 0.5 "
                   "points (Learn-then-Test). It costs more compute than the plain preset.")
    if "preset_msg" in ss:
        kind, msg = ss["preset_msg"]
        (st.success if kind == "success" else st.error)(msg)

if tuning:
    ss.setdefault("pe_toggle", bool(ss.get("per_exit_on", False)))
    on = st.toggle("Per-exit thresholds", key="pe_toggle", help="One threshold per early exit instead of the sidebar's global one.")
    ss["per_exit_on"] = on
    if on:
        stored = ss.get("per_exit_thresholds") or [s.threshold] * (E - 1)
        stored = (list(stored) + [s.threshold] * E)[: E - 1]
        cols = st.columns(E - 1)
        vals = []
        for k in range(E - 1):
            ss.setdefault(f"pe_{k}", round(float(stored[k]), 3))
            v = cols[k].slider(f"exit {k}", 0.0, 1.0, step=0.001, format="%.3f", key=f"pe_{k}")
            # keep a preset's exact threshold until this slider is moved
            vals.append(float(stored[k]) if v == round(float(stored[k]), 3) else v)
        ss["per_exit_thresholds"] = vals
else:
    st.caption("The patience rule has one setting, t, in the sidebar.")
s = shared.settings()
shared.sync_url("thresholds")

try:
    res = shared.policy_summary(lm.key, "test", s.rule, shared.frozen_kwargs(s.policy_kwargs()), rec)
except AepError as e:
    st.error(str(e))
    st.stop()
final_acc = float(rec.exit_accuracy()[-1])
full = rec.full_macs
m1, m2, m3, m4 = st.columns(4)
m1.metric("Accuracy", f"{100 * res['accuracy']:.2f}%", f"{100 * (res['accuracy'] - final_acc):+.2f} pts vs final exit")
m2.metric("Expected MACs", f"{res['expected_macs'] / 1e6:.2f} M", f"{100 * res['macs_ratio']:.1f}% of full", delta_color="off", delta_arrow="off")
m3.metric("Speed-up (MACs)", f"{1 / res['macs_ratio']:.2f}x")
m4.metric("Samples", f"{rec.num_samples:,}", rec.info.get("split", ""), delta_color="off", delta_arrow="off")
st.caption(f"Rule: {s.describe()}. Replayed on {rec.num_samples:,} saved {rec.info.get('split', 'test')} outputs.")

c1, c2 = st.columns([3, 2])
sw = sweep(lm.key, s.rule, rec)
cost = np.asarray(rec.cum_macs, dtype=float) / full
ora = shared.policy_summary(lm.key, "test", "oracle", (), rec)
c1.altair_chart(charts.pareto_curve(sw["macs"], sw["acc"], (res["macs_ratio"], res["accuracy"]),
                                    (cost.tolist(), rec.exit_accuracy().tolist()), sw["pareto"],
                                    (ora["macs_ratio"], ora["accuracy"])), width="stretch")
c1.caption("Line: the rule over a sweep of global thresholds (Pareto points). Grey squares: each exit alone. "
           "Green diamond: the oracle, which stops each sample at the first exit that is right (reads the labels: a "
           "bound, not a rule). Red dot: the current setting.")
pea = [np.nan if v is None else v for v in res["per_exit_accuracy"]]
c2.altair_chart(charts.exit_distribution(res["exit_distribution"], pea), width="stretch")
names = rec.info.get("class_names") or lm.class_names
pcm = [np.nan if v is None else v for v in res["per_class_mean_exit"]]
st.altair_chart(charts.per_class_exit(names, pcm, E), width="stretch")


def measure() -> list[dict]:
    """Time the early-exit runtime against the network without exits on the shipped slice, current rule:
    batch 1 on one thread (the fastest setting for single images on a CPU), batch 256 on every thread."""
    rule = make_rule(s.rule, E, lm.model.has_confidence, **s.policy_kwargs())
    images = shared.slice_inputs(lm.meta, 1000)  # (1000, 1, 28, 28), read once for both batch sizes
    rows = []
    for bs, n, threads in ((1, 200, 1), (256, 1000, None)):
        m = measure_speedup(lm.model, rule, images[:n], bs, rounds=1, temperatures=lm.temperatures, threads=threads)
        rows.append({"batch size": bs, "threads": threads or torch.get_num_threads(), "images": m.samples,
                     "without exits (images/s)": round(m.without_exits_per_s),
                     "early exit (images/s)": round(m.early_exit_per_s), "measured speed-up": f"{m.speed_up:.2f}x",
                     "MACs speed-up (replayed)": f"{1 / res['macs_ratio']:.2f}x"})
    return rows


with st.container(border=True):
    st.markdown("**Measured on this machine**: the runtime really stops computing a sample at its exit "
                "(at batch 256, exited samples leave the batch)")
    measured_for = (lm.key, s.describe())
    if not shared.reads_slice(lm.meta):
        st.caption("Measuring needs images this model reads; the shipped slice holds 28x28 grayscale Fashion-MNIST "
                   "images. Use `python -m aep_core run CHECKPOINT --compare` on the model's own data instead.")
    elif st.button("Measure the real speed-up", key="measure_speed", icon=":material/timer:"):
        try:
            ss["speed_rows"] = (measured_for, measure())
        except AepError as e:
            ss.pop("speed_rows", None)
            st.error(str(e))
    if "speed_rows" in ss:
        (key, described), rows = ss["speed_rows"]
        if key == lm.key:
            st.dataframe(rows, hide_index=True, width="stretch")
            stale = "" if described == s.describe() else " Settings have changed since: measure again."
            st.caption(f"Measured for {described}, on the shipped test slice. The same weights run both ways, "
                       "BatchNorm folded and channels-last. Timings "
                       "vary with the machine's load; `python -m benchmarks.early_exit_speed` takes the best of "
                       f"several rounds.{stale}")
