"""Learn: a guided lesson on early exits in ten steps, each with a few plain sentences, one widget on the shipped
models and test images, a question with instant feedback and a link to the full page. The step lives in the URL
(`?step=N`), so a teacher can link to any step."""

import numpy as np
import pandas as pd
import streamlit as st

from aep_core.errors import AepError
from aep_core.exits.rules import RuleResult
from explorer import glossary
from explorer import lesson as L
from explorer.charts import calibration as calibration_charts
from explorer.charts import exits as charts
from explorer.entry import run_inside_app
from explorer.lesson import pct
from explorer.widgets import noted_metric

STEP_KEY = "learn_at"  # session key of the step shown
JUMP_KEY = "learn_jump"  # the selectbox that jumps to a step
WRITTEN_KEY = "_learn_url_step"  # the `step` value this page last wrote into the URL

run_inside_app()
st.title("Learn: early exits in ten steps")
st.caption(
    f"Every step uses the shipped model **{L.LESSON_MODEL}** and its saved outputs on the Fashion-MNIST test images "
    "(and a few other shipped models where a step compares), whatever the sidebar's model is. Nothing is trained: "
    "the numbers are replayed from outputs saved once."
)
state = st.session_state


def chosen_step() -> int:
    """The step to show: a link's `step` when the URL brings one this page did not write, else this session's."""
    raw = st.query_params.get("step")
    if raw is not None and raw != state.get(WRITTEN_KEY):
        step, note = L.parse_step(raw)
        state[STEP_KEY] = step or 1
        if note:
            st.warning(note, icon=":material/link_off:")
    if state.get(STEP_KEY) not in range(1, L.NUM_STEPS + 1):
        state[STEP_KEY] = 1
    return int(state[STEP_KEY])


def go(step: int) -> None:
    """Show `step` from the next run on."""
    state[STEP_KEY] = step


def jump() -> None:
    """Show the step picked in the jump list."""
    go(int(state[JUMP_KEY]))


def ask(question: L.Question, step: int) -> None:
    """The step's question with instant feedback on the option picked."""
    with st.container(border=True):
        answer = st.radio(f"**Question.** {question.prompt}", question.options, index=None, key=f"learn_q{step}")
        if answer is not None:
            right, why = question.feedback(answer)
            (st.success if right else st.warning)(why, icon=":material/check_circle:" if right else ":material/info:")


def images(
    data: dict, positions: list[int], class_names: list[str], result: RuleResult | None = None, per_row: int = 8
) -> None:
    """Slice images with their true class (and ✓/✗ for the answer where `result` gives one)."""
    if not positions:
        st.caption("None of the shipped slice's images.")
        return
    rows = data["indices"]
    captions = []
    for i in positions:
        name = class_names[int(data["labels"][i])]
        if result is not None:
            name += " ✓" if result.correct[rows[i]] else " ✗"
        captions.append(name)
    for start in range(0, len(positions), per_row):
        cols = st.columns(per_row)
        for col, i, caption in zip(cols, positions[start : start + per_row], captions[start:], strict=False):
            col.image(data["images"][i], caption=caption, width=72, clamp=True)


# ---- the steps ---------------------------------------------------------------------------------------


