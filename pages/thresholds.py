"""Thresholds: tune the exit rule and watch accuracy, compute, the exit distribution, the Pareto curve
and per-class depth update together. Every number is replayed from saved per-exit outputs."""

import numpy as np
import streamlit as st
import torch

from aep_core.errors import AepError
from aep_core.exits.certify import certify_max_drop
from aep_core.exits.rules import make_rule
from aep_core.exits.runtime import measure_speedup
from aep_core.exits.solvers import MacsBudget, MinAccuracy, accuracy_floor, pareto_sweep, solve
from explorer import models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app
from explorer.replay import rule_summary
from explorer.state import setting_key, settings, sync_url
from explorer.widgets import noted_metric

run_inside_app()
st.title("Thresholds")
loaded, record = models.model_and_record()
if record.num_exits < 2:
    st.info(
        f"{loaded.label} has no early exits: every sample runs the whole network, so there is no threshold to "
        "tune. Pick a model trained with exits (AEP, EENet, distillation) in the sidebar."
    )
    st.stop()
state = st.session_state
current = settings()
num_exits = record.num_exits
solve_record = loaded.val if loaded.val is not None else record
CERTIFY_CONFIDENCE = 0.9


@st.cache_data(show_spinner="Sweeping thresholds...", max_entries=64)
def sweep(model_key: str, rule: str, _record) -> dict:
    result = pareto_sweep(_record, rule, points=80)
    return {"macs": result.macs_ratio.tolist(), "acc": result.accuracy.tolist(), "pareto": result.pareto.tolist()}


@st.cache_data(show_spinner="Solving...", max_entries=64)
def preset_solution(model_key: str, rule: str, goal: str, value: float, _val, _test) -> dict:
    if goal == "budget":
        solution = solve(_val, rule, MacsBudget(value), _test)
    elif goal == "certified":
        solution = certify_max_drop(_val, rule, value, CERTIFY_CONFIDENCE, _test)
    else:
        solution = solve(_val, rule, MinAccuracy(accuracy_floor(_val, value)), _test)
    return solution.summary()


def apply_preset(goal: str, value: float) -> None:
    """Solve on the validation split and put the solution into the shared settings."""
    if goal == "certified" and loaded.val is None:
        state["preset_msg"] = (
            "error",
            "A certified setting needs the model's validation outputs, and this model has none.",
        )
        return
    try:
        solution = preset_solution(loaded.key, current.rule, goal, value, solve_record, record)
    except AepError as e:
        state["preset_msg"] = ("error", str(e))
        return
    keyword = current.spec.setting.keyword
    if current.spec.has_thresholds:
        thresholds = [float(np.clip(t, 0, 1)) for t in solution["settings"][keyword]]
        state["per_exit_on"] = state["pe_toggle"] = True
        state["per_exit_thresholds"] = thresholds
        for k, t in enumerate(thresholds):
            state[f"pe_{k}"] = round(t, 3)
    else:
        state[setting_key(current.rule)] = int(solution["settings"][keyword])
    outcome = solution.get("test", solution["val"])
    how = (
        f"certified on the validation split: a drop of at most {value:g} points with "
        f"{100 * CERTIFY_CONFIDENCE:.0f}% probability"
        if goal == "certified"
        else "chosen on the validation split"
    )
    state["preset_msg"] = (
        "success",
        f"Preset applied: {100 * outcome['accuracy']:.2f}% accuracy at "
        f"{100 * outcome['macs_ratio']:.1f}% of the full network's MACs ({how}; shown on "
        f"{record.info.get('split', 'test')}).",
    )


with st.container(border=True):
    st.markdown("**One-click presets** (solved on the validation split, shown on test)")
    p1, p2 = st.columns([2, 3], vertical_alignment="bottom")
    budget = p1.number_input("Compute budget (% of the full network)", 5, 100, value=50, step=5, key="budget_pct")
    p2.button(
        f"Best accuracy within {budget}% of the compute",
        on_click=apply_preset,
        args=("budget", budget / 100),
        key="preset_budget",
        width="stretch",
    )
    p3, p4 = st.columns(2)
    p3.button(
        "Cheapest within 0.5 points of the final exit",
        on_click=apply_preset,
        args=("accuracy", 0.5),
        key="preset_accuracy",
        width="stretch",
        help="The cheapest per-exit thresholds that stay within 0.5 points on the validation split. On new "
        "data the drop scatters around 0.5 points.",
    )
    p4.button(
        f"Guaranteed within 0.5 points ({100 * CERTIFY_CONFIDENCE:.0f}% confidence)",
        on_click=apply_preset,
        args=("certified", 0.5),
        key="preset_certified",
        width="stretch",
        help="The cheapest global threshold whose accuracy drop is certified on the validation split: with "
        f"{100 * CERTIFY_CONFIDENCE:.0f}% probability the drop on new data of the same kind is at most 0.5 "
        "points (Learn-then-Test). It costs more compute than the plain preset.",
    )
    if "preset_msg" in state:
        kind, message = state["preset_msg"]
        (st.success if kind == "success" else st.error)(message)

