"""Pruning savings (AEP): for each cut point, parameters, MACs, measured latency and accuracy; the
chosen cut highlighted; the pruned checkpoint to download."""
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

import app_shared as shared
from explorer.charts import exits as charts
from aep_core.checkpoint import save_checkpoint
from aep_core.cost import measure_latency
from aep_core.errors import AepError
from aep_core.analysis.pruning import choose_cut, prune_model

shared.ensure_entry("pruning")
st.title("Pruning savings (AEP)")
st.markdown("AEP keeps the exits up to the cut whose **ensemble** is best on the validation split and drops every "
            "block and head after it: a smaller model for good, not just for easy inputs.")
lm, rec = shared.model_and_record()
if lm.model.head_kind != "aep":
    st.info("AEP pruning needs a model with AEP exit heads (trained with the AEP method or a survey method); "
            "this one has EENet heads.")
    st.stop()
val = lm.val if lm.val is not None else rec
w = lm.meta["training"]["ensemble_weights"]


@st.cache_data(show_spinner="Pruning at every cut and timing each model...", max_entries=16)
def cut_table(model_key: str, _model, _meta) -> list[dict]:
    ds = _meta["dataset"]
    x = torch.zeros(1, ds["in_channels"], ds["image_size"], ds["image_size"])
    rows = []
    for k in range(_model.num_exits):
        pruned, pmeta = prune_model(_model, _meta, k)
        c = pmeta["cost"]
        rows.append({"cut": f"exit {k}", "parameters": c["with_exits_params"], "MACs": c["exits"][-1]["cum_macs"],
                     "latency (ms)": 1e3 * measure_latency(lambda: pruned(x), repeats=15, warmup=3)})
    return rows


tolerance = st.slider("Tolerance (accuracy points below the best ensemble a cut may lose)", 0.0, 5.0, 0.0, 0.1,
                      key="prune_tol", help="0 picks the most accurate cut; a tolerance picks the smallest cut within it.")
try:
    best = choose_cut(val, w, tolerance / 100)
    rows = cut_table(lm.key, lm.model, lm.meta)
except AepError as e:
    st.error(str(e))
    st.stop()
cut = st.selectbox("Cut after", list(range(rec.num_exits)), index=best, format_func=lambda k: f"exit {k}" + (" (chosen)" if k == best else ""),
                   key=f"prune_cut_{best}")
ens = rec.ensemble_accuracy(w)
for k, r in enumerate(rows):
    r["accuracy"] = float(ens[k])
st.altair_chart(charts.pruning_savings([r["cut"] for r in rows], [r["parameters"] for r in rows], [r["MACs"] for r in rows],
                                       [r["latency (ms)"] for r in rows], [r["accuracy"] for r in rows], cut), width="content")
full = lm.meta["cost"]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Parameters", f"{rows[cut]['parameters'] / 1e3:.0f} k", f"{100 * (rows[cut]['parameters'] / full['with_exits_params'] - 1):+.0f}% vs all exits")
m2.metric("MACs (ensemble of kept exits)", f"{rows[cut]['MACs'] / 1e6:.2f} M", f"{100 * (rows[cut]['MACs'] / rows[-1]['MACs'] - 1):+.0f}% vs all exits")
m3.metric("Latency, batch 1", f"{rows[cut]['latency (ms)']:.2f} ms", f"{100 * (rows[cut]['latency (ms)'] / rows[-1]['latency (ms)'] - 1):+.0f}% vs all exits", delta_color="inverse")
m4.metric(f"Accuracy ({rec.info.get('split', 'test')})", f"{100 * ens[cut]:.2f}%", f"{100 * (ens[cut] - ens[-1]):+.2f} pts vs all exits")
table = pd.DataFrame(rows)
table["accuracy"] = (100 * table["accuracy"]).round(2)
table["latency (ms)"] = table["latency (ms)"].round(3)
table["chosen"] = ["yes" if k == cut else "" for k in range(len(rows))]
st.dataframe(table, hide_index=True, width="stretch")
st.caption("Accuracy is the AEP ensemble of the kept exits on the saved test outputs; latency is the median of 15 "
           "runs of one image on this server's CPU.")


@st.cache_data(show_spinner="Writing the pruned checkpoint...", max_entries=8)
def pruned_bytes(model_key: str, k: int, _model, _meta) -> bytes:
    pruned, pmeta = prune_model(_model, _meta, k)
    pmeta["pruning"].update({"source": Path(lm.path or lm.label).name, "tolerance": tolerance / 100})
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pruned.pt"
        save_checkpoint(p, pruned, pmeta)
        return p.read_bytes()


st.download_button(f"Download the model pruned after exit {cut} (.pt)", data=lambda: pruned_bytes(lm.key, cut, lm.model, lm.meta),
                   file_name=f"{Path(lm.label).name.replace(' ', '_').replace(':', '')}_pruned_exit{cut}.pt",
                   mime="application/octet-stream", key="prune_download")