def step_1() -> L.Question:
    """What an exit is and what it costs: MACs (network and heads apart) beside measured time."""
    st.markdown(
        "A deep network gives its answer at the end. An **early-exit network** adds small classifiers part-way "
        "through, called **exits** (each one a **head** of a few layers). An input the network is already sure "
        "about can stop at an early exit and skip the rest.\n\n"
        "We count the compute it saves in **MACs**, multiply-accumulates: one *a × b + c*, the basic step of "
        "convolutions and matrix products. MACs are the same on every machine, so they compare networks fairly. "
        "Time measured on a real machine follows them only roughly: memory traffic and each layer's fixed "
        "overhead cost time too. Pick an exit and compare the two."
    )
    model, meta = L.checkpoint(L.LESSON_MODEL)
    costs = L.exit_costs(meta)
    times, measured_at = L.measured_times(L.LESSON_MODEL)
    k = st.select_slider(
        "Stop at exit",
        list(range(len(costs.macs))),
        value=0,
        key="learn_exit",
        help=glossary.help_text("exit", "head"),
    )
    stages = getattr(model.backbone, "block_stage", None)
    _, test = L.records(L.LESSON_MODEL)
    st.altair_chart(
        charts.exit_strip(
            len(model.backbone.blocks),
            model.exit_blocks,
            costs.network,
            test.exit_accuracy().tolist(),
            stages,
            stop_exit=k,
            heads_fraction=costs.heads,
        ),
        width="stretch",
    )
    m1, m2, m3 = st.columns(3)
    noted_metric(
        m1,
        f"MACs to reach exit {k}",
        f"{costs.macs[k] / 1e6:.2f} M",
        f"{pct(costs.network[k])} network + {pct(costs.heads[k], 2)} heads",
        help=glossary.help_text("MACs", "network without exits"),
    )
    noted_metric(
        m2,
        f"Measured time to exit {k}",
        f"{times.ms[k]:.2f} ms",
        f"{pct(times.share[k], 0)} of the network without exits",
        help=glossary.help_text("latency"),
    )
    noted_metric(m3, "Network without exits", f"{costs.full_macs / 1e6:.2f} M MACs", f"{times.full_ms:.2f} ms")
    st.dataframe(
        pd.DataFrame(
            {
                "exit": [f"exit {e}" for e in range(len(costs.macs))],
                "MACs share": [pct(t) for t in costs.total],
                "of which heads": [pct(h, 2) for h in costs.heads],
                "time share": [pct(t, 0) for t in times.share],
            }
        ),
        hide_index=True,
    )
    st.caption(
        "Shares are of the network without exits (100%). Each block's labels: the share of the network's own layers "
        "an image runs to reach the exit, plus the heads of the exits it passes, which the network without exits "
        f"does not have. Time: one image, batch 1, one CPU thread; the median of {L.TIMING_ROUNDS} rounds that each "
        f"time every exit and the network without exits once, measured on this server at {measured_at}. Other work "
        "on the machine moves it."
    )
    return L.heads_question(costs)


def step_2() -> L.Question:
    """Easy and hard inputs: test images that leave at each exit."""
    st.markdown(
        "Where does each image stop? An **exit rule** decides. The simplest one stops an image at the first exit "
        f"whose **top probability** (its confidence in its own answer) reaches a **threshold** t; here t = "
        f"{L.THRESHOLD:g}. Images with a clear, typical shape leave at the first exit; ambiguous ones travel on, "
        "and the hardest reach the end."
    )
    _, test = L.records(L.LESSON_MODEL)
    data = L.shipped_slice(test)
    result = L.replay_at(test)
    names = test.info.get("class_names") or [str(c) for c in range(test.logits.shape[-1])]
    left, right = st.columns([2, 3])
    left.altair_chart(charts.exit_distribution(result.exit_distribution.tolist()), width="stretch")
    with right:
        k = st.radio(
            "Show test images that stop at",
            list(range(test.num_exits)),
            format_func=lambda e: f"exit {e}" + (" (the end)" if e == test.num_exits - 1 else ""),
            horizontal=True,
            key="learn_stop_exit",
            help=glossary.help_text("exit rule", "threshold", "top probability"),
        )
        st.markdown(
            f"**{pct(result.exit_distribution[k])}** of the {test.num_samples:,} test images stop at exit {k}, and "
            f"**{pct(result.per_exit_accuracy[k])}** of those are right. Some of them (✓ right, ✗ wrong):"
        )
        images(data, L.slice_images_at_exit(result, data["indices"], k), names, result, per_row=4)
    return L.class_depth_question(result, names)


