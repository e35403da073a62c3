"""Ensemble weights (AEP): a weight per exit, the weighting-scheme presets, and the ensemble's accuracy
when cut after each exit beside each exit alone."""
import numpy as np
import streamlit as st

import app_shared as shared
from explorer.charts import exits as charts
from aep_core.training.weighting import cost_weights, geometric_weights, linear_weights, uniform_weights

shared.ensure_entry("ensemble")
st.title("Ensemble weights (AEP)")
st.markdown("AEP predicts with a **weighted average of the softmax outputs of exits 0..k**. Deeper exits are "
            "usually better, so they usually weigh more; the training weights come from the model's weighting scheme.")
lm, rec = shared.model_and_record()
E = rec.num_exits
ss = st.session_state
cost = [e["macs_fraction"] for e in lm.meta["cost"]["exits"]]
trained = lm.meta["training"].get("ensemble_weights") or uniform_weights(E).tolist()
PRESETS = {
    "trained": lambda: np.asarray(trained, dtype=float),
    "uniform": lambda: uniform_weights(E).numpy(),
    "linear": lambda: linear_weights(E).numpy(),
    "geometric": lambda: geometric_weights(E).numpy(),
    "cost": lambda: cost_weights(cost).numpy(),
}


def set_preset(name: str) -> None:
    w = PRESETS[name]()
    w = w / w.max()  # sliders show weights relative to the largest
    ss["ens_exact"] = [float(v) for v in w]
    for k in range(E):
        ss[f"w_{k}"] = round(float(w[k]), 3)


if len(ss.get("ens_exact", [])) != E or ss.get("ens_model") != lm.key:
    ss["ens_model"] = lm.key
    set_preset("trained")
cols = st.columns(len(PRESETS))
for c, name in zip(cols, PRESETS):
    c.button(name, on_click=set_preset, args=(name,), key=f"preset_{name}", width="stretch",
             help="The model's own training weights" if name == "trained" else f"aep_core.training.weighting: {name} scheme")
wcols = st.columns(E)
exact = ss["ens_exact"]
values = []
for k in range(E):
    ss.setdefault(f"w_{k}", round(exact[k], 3))
    v = wcols[k].slider(f"exit {k}", 0.0, 1.0, step=0.001, format="%.3f", key=f"w_{k}")
    values.append(exact[k] if v == round(exact[k], 3) else v)  # a preset's exact weight until the slider moves
w = np.array(values)
if w.sum() <= 0 or w[0] <= 0:
    st.warning("Give exit 0 a positive weight (the ensemble of exits 0..0 needs it).")
    w[0] = max(w[0], 1e-6)

single = rec.exit_accuracy()
ens = rec.ensemble_accuracy(w)
left, right = st.columns([1, 2])
left.altair_chart(charts.weights_bar(w), width="stretch")
right.altair_chart(charts.ensemble_vs_single(single, ens, cost), width="stretch")
best = int(np.argmax(ens - single))
gain = (f"The biggest gain over a single exit is at exit {best}: {100 * (ens[best] - single[best]):+.2f} points."
        if ens[best] > single[best] else "With these weights the ensemble does not beat the single exits: try giving "
        "the early exits more weight, or another preset.")
st.markdown(f"Cut after exit **{E - 1}**: the ensemble reaches **{100 * ens[-1]:.2f}%** against **{100 * single[-1]:.2f}%** "
            f"for the final exit alone. {gain}")
st.dataframe({"exit": list(range(E)), "weight": np.round(w / w.sum(), 4), "exit alone": np.round(single, 4),
              "ensemble 0..k": np.round(ens, 4), "MACs share": np.round(cost, 3)}, hide_index=True)
