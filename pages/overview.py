"""Overview: what early exits are, the three methods, and the loaded model as a strip of stages and exits."""
import streamlit as st

import app_shared as shared
from explorer.charts import exits as charts

shared.ensure_entry("overview")
st.title("Early-Exit Explorer")
st.markdown(
    "An **early-exit network** adds small classifiers (*exits*) part-way through a deep network. "
    "Easy inputs are answered by an early exit and skip the rest of the network; hard inputs travel on to "
    "deeper exits. An **exit rule** (a confidence threshold, say) decides where each input stops, trading "
    "accuracy for compute. Move the threshold in the sidebar and every page follows."
)
c1, c2, c3 = st.columns(3)
c1.markdown("#### AEP\n*Anticipate, Ensemble and Prune.* All exits train jointly with a weighted loss "
            "(uniform, linear, geometric, cost-proportional or learned weights), so early layers *anticipate* "
            "being used alone. At test time exits 0..k are averaged as an **ensemble**, and layers after the "
            "last useful exit are **pruned**, shrinking the model for good.")
c2.markdown("#### EENets\nEach exit has a classifier **and a learned confidence branch**. Training uses a "
            "cost-aware loss that rewards stopping early when the exit is right, so the network itself learns "
            "when to leave. At run time a sample stops at the first exit whose confidence passes a threshold.")
c3.markdown("#### The survey's taxonomy\nScardapane et al. organise early exits by **where** exits go "
            "(placement), **how** they train (joint, layer-wise, classifier-wise, self-distillation) and "
            "**how** a sample decides to stop (max probability, entropy, patience, learned rules).")

lm = shared.current_model()
if lm is not None:
    s = shared.settings()
    st.subheader(f"The loaded model: {lm.label}")
    spec, cost = lm.meta["model"], lm.meta["cost"]
    rec = lm.record
    acc = lm.val.exit_accuracy().tolist() if lm.val is not None else (lm.meta.get("metrics", {}).get("val", {}).get("exit_acc"))
    num_blocks = spec.get("num_blocks") or (max(spec["exit_blocks"]) + 1)
    stage = lm.model.backbone.block_stage if hasattr(lm.model.backbone, "block_stage") else None
    st.altair_chart(charts.exit_strip(num_blocks, lm.model.exit_blocks, [e["macs_fraction"] for e in cost["exits"]],
                                      acc, stage), width="stretch")
    st.caption("Coloured boxes are the backbone's blocks (one colour per stage); each dot is an exit, labelled with "
               "the share of the full network's MACs a sample pays to stop there and that exit's validation accuracy.")
    tr = lm.meta.get("training", {})
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Backbone", spec["backbone"])
    m2.metric("Exits", lm.model.num_exits)
    m3.metric("Full network MACs", f"{cost['full_macs'] / 1e6:.2f} M")
    m4.metric("Parameters (with exits)", f"{cost['with_exits_params'] / 1e3:.0f} k")
    st.caption(f"Trained with **{tr.get('method', '?')}**" + (f" ({tr['weighting']} weights)" if tr.get("weighting") else "")
               + f" on **{lm.meta['dataset']['name']}**. Current exit rule: {s.describe()}.")
    for note in lm.notes:
        st.info(note)
st.markdown("**Where next?** *Try an image* to see one input travel through the exits, *Thresholds* to tune the "
            "accuracy/compute trade-off, *Ensemble weights* and *Pruning savings* for AEP, *Saliency* for what each "
            "exit looks at, and *Train* to train your own model in the browser.")