def step_3() -> L.Question:
    """Overthinking: images an early exit gets right and the final exit wrong."""
    st.markdown(
        "Is deeper always better? Not quite. Sometimes an early exit gets an image right and the final exit, after "
        "more computation, gets it wrong: the network **overthinks**. A rule that stopped those images early "
        "would be both cheaper *and* more accurate."
    )
    _, test = L.records(L.LESSON_MODEL)
    data = L.shipped_slice(test)
    over = L.overthinking(test, data["indices"])
    names = test.info.get("class_names") or [str(c) for c in range(test.logits.shape[-1])]
    st.markdown(
        f"Of the **{over.samples:,}** test images, some exit gets **{pct(over.right_somewhere)}** right, the final "
        f"exit **{pct(over.final_right)}**. **{over.overthought:,}** images "
        f"({pct(over.overthought / over.samples, 2)}) are right at an early exit and wrong at the end."
    )
    if len(over.examples) < 2:
        st.info("The shipped slice holds fewer than two overthought images to browse.")
        return L.bound_question(over)
    i = st.select_slider(
        f"Overthought images in the shipped slice ({len(over.examples)})",
        over.examples,
        format_func=lambda p: f"#{over.examples.index(p) + 1}",
        key="learn_overthought",
        help=glossary.help_text("overthinking"),
    )
    left, right = st.columns([1, 3])
    left.image(data["images"][i], caption=f"True class: {names[int(data['labels'][i])]}", width=140, clamp=True)
    right.dataframe(pd.DataFrame(L.exit_answers(test, int(data["indices"][i]), names)), hide_index=True)
    return L.bound_question(over)


def step_4() -> L.Question:
    """The trade-off: one threshold moves accuracy and compute together; the oracle bounds them."""
    st.markdown(
        "One threshold sets the trade-off. Raise it and more images travel deeper: compute rises, and so, mostly, "
        "does accuracy. Lower it and images leave early: cheaper, and less accurate. Move it and watch both "
        "numbers move together."
    )
    _, test = L.records(L.LESSON_MODEL)
    t = st.slider(
        "Threshold t (max probability)",
        0.0,
        1.0,
        L.THRESHOLD,
        0.01,
        key="learn_threshold",
        help=glossary.help_text("threshold", "expected MACs"),
    )
    result = L.replay_at(test, t)
    sweep = L.cached_sweep(L.LESSON_MODEL)
    ora_macs, ora_acc = L.oracle_point(test)
    final = float(test.exit_accuracy()[-1])
    m1, m2, m3 = st.columns(3)
    m1.metric("Accuracy", pct(result.accuracy, 2), f"{100 * (result.accuracy - final):+.2f} pts vs final exit")
    noted_metric(m2, "Compute", pct(result.macs_ratio), "of the network without exits")
    m3.metric("Speed-up (MACs)", f"{1 / result.macs_ratio:.2f}x")
    exit_cost = np.asarray(test.cum_macs, dtype=float) / test.full_macs
    st.altair_chart(
        charts.pareto_curve(
            sweep["macs"],
            sweep["accuracy"],
            (result.macs_ratio, result.accuracy),
            (exit_cost.tolist(), test.exit_accuracy().tolist()),
            sweep["pareto"],
            (ora_macs, ora_acc),
        ),
        width="stretch",
    )
    st.markdown(
        f"The green diamond is the **oracle**: it peeks at the true label and stops each image at the first exit "
        f"that is right, reaching **{pct(ora_acc, 2)}** at **{pct(ora_macs)}** of the compute. It cannot be "
        "deployed (it reads the answer), but no real rule can beat it: it shows how much room is left."
    )
    st.caption("Line: the best settings over a sweep of thresholds. Grey squares: each exit alone. Red: your setting.")
    return L.direction_question(test)


def step_5() -> L.Question:
    """Confidence is not probability: reliability before and after temperature scaling."""
    st.markdown(
        "A threshold of 0.9 means *90% sure* only if the exit is **calibrated**: among the images it gives 0.9, "
        "about 90% should be right. A **reliability diagram** shows it: each point is a group of images with "
        "similar confidence, placed at their mean confidence and their accuracy; on the diagonal the exit means "
        "what it says. **Temperature scaling** divides an exit's logits by one number T, fitted on the validation "
        "images, to bring it to the diagonal."
    )
    _, test = L.records(L.LESSON_MODEL)
    view = L.cached_calibration(L.LESSON_MODEL)
    k = st.selectbox(
        "Exit",
        list(range(test.num_exits)),
        format_func=lambda e: f"exit {e}",
        key="learn_cal_exit",
        help=glossary.help_text("calibration", "reliability diagram", "temperature scaling"),
    )
    left, right = st.columns([2, 3])
    left.altair_chart(
        calibration_charts.reliability_diagram(view.before[k]["bins"], view.after[k]["bins"], f"exit {k}", 300),
        width="content",
    )
    with right:
        noted_metric(st, "Mean confidence", pct(view.mean_confidence[k]), f"accuracy {pct(view.accuracy[k])}")
        noted_metric(
            st,
            "ECE",
            f"{pct(view.before[k]['ece'], 2)} → {pct(view.after[k]['ece'], 2)}",
            f"after scaling with T = {view.temperatures[k]:.3f}",
            help=glossary.help_text("ECE"),
        )
        st.markdown(
            f"Scaling changed **{view.changed_predictions}** of the test predictions: it moves the confidence, "
            "never the answer. T < 1 sharpens an under-confident exit, T > 1 softens an over-confident one."
        )
    return L.confidence_question(view)


