"""Thresholds: tune the exit rule and watch accuracy, compute, the exit distribution, the Pareto curve
and per-class depth update together. Every number is replayed from saved per-exit outputs."""

import numpy as np
import streamlit as st
import torch

from aep_core.errors import AepError
from aep_core.exits.certify import (
    REFERENCE_WORDS,
    REFERENCES,
    certify,
    drop_against,
    reference_floor,
)
from aep_core.exits.rules import make_rule
from aep_core.exits.runtime import get_engine, list_engines, measure_speedup
from aep_core.exits.solvers import MinAccuracy, pareto_sweep, solve
from explorer import glossary, models
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
CONFIDENCE = 0.9  # of the certified presets
PRESET_DROP = 0.5  # points


@st.cache_data(show_spinner="Sweeping thresholds...", max_entries=64)
def sweep(model_key: str, rule: str, _record) -> dict:
    result = pareto_sweep(_record, rule, points=80)
    return {"macs": result.macs_ratio.tolist(), "acc": result.accuracy.tolist(), "pareto": result.pareto.tolist()}


@st.cache_data(show_spinner="Choosing thresholds...", max_entries=64)
def preset_solution(model_key: str, rule: str, goal: str, value: float, reference: str, _val, _test) -> dict:
    """The preset's settings chosen on `_val`, with the outcome and the drop against `reference` on `_val` and
    `_test`: certified for goal "drop" (points) or "budget" (MACs ratio), the solver's choice for "optimistic"."""
    if goal != "optimistic":
        goal_kw = {"max_drop_points": value} if goal == "drop" else {"max_macs_ratio": value}
        return certify(_val, rule, confidence=CONFIDENCE, reference=reference, test=_test, **goal_kw).summary()
    floor = reference_floor(_val, rule, reference, value)
    solution = solve(_val, rule, MinAccuracy(floor), _test)
    out = {**solution.summary(), "certified": False, "reference": reference}
    for split, rec, result in (("val", _val, solution.val), ("test", _test, solution.test)):
        if result is not None:
            out[split]["drop_points"] = drop_against(result, rec, rule, reference)
    return out


def apply_preset(goal: str, value: float) -> None:
    """Choose the settings on the validation split and put them into the shared settings."""
    if loaded.val is None:
        state["preset_msg"] = (
            "error",
            "Presets choose on the model's validation outputs, and this model has none (the test split only reports).",
        )
        return
    reference = state.get("preset_reference", REFERENCES[0])
    try:
        solution = preset_solution(loaded.key, current.rule, goal, value, reference, loaded.val, record)
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
    split = "test" if "test" in solution else "val"
    outcome, words = solution[split], REFERENCE_WORDS[reference]
    applied = (
        f"Preset applied: {100 * outcome['accuracy']:.2f}% accuracy at {100 * outcome['macs_ratio']:.1f}% of the "
        f"full network's {loaded.cost_name} on {record.info.get('split', split)}, a drop of "
        f"{outcome['drop_points']:.2f} points against {words}. "
    )
    if solution["certified"]:
        drop = solution["drop_bound_points"]
        bounds = f"expected drop at most {drop:g} points against {words}, " if drop is not None else ""
        state["preset_msg"] = (
            "success",
            applied + f"Certified on the validation split with {100 * CONFIDENCE:g}% confidence "
            f"({solution['family'].replace('_', '-')} thresholds, {solution['calibration_samples']:,} samples "
            f"certify them): {bounds}expected {loaded.cost_name} at most {100 * solution['macs_bound']:.1f}% of the "
            "full network.",
        )
    else:
        state["preset_msg"] = (
            "warning",
            applied + f"Optimistic: chosen on the validation split without a guarantee; on new data the drop "
            f"scatters around {value:g} points and breaks it often.",
        )


with st.container(border=True):
    st.markdown("**One-click presets** (chosen on the validation split, shown on test)")
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    c1.button(
        f"Guaranteed within {PRESET_DROP:g} points ({100 * CONFIDENCE:g}% confidence)",
        on_click=apply_preset,
        args=("drop", PRESET_DROP),
        key="preset_certified",
        type="primary",
        width="stretch",
        help="The cheapest per-exit thresholds whose accuracy drop is certified on the validation split: with "
        f"{100 * CONFIDENCE:g}% probability the expected drop on new data of the same kind is at most "
        f"{PRESET_DROP:g} points (Learn-then-Test). It costs some compute over the optimistic preset.",
    )
    c2.selectbox(
        "Drop measured against",
        REFERENCES,
        format_func=lambda r: REFERENCE_WORDS[r],
        key="preset_reference",
        help="The reference a preset's drop is measured against: the final exit's own prediction, or the rule's "
        "own prediction at full depth (for the AEP ensemble, the ensemble of every exit).",
    )
    b1, b2 = st.columns([2, 3], vertical_alignment="bottom")
    budget = b1.number_input("Compute budget (% of the full network)", 5, 100, value=50, step=5, key="budget_pct")
    b2.button(
        f"Guaranteed at most {budget}% of the compute ({100 * CONFIDENCE:g}%)",
        on_click=apply_preset,
        args=("budget", budget / 100),
        key="preset_budget",
        width="stretch",
        help="The most accurate per-exit thresholds whose expected MACs are certified on the validation split to "
        f"be at most {budget}% of the full network's, with {100 * CONFIDENCE:g}% probability.",
    )
    st.button(
        f"Optimistic: cheapest within {PRESET_DROP:g} points on validation (no guarantee)",
        on_click=apply_preset,
        args=("optimistic", PRESET_DROP),
        key="preset_optimistic",
        width="stretch",
        help=f"The cheapest per-exit thresholds that stay within {PRESET_DROP:g} points on the validation split. "
        f"Nothing bounds them on new data: there the drop scatters around {PRESET_DROP:g} points and breaks it often.",
    )
    if "preset_msg" in state:
        kind, message = state["preset_msg"]
        {"success": st.success, "warning": st.warning}.get(kind, st.error)(message)

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
    m2,
    f"Expected {loaded.cost_name}",
    loaded.metric_cost(summary["expected_macs"]),
    f"{100 * summary['macs_ratio']:.1f}% of full",
    help=glossary.help_text(
        "expected MACs",
        "network without exits",
        lead="Over 100% when most samples reach the last exit: they also ran every early exit's head on the way.",
    ),
)
m3.metric(f"Speed-up ({loaded.cost_name})", f"{1 / summary['macs_ratio']:.2f}x", help=glossary.help_text("MACs"))
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
        loaded.cost_name,
    ),
    width="stretch",
)
c1.caption(
    "Line: the rule over a sweep of global thresholds (Pareto points). Grey squares: each exit alone. "
    "Green diamond: the oracle, which stops each sample at the first exit that is right (reads the labels: a "
    "bound, not a rule). Red dot: the current setting. The trade-off and the oracle: Learn, step 4."
)
per_exit_accuracy = [np.nan if v is None else v for v in summary["per_exit_accuracy"]]
c2.altair_chart(charts.exit_distribution(summary["exit_distribution"], per_exit_accuracy), width="stretch")
class_names = record.info.get("class_names") or loaded.class_names
mean_exit = [np.nan if v is None else v for v in summary["per_class_mean_exit"]]
st.altair_chart(charts.per_class_exit(class_names, mean_exit, num_exits), width="stretch")


