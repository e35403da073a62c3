"""Pruning savings (AEP): for each cut point, parameters, MACs, measured latency with its spread, and accuracy;
the chosen cut highlighted; the pruned checkpoint to download. For a per-exit outputs file (no network), each
cut's cost and accuracy replayed from its outputs."""

import time
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from aep_core.analysis.pruning import choose_cut
from aep_core.cost import LatencyStats, compare_latency, latency_ratio
from aep_core.errors import AepError
from aep_core.exits.rules import resolve_ensemble_weights
from explorer import models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app

LATENCY_ROUNDS = 30  # timed rounds: each times every cut once, in rotating order
LATENCY_WARMUP = 3

run_inside_app()
st.title("Pruning savings (AEP)")
st.markdown(
    "AEP keeps the exits up to the cut whose **ensemble** is best on the validation split and drops every "
    "block and head after it: a smaller model for good, not just for easy inputs."
)
loaded, record = models.model_and_record()
if loaded.has_network and loaded.model.head_kind != "aep":
    st.info(
        "AEP pruning needs a model with AEP exit heads (trained with the AEP method or a survey method); "
        "this one has EENet heads."
    )
    st.stop()
val = loaded.val if loaded.val is not None else record
weights = resolve_ensemble_weights(None, loaded.exits)  # trained (uniform for a model trained without)


@st.cache_resource(show_spinner="Pruning at every cut...", max_entries=4)
def pruned_models(model_key: str, _loaded: models.LoadedModel) -> list[models.LoadedModel]:
    """The model cut after each exit (weights only read, so one copy serves every session)."""
    return [_loaded.pruned(k) for k in range(_loaded.num_exits)]


def measured_latency(model_key: str, cuts: list[models.LoadedModel]) -> tuple[dict[str, LatencyStats], str]:
    """This session's timing of every cut (one image, batch 1) and when it was taken; timed on first use and when
    the user asks again, never shared with other sessions: a timing is one moment of one loaded machine."""
    state = st.session_state
    kept = state.get("prune_latency")
    if kept is None or kept[0] != model_key:
        x = torch.zeros(1, *cuts[0].input_shape)
        fns = {f"exit {k}": (lambda model=cut.model: model(x)) for k, cut in enumerate(cuts)}
        with st.spinner("Timing every cut, in alternation..."):
            stats = compare_latency(fns, rounds=LATENCY_ROUNDS, warmup=LATENCY_WARMUP)
        kept = state["prune_latency"] = (model_key, stats, time.strftime("%H:%M:%S"))
    return kept[1], kept[2]


def saving_note(kept: LatencyStats, everything: LatencyStats) -> tuple[str, bool]:
    """The latency change of a cut against the model with all exits, as the median per-round change and its
    interquartile range; and whether it stands out of the spread (False: the two timings' spreads overlap)."""
    if kept is everything:
        return "+0% vs all exits", False
    ratio = latency_ratio(kept, everything)
    change = (
        f"{100 * (ratio.median - 1):+.0f}% ({100 * (ratio.q1 - 1):+.0f}% to {100 * (ratio.q3 - 1):+.0f}%) vs all exits"
    )
    return change, not kept.overlaps(everything)


def spread_ms(stats: LatencyStats) -> str:
    """The interquartile range in milliseconds, e.g. '1.05–1.21'."""
    return f"{1e3 * stats.q1:.3f}–{1e3 * stats.q3:.3f}"


tolerance = st.slider(
    "Tolerance (accuracy points below the best ensemble a cut may lose)",
    0.0,
    5.0,
    0.0,
    0.1,
    key="prune_tol",
    help="0 picks the most accurate cut; a tolerance picks the smallest cut within it.",
)


def replayed_cuts(best: int) -> None:
    """Each cut's cost and AEP ensemble accuracy replayed from the saved outputs (no network to cut)."""
    ensemble = record.ensemble_accuracy(weights)
    split = record.info.get("split", "test")
    st.dataframe(
        {
            "cut": [f"exit {k}" for k in range(record.num_exits)],
            "cost": [loaded.format_cost(c) for c in loaded.cum_macs],
            f"{loaded.cost_name} share": [f"{100 * f:.1f}%" for f in loaded.macs_fractions],
            f"ensemble accuracy % ({split})": [round(100 * float(a), 2) for a in ensemble],
            "chosen": ["yes" if k == best else "" for k in range(record.num_exits)],
        },
        hide_index=True,
        width="stretch",
    )
    st.caption(
        f"The chosen cut, exit {best}, keeps {loaded.format_cost(loaded.cum_macs[best])} of "
        f"{loaded.format_cost(loaded.cum_macs[-1])} for {100 * ensemble[best]:.2f}% accuracy ({split}) against "
        f"{100 * ensemble[-1]:.2f}% with every exit: replayed from the saved outputs, chosen on the validation split."
    )