def step_6() -> L.Question:
    """AEP: the ensemble of exits 0..k beside each exit alone, under different weights."""
    st.markdown(
        "**AEP** (*Anticipate, Ensemble, Prune*) trains all exits together, so early layers *anticipate* being "
        "used alone, and predicts with an **ensemble**: a weighted average of the softmax outputs of exits 0..k. "
        "Averaging helps when the exits are about as good and make different mistakes; when the early exits are "
        "much weaker, they can drag the answer down. Try different weights."
    )
    _, test = L.records(L.LESSON_MODEL)
    choices = L.weight_choices(test)
    name = st.radio("Ensemble weights", list(choices), key="learn_weights", help=glossary.help_text("AEP", "ensemble"))
    weights = choices[name]
    single, ensemble = test.exit_accuracy(), test.ensemble_accuracy(weights)
    costs = (np.asarray(test.cum_macs, dtype=float) / test.full_macs).tolist()
    st.altair_chart(charts.ensemble_vs_single(single, ensemble, costs), width="stretch")
    shown = weights / weights.sum()
    st.markdown(
        "Weights (exit 0 first): "
        + ", ".join(f"{w:.3f}" for w in shown)
        + f". With them the ensemble of all exits reaches **{pct(ensemble[-1], 2)}**, the final exit alone "
        f"**{pct(single[-1], 2)}**."
    )
    return L.uniform_question(test)


def step_7() -> L.Question:
    """Pruning: the cut chosen on validation at a tolerance, and what it saves and costs."""
    st.markdown(
        "The *prune* of AEP: keep the exits up to the one whose ensemble is best on the validation images, and cut "
        "off every block and exit after it, for good. Every image then pays less, hard ones included. A "
        "**tolerance** lets the cut lose a little accuracy for a smaller network."
    )
    val, test = L.records(L.LESSON_MODEL)
    tolerance = st.slider(
        "Tolerance (accuracy points below the best ensemble on validation)",
        0.0,
        3.0,
        0.0,
        0.1,
        key="learn_tolerance",
        help=glossary.help_text("pruning", "tolerance"),
    )
    view = L.prune_view(val, test, tolerance / 100)
    m1, m2, m3 = st.columns(3)
    noted_metric(m1, "Cut after", f"exit {view.cut}", f"{view.exits_removed} exit(s) removed")
    noted_metric(m2, "Compute of the pruned network", pct(view.macs_share), "of the model with all exits")
    m3.metric(
        "Test accuracy",
        pct(view.test_accuracy[view.cut], 2),
        f"{100 * (view.test_accuracy[view.cut] - view.test_accuracy[-1]):+.2f} pts vs all exits",
    )
    st.dataframe(
        pd.DataFrame(
            {
                "cut after": [f"exit {k}" for k in range(len(view.val_accuracy))],
                "ensemble accuracy, validation": [pct(a, 2) for a in view.val_accuracy],
                "ensemble accuracy, test": [pct(a, 2) for a in view.test_accuracy],
                "chosen": ["yes" if k == view.cut else "" for k in range(len(view.val_accuracy))],
            }
        ),
        hide_index=True,
    )
    st.caption("The cut is chosen on validation; the test column only reports.")
    return L.zero_tolerance_question(val, test)