def engine_label(name: str) -> str:
    return get_engine(name).label


def measure(engine: str, images: torch.Tensor) -> list[dict]:
    """Time the early-exit runtime on `engine` against the network without exits on every installed engine, on
    `images` (n, c, h, w) under the current rule: batch 1 on one thread (the fastest setting for single images on
    a CPU), batch 256 on every thread. The speed-up is against the faster engine without exits in each row."""
    rule = make_rule(current.rule, loaded.exits, **current.rule_settings())  # with the model's trained weights
    rows = []
    for batch_size, n, threads in ((1, 200, 1), (256, 1000, None)):
        measured = measure_speedup(
            loaded.model,
            rule,
            images[:n],
            batch_size,
            rounds=1,
            temperatures=loaded.temperatures,
            threads=threads,
            engine=engine,
        )
        static = measured.static.samples_per_s if measured.static is not None else {}
        rows.append(
            {
                "batch size": batch_size,
                "threads": threads or torch.get_num_threads(),
                "images": measured.samples,
                **{f"without exits, {engine_label(name)} (images/s)": round(v) for name, v in static.items()},
                "faster without exits": engine_label(measured.static_engine),
                "without exits (images/s)": round(measured.without_exits_per_s),
                "early exit (images/s)": round(measured.early_exit_per_s),
                "measured speed-up": f"{measured.speed_up:.2f}x",
                "MACs speed-up (replayed)": f"{1 / summary['macs_ratio']:.2f}x",
            }
        )
    return rows


def measured_section() -> None:
    """The engine picker, the button that times the runtime on images the model reads, and the last timing."""
    engines = list_engines(available=True)
    engine = st.radio(
        "Early-exit engine",
        engines,
        key="speed_engine",
        format_func=engine_label,
        horizontal=True,
        help=" ".join(f"{engine_label(name)}: {get_engine(name).help}" for name in engines)
        + " The network without exits runs on every installed engine; the speed-up is against the faster.",
    )
    measured_for = (loaded.key, current.describe(), engine)
    inputs = models.measurement_inputs(loaded, 1000)  # read once for both batch sizes
    if inputs is None:
        st.caption(
            "Measuring needs images this model reads: the shipped slice holds 28x28 grayscale Fashion-MNIST "
            "images, and this model's own data is not on this server. Use `python -m aep_core run CHECKPOINT "
            "--compare --data-dir DATA` on its data instead."
        )
    elif st.button("Measure the real speed-up", key="measure_speed", icon=":material/timer:"):
        try:
            state["speed_rows"] = ((*measured_for, inputs[1]), measure(engine, inputs[0]))
        except AepError as e:
            state.pop("speed_rows", None)
            st.error(str(e))
    if "speed_rows" in state:
        (model_key, described, measured_engine, source), rows = state["speed_rows"]
        if model_key == loaded.key:
            st.dataframe(rows, hide_index=True, width="stretch")
            stale = ""
            if described != current.describe():
                stale = " Settings have changed since: measure again."
            elif measured_engine != engine:
                stale = f" The engine picked is now {engine_label(engine)}: measure again."
            baselines = " and ".join(r["faster without exits"] for r in rows)
            st.caption(
                f"Measured for {described}, early exit on {engine_label(measured_engine)}, on {source}. The "
                "network without exits runs on every installed engine in the same run, and each row's "
                f"speed-up is against the faster one ({baselines}, by batch size). The same weights run every "
                "way, BatchNorm folded. Timings vary with the machine's load; `python -m benchmarks.early_exit_speed` "
                f"takes the best of several rounds.{stale}"
            )


with st.container(border=True):
    st.markdown(
        "**Measured on this machine**: the runtime really stops computing a sample at its exit "
        "(at batch 256, exited samples leave the batch)"
    )
    if models.require_network(loaded, "measuring the real speed-up", stop=False):
        measured_section()