try:
    best = choose_cut(val, weights, tolerance / 100)
except AepError as e:
    st.error(str(e))
    st.stop()
if not loaded.has_network:
    replayed_cuts(best)
    models.require_network(loaded, "the cut model itself (its parameters, latency and checkpoint)")
try:
    cuts = pruned_models(loaded.key, loaded)
    latency, measured_at = measured_latency(loaded.key, cuts)
except AepError as e:
    st.error(str(e))
    st.stop()
cut = st.selectbox(
    "Cut after",
    list(range(record.num_exits)),
    index=best,
    format_func=lambda k: f"exit {k}" + (" (chosen)" if k == best else ""),
    key=f"prune_cut_{best}",
)
ensemble = record.ensemble_accuracy(weights)
timings = list(latency.values())
rows = [
    {
        "cut": f"exit {k}",
        "parameters": pruned.params_with_exits,
        "MACs": pruned.cum_macs[-1],
        "latency (ms)": 1e3 * timings[k].median,
        "latency IQR (ms)": spread_ms(timings[k]),
        "accuracy": float(ensemble[k]),
    }
    for k, pruned in enumerate(cuts)
]
st.altair_chart(
    charts.pruning_savings(
        [r["cut"] for r in rows],
        [r["parameters"] for r in rows],
        [r["MACs"] for r in rows],
        [r["latency (ms)"] for r in rows],
        [r["accuracy"] for r in rows],
        cut,
    ),
    width="content",
)
kept, everything = rows[cut], rows[-1]
change, clear = saving_note(timings[cut], timings[-1])
m1, m2, m3, m4 = st.columns(4)
m1.metric(
    "Parameters",
    f"{kept['parameters'] / 1e3:.0f} k",
    f"{100 * (kept['parameters'] / loaded.params_with_exits - 1):+.0f}% vs all exits",
)
m2.metric(
    "MACs (ensemble of kept exits)",
    f"{kept['MACs'] / 1e6:.2f} M",
    f"{100 * (kept['MACs'] / everything['MACs'] - 1):+.0f}% vs all exits",
)
m3.metric(
    "Latency, batch 1 (median)",
    f"{kept['latency (ms)']:.2f} ms",
    change,
    delta_color="inverse" if clear else "off",
    delta_arrow="auto" if clear else "off",
    help=f"Interquartile range {kept['latency IQR (ms)']} ms; the change is the median of the per-round ratios to "
    "the model with all exits, with their interquartile range.",
)
m4.metric(
    f"Accuracy ({record.info.get('split', 'test')})",
    f"{100 * ensemble[cut]:.2f}%",
    f"{100 * (ensemble[cut] - ensemble[-1]):+.2f} pts vs all exits",
)
if cut != len(rows) - 1 and not clear:
    st.info(
        f"The latency of the cut after exit {cut} ({kept['latency IQR (ms)']} ms) and of the model with all exits "
        f"({everything['latency IQR (ms)']} ms) overlap: on this machine, at this moment, the difference is within "
        "the measurement's spread."
    )
table = pd.DataFrame(rows)
table["accuracy"] = (100 * table["accuracy"]).round(2)
table["latency (ms)"] = table["latency (ms)"].round(3)
table["chosen"] = ["yes" if k == cut else "" for k in range(len(rows))]
st.dataframe(table, hide_index=True, width="stretch")
c1, c2 = st.columns([4, 1], vertical_alignment="center")
c1.caption(
    "Accuracy is the AEP ensemble of the kept exits on the saved test outputs. Latency is one image on this "
    f"server's CPU, measured for this session at {measured_at}: the median of {LATENCY_ROUNDS} rounds that each "
    f"time every cut once, in rotating order, after {LATENCY_WARMUP} warm-up rounds; the IQR is the middle half of "
    "the rounds. Other sessions running at the same time slow it down."
)
c2.button(
    "Measure again",
    key="prune_remeasure",
    on_click=lambda: st.session_state.pop("prune_latency", None),
    help="Time every cut again (the timing above is this session's and does not update on its own).",
)


@st.cache_data(show_spinner="Writing the pruned checkpoint...", max_entries=8)
def pruned_bytes(model_key: str, cut: int, tolerance: float, _loaded: models.LoadedModel) -> bytes:
    return _loaded.pruned(cut, tolerance).checkpoint_bytes()


file_stem = Path(loaded.label).name.replace(" ", "_").replace(":", "")
st.download_button(
    f"Download the model pruned after exit {cut} (.pt)",
    data=lambda: pruned_bytes(loaded.key, cut, tolerance / 100, loaded),
    file_name=f"{file_stem}_pruned_exit{cut}.pt",
    mime="application/octet-stream",
    key="prune_download",
)