def step_8() -> L.Question:
    """EENets: where images stop under three cost weights."""
    st.markdown(
        "An **EENet** gives every exit a second output, a **confidence branch**, that learns to say *stop here*. "
        "Its training loss adds a **cost term**: stopping late costs compute, weighted by λ. A small λ lets images "
        "travel deep; a large λ pushes them out early, even at a price in accuracy. Three EENets were trained "
        f"with different λ; each runs with the rule *confidence >= {L.EENET_THRESHOLD:g}*."
    )
    views = [L.eenet_view(name, L.checkpoint(name)[1], L.records(name)[1]) for name in L.EENETS]
    picked = st.radio(
        "Cost weight",
        list(range(len(views))),
        format_func=lambda i: L.lam_label(views[i]),
        horizontal=True,
        index=1,
        key="learn_eenet",
        help=glossary.help_text("EENet", "cost term"),
    )
    view = views[picked]
    m1, m2 = st.columns(2)
    m1.metric("Test accuracy", pct(view.accuracy, 2))
    noted_metric(m2, "Compute", pct(view.macs_ratio), "of the network without exits")
    left, right = st.columns(2)
    left.altair_chart(charts.exit_distribution(view.exit_distribution, view.exit_accuracy), width="stretch")
    right.dataframe(
        pd.DataFrame(
            {
                "exit": [f"exit {k}" for k in range(len(view.mean_confidence))],
                "mean confidence": [round(c, 3) for c in view.mean_confidence],
                "exit accuracy": [pct(a, 1) for a in view.exit_accuracy],
            }
        ),
        hide_index=True,
    )
    st.caption(f"Models {', '.join(L.EENETS)}; the confidence branch's mean output on the test images, per exit.")
    return L.earliest_question(views)


def step_9() -> L.Question:
    """Deployment: mean latency of every device/cloud split at a chosen device speed."""
    st.markdown(
        "Early exits fit a network split over machines: a **device** runs the first blocks and answers the easy "
        "images itself; the hard ones send their features over the network to the **cloud**, which runs the rest. "
        "Whether that pays depends on the device's speed, the link, and how big the features are that cross it. "
        f"Here: a cloud at {L.CLOUD_GMACS:g} GMAC/s behind a {L.LINK_MBPS:g} Mbit/s link with {L.LINK_MS:g} ms "
        f"latency, max probability >= {L.THRESHOLD:g}."
    )
    _, test = L.records(L.LESSON_MODEL)
    sizes = L.model_feature_sizes(L.LESSON_MODEL)
    speed = st.select_slider(
        "Device speed (GMAC/s)",
        list(L.DEVICE_GMACS),
        value=0.5,
        key="learn_device",
        help=glossary.help_text("tier", "split point"),
    )
    rows = L.split_latencies(test, sizes, speed)
    best = min(rows, key=lambda r: r["mean ms"])
    table = pd.DataFrame(rows).drop(columns="split")
    table["mean ms"] = table["mean ms"].round(1)
    table["p95 ms"] = table["p95 ms"].round(1)
    table["answered on the device"] = [pct(v, 0) for v in table["answered on the device"]]
    st.dataframe(table, hide_index=True, width="stretch")
    feature = sizes.exit_bytes()
    st.markdown(
        f"Fastest on average here: **{best['where']}** ({best['mean ms']:.1f} ms). The image is "
        f"**{sizes.input_bytes():,} bytes**; the feature map at exit 0 is **{int(feature[0]):,} bytes** and at "
        f"exit {len(feature) - 2} **{int(feature[-2]):,} bytes**. Handing over mid-network pays only when the "
        "features are small next to the image, or the link is fast."
    )
    return L.fastest_split_question(test, sizes)


