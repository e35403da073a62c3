"""Pruning savings (AEP): for each cut point, parameters, MACs, measured latency and accuracy; the
chosen cut highlighted; the pruned checkpoint to download."""

from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from aep_core.analysis.pruning import choose_cut
from aep_core.cost import measure_latency
from aep_core.errors import AepError
from aep_core.exits.rules import resolve_ensemble_weights
from explorer import models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app

run_inside_app()
st.title("Pruning savings (AEP)")
st.markdown(
    "AEP keeps the exits up to the cut whose **ensemble** is best on the validation split and drops every "
    "block and head after it: a smaller model for good, not just for easy inputs."
)
loaded, record = models.model_and_record()
if loaded.model.head_kind != "aep":
    st.info(
        "AEP pruning needs a model with AEP exit heads (trained with the AEP method or a survey method); "
        "this one has EENet heads."
    )
    st.stop()
val = loaded.val if loaded.val is not None else record
weights = resolve_ensemble_weights(None, loaded.exits)  # trained (uniform for a model trained without)


@st.cache_data(show_spinner="Pruning at every cut and timing each model...", max_entries=16)
def cut_table(model_key: str, _loaded: models.LoadedModel) -> list[dict]:
    x = torch.zeros(1, *_loaded.input_shape)
    rows = []
    for k in range(_loaded.num_exits):
        pruned = _loaded.pruned(k)
        rows.append(
            {
                "cut": f"exit {k}",
                "parameters": pruned.params_with_exits,
                "MACs": pruned.cum_macs[-1],
                "latency (ms)": 1e3 * measure_latency(lambda model=pruned.model: model(x), repeats=15, warmup=3),
            }
        )
    return rows


tolerance = st.slider(
    "Tolerance (accuracy points below the best ensemble a cut may lose)",
    0.0,
    5.0,
    0.0,
    0.1,
    key="prune_tol",
    help="0 picks the most accurate cut; a tolerance picks the smallest cut within it.",
)
try:
    best = choose_cut(val, weights, tolerance / 100)
    rows = cut_table(loaded.key, loaded)
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
for k, row in enumerate(rows):
    row["accuracy"] = float(ensemble[k])
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
    "Latency, batch 1",
    f"{kept['latency (ms)']:.2f} ms",
    f"{100 * (kept['latency (ms)'] / everything['latency (ms)'] - 1):+.0f}% vs all exits",
    delta_color="inverse",
)
m4.metric(
    f"Accuracy ({record.info.get('split', 'test')})",
    f"{100 * ensemble[cut]:.2f}%",
    f"{100 * (ensemble[cut] - ensemble[-1]):+.2f} pts vs all exits",
)
table = pd.DataFrame(rows)
table["accuracy"] = (100 * table["accuracy"]).round(2)
table["latency (ms)"] = table["latency (ms)"].round(3)
table["chosen"] = ["yes" if k == cut else "" for k in range(len(rows))]
st.dataframe(table, hide_index=True, width="stretch")
st.caption(
    "Accuracy is the AEP ensemble of the kept exits on the saved test outputs; latency is the median of 15 "
    "runs of one image on this server's CPU."
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