if current.spec.has_thresholds:
    state.setdefault("pe_toggle", bool(state.get("per_exit_on", False)))
    per_exit_on = st.toggle(
        "Per-exit thresholds", key="pe_toggle", help="One threshold per early exit instead of the sidebar's global one."
    )
    state["per_exit_on"] = per_exit_on
    if per_exit_on:
        stored = state.get("per_exit_thresholds") or [current.value] * (num_exits - 1)
        stored = (list(stored) + [current.value] * num_exits)[: num_exits - 1]
        cols = st.columns(num_exits - 1)
        values = []
        for k in range(num_exits - 1):
            state.setdefault(f"pe_{k}", round(float(stored[k]), 3))
            moved = cols[k].slider(f"exit {k}", 0.0, 1.0, step=0.001, format="%.3f", key=f"pe_{k}")
            # keep a preset's exact threshold until this slider is moved
            values.append(float(stored[k]) if moved == round(float(stored[k]), 3) else moved)
        state["per_exit_thresholds"] = values
elif current.spec.setting is not None:
    st.caption(f"The {current.rule} rule has one setting, {current.spec.setting.keyword}, in the sidebar.")
current = settings()
sync_url("thresholds")

try:
    summary = rule_summary(loaded.key, record, current.rule, current.rule_settings())
except AepError as e:
    st.error(str(e))
    st.stop()
final_accuracy = float(record.exit_accuracy()[-1])
m1, m2, m3, m4 = st.columns(4)
m1.metric(
    "Accuracy",
    f"{100 * summary['accuracy']:.2f}%",
    f"{100 * (summary['accuracy'] - final_accuracy):+.2f} pts vs final exit",
)
noted_metric(
    m2, "Expected MACs", f"{summary['expected_macs'] / 1e6:.2f} M", f"{100 * summary['macs_ratio']:.1f}% of full"
)
m3.metric("Speed-up (MACs)", f"{1 / summary['macs_ratio']:.2f}x")
noted_metric(m4, "Samples", f"{record.num_samples:,}", record.info.get("split", ""))
st.caption(
    f"Rule: {current.describe()}. Replayed on {record.num_samples:,} saved {record.info.get('split', 'test')} outputs."
)

c1, c2 = st.columns([3, 2])
swept = sweep(loaded.key, current.rule, record)
exit_cost = np.asarray(record.cum_macs, dtype=float) / record.full_macs
oracle = rule_summary(loaded.key, record, "oracle")
c1.altair_chart(
    charts.pareto_curve(
        swept["macs"],
        swept["acc"],
        (summary["macs_ratio"], summary["accuracy"]),
        (exit_cost.tolist(), record.exit_accuracy().tolist()),
        swept["pareto"],
        (oracle["macs_ratio"], oracle["accuracy"]),
    ),
    width="stretch",
)
c1.caption(
    "Line: the rule over a sweep of global thresholds (Pareto points). Grey squares: each exit alone. "
    "Green diamond: the oracle, which stops each sample at the first exit that is right (reads the labels: a "
    "bound, not a rule). Red dot: the current setting."
)
per_exit_accuracy = [np.nan if v is None else v for v in summary["per_exit_accuracy"]]
c2.altair_chart(charts.exit_distribution(summary["exit_distribution"], per_exit_accuracy), width="stretch")
class_names = record.info.get("class_names") or loaded.class_names
mean_exit = [np.nan if v is None else v for v in summary["per_class_mean_exit"]]
st.altair_chart(charts.per_class_exit(class_names, mean_exit, num_exits), width="stretch")


def measure() -> list[dict]:
    """Time the early-exit runtime against the network without exits on the shipped slice, current rule:
    batch 1 on one thread (the fastest setting for single images on a CPU), batch 256 on every thread."""
    rule = make_rule(current.rule, loaded.exits, **current.rule_settings())  # with the model's trained weights
    images = models.slice_inputs(loaded, 1000)  # (1000, 1, 28, 28), read once for both batch sizes
    rows = []
    for batch_size, n, threads in ((1, 200, 1), (256, 1000, None)):
        measured = measure_speedup(
            loaded.model, rule, images[:n], batch_size, rounds=1, temperatures=loaded.temperatures, threads=threads
        )
        rows.append(
            {
                "batch size": batch_size,
                "threads": threads or torch.get_num_threads(),
                "images": measured.samples,
                "without exits (images/s)": round(measured.without_exits_per_s),
                "early exit (images/s)": round(measured.early_exit_per_s),
                "measured speed-up": f"{measured.speed_up:.2f}x",
                "MACs speed-up (replayed)": f"{1 / summary['macs_ratio']:.2f}x",
            }
        )
    return rows


with st.container(border=True):
    st.markdown(
        "**Measured on this machine**: the runtime really stops computing a sample at its exit "
        "(at batch 256, exited samples leave the batch)"
    )
    measured_for = (loaded.key, current.describe())
    if not loaded.reads_slice:
        st.caption(
            "Measuring needs images this model reads; the shipped slice holds 28x28 grayscale Fashion-MNIST "
            "images. Use `python -m aep_core run CHECKPOINT --compare` on the model's own data instead."
        )
    elif st.button("Measure the real speed-up", key="measure_speed", icon=":material/timer:"):
        try:
            state["speed_rows"] = (measured_for, measure())
        except AepError as e:
            state.pop("speed_rows", None)
            st.error(str(e))
    if "speed_rows" in state:
        (model_key, described), rows = state["speed_rows"]
        if model_key == loaded.key:
            st.dataframe(rows, hide_index=True, width="stretch")
            stale = "" if described == current.describe() else " Settings have changed since: measure again."
            st.caption(
                f"Measured for {described}, on the shipped test slice. The same weights run both ways, "
                "BatchNorm folded and channels-last. Timings "
                "vary with the machine's load; `python -m benchmarks.early_exit_speed` takes the best of "
                f"several rounds.{stale}"
            )