def step_10() -> L.Question:
    """When early exits pay: the early-exit curve beside static networks and a cascade."""
    st.markdown(
        "Early exits save compute on easy images. But a fair question remains: would a **smaller ordinary "
        "network** (a **static network**, no exits) do as well for less? Or a **cascade**: a small network that "
        "answers what it is sure about and passes the rest to the big one? Below, on the same test images: the "
        "early-exit curve of the lesson's model, four shipped static networks and a cascade of the quarter-width "
        "network with that model's final exit. Every threshold on the two curves is chosen on the validation images."
    )
    _, test = L.records(L.LESSON_MODEL)
    comp = L.cached_comparison()
    small_test = L.records(L.SMALL_STATIC)[1]
    t = st.slider(
        "Cascade threshold t (the small network answers when its top probability >= t)",
        0.0,
        1.0,
        0.8,
        0.01,
        key="learn_cascade_t",
        help=glossary.help_text("cascade", "static network", "validation split"),
    )
    point, share = L.cascade_at(small_test, test, t)
    curves = {
        L.EARLY_EXIT: ([p.macs for p in comp.early_exit], [p.accuracy for p in comp.early_exit]),
        f"{L.CASCADE} ({L.STATICS[L.SMALL_STATIC].removeprefix('static, ')}, then the lesson's model)": (
            [p.macs for p in comp.cascade],
            [p.accuracy for p in comp.cascade],
        ),
    }
    points = [(p.name, p.kind, p.macs, p.accuracy) for p in comp.statics]
    points += [(f"lesson model's {p.name}", p.kind, p.macs, p.accuracy) for p in (comp.first_exit, comp.final_exit)]
    st.altair_chart(
        charts.cost_comparison(curves, points, (point.name, point.macs, point.accuracy), "the lesson's model"),
        width="stretch",
    )
    m1, m2, m3 = st.columns(3)
    m1.metric("Cascade accuracy", pct(point.accuracy, 2))
    noted_metric(m2, "Cascade compute", pct(point.macs), "of the lesson's model")
    noted_metric(m3, "Answered by the small network", pct(share), "the rest pay both networks")
    small = next(p for p in comp.statics if p.name == L.STATICS[L.SMALL_STATIC])
    first = comp.first_exit
    st.markdown(
        f"On our data the **{small.name}** network reaches **{pct(small.accuracy, 2)}** at **{pct(small.macs)}** of "
        f"the lesson model's MACs, while that model's first exit reaches **{pct(first.accuracy, 2)}** at "
        f"**{pct(first.macs)}**. Before trusting an early-exit result, ask: *against what?*"
    )
    st.caption(
        "Compute of a static network: its MACs over the lesson model's without exits. Cascade: the small network's "
        "MACs plus, for the images it passes on, the lesson model's without exits. Test accuracy throughout."
    )
    return L.cheapest_question(comp)


STEP_PAGES = [step_1, step_2, step_3, step_4, step_5, step_6, step_7, step_8, step_9, step_10]

# ---- the page ----------------------------------------------------------------------------------------

step = chosen_step()
info = L.STEPS[step - 1]
c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
state[JUMP_KEY] = step
c1.selectbox(
    "Step",
    list(range(1, L.NUM_STEPS + 1)),
    format_func=lambda n: f"{n}. {L.STEPS[n - 1].title}",
    key=JUMP_KEY,
    on_change=jump,
)
c2.progress(step / L.NUM_STEPS, text=f"Step {step} of {L.NUM_STEPS}")
st.query_params["step"] = str(step)
state[WRITTEN_KEY] = str(step)

st.subheader(f"{step}. {info.title}")
try:
    question = STEP_PAGES[step - 1]()
except AepError as e:
    st.warning(f"This step cannot be shown: {e}")
    question = None
if question is not None:
    ask(question, step)
words = glossary.terms_of_step(step)
if words:
    with st.expander("Words in this step"):
        st.markdown("\n".join(f"- {glossary.explain(t.name)}" for t in words))
st.page_link(info.page, label=f"Go further on the {info.page_title} page", icon=":material/arrow_forward:")
st.caption("The full pages use the model picked in the sidebar.")
b1, _, b2 = st.columns([1, 3, 1])
b1.button(
    "Back",
    key="learn_back",
    on_click=go,
    args=(step - 1,),
    disabled=step == 1,
    icon=":material/arrow_back:",
    width="stretch",
)
b2.button(
    "Next",
    key="learn_next",
    on_click=go,
    args=(step + 1,),
    disabled=step == L.NUM_STEPS,
    icon=":material/arrow_forward:",
    type="primary",
    width="stretch",
)
