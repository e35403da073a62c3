"""Ensemble weights (AEP): a weight per exit, the weighting-scheme presets, and the ensemble's accuracy
when cut after each exit beside each exit alone."""

import numpy as np
import streamlit as st

from aep_core.exits.rules import resolve_ensemble_weights
from aep_core.training.weighting import SCHEMES, scheme_weights
from explorer import glossary, models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app

run_inside_app()
st.title("Ensemble weights (AEP)")
st.markdown(
    "AEP predicts with a **weighted average of the softmax outputs of exits 0..k**. Deeper exits are "
    "usually better, so they usually weigh more; the training weights come from the model's weighting scheme."
)
st.caption(glossary.explain("ensemble") + " " + glossary.explain("AEP"))
loaded, record = models.model_and_record()
num_exits = record.num_exits
state = st.session_state
cost = loaded.macs_fractions
# trainable schemes fit their weights after training: the "trained" preset shows a model's own
FIXED_SCHEMES = [name for name, spec in SCHEMES.items() if not spec.trainable]


def preset_weights(name: str) -> np.ndarray:
    """(exits,) weights of a preset: the model's trained weights, or a weighting scheme's."""
    if name == "trained":
        return resolve_ensemble_weights(None, loaded.exits)
    return scheme_weights(name, num_exits, costs=cost).numpy()


def set_preset(name: str) -> None:
    weights = preset_weights(name)
    weights = weights / weights.max()  # sliders show weights relative to the largest
    state["ens_exact"] = [float(v) for v in weights]
    for k in range(num_exits):
        state[f"w_{k}"] = round(float(weights[k]), 3)


if len(state.get("ens_exact", [])) != num_exits or state.get("ens_model") != loaded.key:
    state["ens_model"] = loaded.key
    set_preset("trained")
presets = ["trained", *FIXED_SCHEMES]
for column, name in zip(st.columns(len(presets)), presets, strict=True):
    if name == "trained":
        label, help_text = "Trained", "The model's own training weights"
    else:
        label, help_text = SCHEMES[name].label, f"{SCHEMES[name].label} scheme: {SCHEMES[name].help}"
    column.button(label, on_click=set_preset, args=(name,), key=f"preset_{name}", width="stretch", help=help_text)
weight_columns = st.columns(num_exits)
exact = state["ens_exact"]
values = []
for k in range(num_exits):
    state.setdefault(f"w_{k}", round(exact[k], 3))
    moved = weight_columns[k].slider(f"exit {k}", 0.0, 1.0, step=0.001, format="%.3f", key=f"w_{k}")
    values.append(exact[k] if moved == round(exact[k], 3) else moved)  # a preset's exact weight until the slider moves
weights = np.array(values)
if weights.sum() <= 0 or weights[0] <= 0:
    st.warning("Give exit 0 a positive weight (the ensemble of exits 0..0 needs it).")
    weights[0] = max(weights[0], 1e-6)

single = record.exit_accuracy()
ensemble = record.ensemble_accuracy(weights)
left, right = st.columns([1, 2])
left.altair_chart(charts.weights_bar(weights), width="stretch")
right.altair_chart(charts.ensemble_vs_single(single, ensemble, cost, loaded.cost_name), width="stretch")
best = int(np.argmax(ensemble - single))
gain = (
    f"The biggest gain over a single exit is at exit {best}: {100 * (ensemble[best] - single[best]):+.2f} points."
    if ensemble[best] > single[best]
    else "With these weights the ensemble does not beat the single exits: try "
    "giving the early exits more weight, or another preset."
)
st.markdown(
    f"Cut after exit **{num_exits - 1}**: the ensemble reaches **{100 * ensemble[-1]:.2f}%** against "
    f"**{100 * single[-1]:.2f}%** for the final exit alone. {gain}"
)
st.dataframe(
    {
        "exit": list(range(num_exits)),
        "weight": np.round(weights / weights.sum(), 4),
        "exit alone": np.round(single, 4),
        "ensemble 0..k": np.round(ensemble, 4),
        f"{loaded.cost_name} share": np.round(cost, 3),
    },
    hide_index=True,
)
