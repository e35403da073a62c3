"""Calibration: does an exit that says "90% sure" get 90% right? Reliability diagrams and ECE per exit,
before and after per-exit temperature scaling (fitted on the validation split, shown on the test split)."""

import pandas as pd
import streamlit as st

from aep_core.analysis.calibration import DEFAULT_BINS, exit_calibration, scale_record
from aep_core.errors import AepError
from explorer import glossary, models
from explorer.charts import calibration as calibration_charts
from explorer.entry import run_inside_app
from explorer.state import settings

run_inside_app()
st.title("Calibration")
st.markdown(
    "A threshold of 0.9 on an exit's top probability means *90% sure* only if that exit is **calibrated**: "
    "among the inputs it gives 0.9, about 90% should be right. Exits of a jointly trained network are often "
    "over-confident at one depth and under-confident at another. **Temperature scaling** divides each "
    "exit's logits by one number T (fitted on the validation split by minimising the negative "
    "log-likelihood): T > 1 softens an over-confident exit, T < 1 sharpens an under-confident one, and no "
    "prediction changes. Turn on *Calibrated outputs* in the sidebar to use the scaled outputs on every page."
)
loaded = models.current_model(calibrated=False)
if loaded is None:
    st.stop()
record = models.require_record(loaded)
if record is None:
    st.stop()
n_bins = int(
    st.number_input(
        "Confidence bins",
        min_value=1,
        max_value=50,
        value=DEFAULT_BINS,
        step=1,
        key="cal_bins",
        help="Equal-width bins of the top probability used by ECE, MCE and the diagrams.",
    )
)
try:
    source = models.temperature_source(loaded)
    temperatures, where = source.temperatures, source.description
except AepError as e:
    st.error(str(e))
    temperatures, where = None, "none"


@st.cache_data(show_spinner="Measuring calibration...", max_entries=64)
def measure(
    model_key: str, bins: int, temperatures: tuple[float, ...] | None, _record
) -> tuple[list[dict], list[dict] | None]:
    before = [m.summary() for m in exit_calibration(_record, bins)]
    if temperatures is None:
        return before, None
    return before, [m.summary() for m in exit_calibration(scale_record(_record, temperatures), bins)]


before, after = measure(loaded.key, n_bins, None if temperatures is None else tuple(temperatures), record)
split = record.info.get("split", "test")
if temperatures is None:
    st.info(f"No temperature scaling for this model: {where}. Showing its uncalibrated outputs only.")
else:
    st.caption(
        f"Temperatures {', '.join(f'{t:.3f}' for t in temperatures)} (exit 0 first), {where}. "
        f"Measured on {record.num_samples:,} {split} outputs."
    )
if settings().calibrated:
    st.caption(
        "The sidebar's *Calibrated outputs* switch is on: the other pages use the scaled outputs. "
        "This page always shows both."
    )

ece_before = [m["ece"] for m in before]
ece_after = None if after is None else [m["ece"] for m in after]
m1, m2, m3 = st.columns(3)
m1.metric(
    "Mean ECE over exits, uncalibrated",
    f"{100 * sum(ece_before) / len(ece_before):.2f}%",
    help=glossary.help_text("ECE", "calibration", "temperature scaling"),
)
if ece_after is not None:
    m2.metric(
        "Mean ECE over exits, scaled",
        f"{100 * sum(ece_after) / len(ece_after):.2f}%",
        f"{100 * (sum(ece_after) - sum(ece_before)) / len(ece_before):+.2f} pts",
        delta_color="inverse",
    )
m3.metric(
    "Final exit ECE", f"{100 * ece_before[-1]:.2f}%" + ("" if ece_after is None else f" → {100 * ece_after[-1]:.2f}%")
)

rows = []
for k, unscaled in enumerate(before):
    scaled = None if after is None else after[k]
    row = {
        "exit": f"exit {k}",
        "temperature": None if temperatures is None else round(temperatures[k], 3),
        "accuracy %": round(100 * unscaled["accuracy"], 2),
        "ECE %": round(100 * unscaled["ece"], 2),
    }
    if scaled is not None:
        row["ECE % scaled"] = round(100 * scaled["ece"], 2)
    row["MCE %"] = round(100 * unscaled["mce"], 2)
    if scaled is not None:
        row["MCE % scaled"] = round(100 * scaled["mce"], 2)
    row["NLL"] = round(unscaled["nll"], 4)
    if scaled is not None:
        row["NLL scaled"] = round(scaled["nll"], 4)
    row["Brier"] = round(unscaled["brier"], 4)
    if scaled is not None:
        row["Brier scaled"] = round(scaled["brier"], 4)
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(
    "ECE: the bins' mean |accuracy − confidence|, weighted by their share of samples. MCE: the largest gap over "
    "non-empty bins. NLL: mean −log p(true class). Brier: mean squared distance between the probabilities and "
    "the one-hot label. Lower is better for all four; scaling minimises the validation NLL, so ECE can rise on "
    "an exit that is barely better than chance."
)
st.altair_chart(calibration_charts.ece_per_exit(ece_before, ece_after), width="stretch")
st.subheader("Reliability diagrams")
st.altair_chart(
    calibration_charts.reliability_grid(
        [m["bins"] for m in before], None if after is None else [m["bins"] for m in after], columns=min(3, len(before))
    ),
    width="content",
)
st.caption(
    "Each point is a confidence bin (size: how many samples fall in it): its mean top probability against the "
    "share of those samples classified right. On the dashed diagonal the exit means what it says; below it, "
    "the exit is over-confident; above it, under-confident."
)
