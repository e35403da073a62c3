"""Overview: what early exits are, the three methods, and the loaded model: a strip of stages and exits, or a
cascade's member networks."""

import streamlit as st

from aep_core.models.cascade import CASCADE, member_descriptions
from explorer import glossary, models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app
from explorer.state import settings

run_inside_app()
st.title("Early-Exit Explorer")
st.markdown(
    "An **early-exit network** adds small classifiers (*exits*) part-way through a deep network. "
    "Easy inputs are answered by an early exit and skip the rest of the network; hard inputs travel on to "
    "deeper exits. An **exit rule** (a confidence threshold, say) decides where each input stops, trading "
    "accuracy for compute. Move the threshold in the sidebar and every page follows."
)
c1, c2, c3 = st.columns(3)
c1.markdown(
    "#### AEP\n*Anticipate, Ensemble and Prune.* All exits train jointly with a weighted loss "
    "(uniform, linear, geometric, cost-proportional or learned weights), so early layers *anticipate* "
    "being used alone. At test time exits 0..k are averaged as an **ensemble**, and layers after the "
    "last useful exit are **pruned**, shrinking the model for good."
)
c2.markdown(
    "#### EENets\nEach exit has a classifier **and a learned confidence branch**. Training uses a "
    "cost-aware loss that rewards stopping early when the exit is right, so the network itself learns "
    "when to leave. At run time a sample stops at the first exit whose confidence passes a threshold."
)
c3.markdown(
    "#### The survey's taxonomy\nScardapane et al. organise early exits by **where** exits go "
    "(placement), **how** they train (joint, layer-wise, classifier-wise, self-distillation) and "
    "**how** a sample decides to stop (max probability, entropy, patience, learned rules)."
)


def network_overview(loaded: models.LoadedModel) -> None:
    """The model's backbone as a strip of blocks and exits, and its checkpoint's facts."""
    stages = getattr(loaded.model.backbone, "block_stage", None)
    network, heads = loaded.meta.cost.macs_split()
    st.altair_chart(
        charts.exit_strip(
            loaded.num_blocks,
            loaded.model.exit_blocks,
            network,
            loaded.validation_accuracy,
            stages,
            heads_fraction=heads,
        ),
        width="stretch",
    )
    st.caption(
        "Coloured boxes are the backbone's blocks (one colour per stage); each dot is an exit, labelled with "
        "what a sample pays to stop there, as shares of the MACs (multiply-accumulates, the unit of compute) of the "
        "network without exits: the network's own layers it ran, plus the heads of the exits it passed, which the "
        "network without exits does not have (so the last exit costs a little over 100%). Then that exit's "
        "validation accuracy."
    )
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Backbone", loaded.backbone)
    m2.metric("Exits", loaded.num_exits)
    m3.metric(
        "Full network MACs", f"{loaded.full_macs / 1e6:.2f} M", help=glossary.help_text("MACs", "network without exits")
    )
    m4.metric("Parameters (with exits)", f"{loaded.params_with_exits / 1e3:.0f} k")
    weighting = f" ({loaded.weighting} weights)" if loaded.weighting else ""
    st.caption(
        f"Trained with **{loaded.training_method or '?'}**{weighting} on **{loaded.dataset_name}**. "
        f"Current exit rule: {settings().describe()}."
    )


def cascade_overview(loaded: models.LoadedModel) -> None:
    """A cascade's member networks in order: what each is, its own MACs, what a sample answered by it pays and its
    validation accuracy."""
    members = member_descriptions(loaded.meta.model.backbone_config)
    cum = list(loaded.cum_macs)
    own = [c - p for c, p in zip(cum, [0, *cum[:-1]], strict=True)]
    accuracy = loaded.validation_accuracy
    table = {
        "exit": [f"exit {k}" for k in range(loaded.num_exits)],
        "member network": members[: loaded.num_exits],
        "its MACs (M)": [round(m / 1e6, 2) for m in own],
        "paid when answered here": [f"{100 * f:.1f}%" for f in loaded.macs_fractions],
    }
    if accuracy is not None:
        table["validation accuracy %"] = [round(100 * float(a), 2) for a in accuracy]
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(
        "A **cascade**: separate networks that share no layers, small first. Each answers at its own exit when the "
        "exit rule is sure enough and otherwise passes the image to the next, so an image answered at exit k paid "
        "for members 0..k, shown as a share of the MACs of the network without exits, the last member (answering "
        "at the last exit costs more than 100%: the earlier members ran too)."
    )
    m1, m2, m3 = st.columns(3)
    m1.metric("Members", loaded.num_exits)
    m2.metric(
        "Last member's MACs",
        f"{loaded.full_macs / 1e6:.2f} M",
        help=glossary.help_text("MACs", "network without exits"),
    )
    m3.metric("Parameters (all members)", f"{loaded.params_with_exits / 1e3:.0f} k")
    st.caption(f"Built from **{loaded.dataset_name}** models. Current exit rule: {settings().describe()}.")


def outputs_overview(loaded: models.LoadedModel) -> None:
    """A per-exit outputs file's exits: what each costs, in the file's unit, and how accurate it is."""
    record = loaded.record
    splits = [(name, rec) for name, rec in (("val", loaded.val), ("test", loaded.test)) if rec is not None]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Exits", loaded.num_exits)
    m2.metric(
        "Full network cost",
        loaded.format_cost(loaded.full_macs),
        help="The cost of the network without exits, as the file gives it: every cost ratio is a share of it.",
    )
    m3.metric("Samples", " / ".join(f"{rec.num_samples:,} {name}" for name, rec in splits))
    m4.metric(f"Final exit accuracy ({record.info.get('split', 'test')})", f"{100 * record.exit_accuracy()[-1]:.2f}%")
    table = {
        "exit": [f"exit {k}" for k in range(loaded.num_exits)],
        "cost": [loaded.format_cost(c) for c in loaded.cum_macs],
        "share of the full network": [f"{100 * f:.1f}%" for f in loaded.macs_fractions],
    }
    for name, rec in splits:
        table[f"{name} accuracy %"] = [round(100 * float(a), 2) for a in rec.exit_accuracy()]
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(
        f"Each exit's cost is what a sample answered there costs, as the outputs file gives it ({loaded.cost_name}), "
        f"and its share of the network without exits. {len(loaded.class_names)} classes. "
        f"Current exit rule: {settings().describe()}."
    )


loaded = models.current_model()
if loaded is not None:
    st.subheader(f"The loaded model: {loaded.label}")
    if not loaded.has_network:
        outputs_overview(loaded)
    elif loaded.meta.model.backbone == CASCADE:
        cascade_overview(loaded)
    else:
        network_overview(loaded)
    for note in loaded.notes:
        st.info(note)
st.page_link(
    "pages/learn.py",
    label="New to early exits? The Learn page walks through the ideas in ten steps.",
    icon=":material/menu_book:",
)
st.markdown(
    "**Where next?** *Try an image* to see one input travel through the exits, *Thresholds* to tune the "
    "accuracy/compute trade-off, *Ensemble weights* and *Pruning savings* for AEP, *Saliency* for what each "
    "exit looks at, and *Train* to train your own model in the browser."
)
