"""Try an image: upload one (or pick a shipped sample), see what the model sees, every exit's answer,
and where the current exit rule stops it."""

import numpy as np
import pandas as pd
import streamlit as st

from aep_core.analysis.ood import SCORE_EXPLANATION, disagreement, final_confidence, input_reasons, ood_score
from aep_core.errors import AepError
from aep_core.exits.rules import make_rule
from aep_core.preprocess import UPLOAD_TYPES, prepare_array, prepare_image
from explorer import glossary, models
from explorer.charts import exits as charts
from explorer.entry import run_inside_app
from explorer.state import settings
from explorer.widgets import noted_metric

run_inside_app()
st.title("Try an image")
loaded = models.current_model()
if loaded is None:
    st.stop()
models.require_network(loaded, "classifying an image")
current = settings()
names = loaded.class_names

source = st.radio("Image", ["Shipped sample", "Upload"], horizontal=True, key="img_source")
label, original_size = None, None
if source == "Upload":
    upload = st.file_uploader(
        "Upload an image (PNG, JPEG, WebP, BMP, GIF, TIFF)",
        type=UPLOAD_TYPES,
        key="img_upload",
        help="Photos of clothes on a light background work: the image is made grayscale, "
        "resized and inverted to look like the training images.",
    )
    invert = st.radio(
        "Invert colours",
        ["Auto", "Yes", "No"],
        horizontal=True,
        key="img_invert",
        help="Training images show light garments on black. Auto inverts light backgrounds.",
    )
    if upload is None:
        st.info("Upload an image, or switch to *Shipped sample*.")
        st.stop()
    data = upload.getvalue()
    try:
        prepared = prepare_image(
            data,
            loaded.image_size,
            loaded.in_channels,
            loaded.mean,
            loaded.std,
            {"Auto": None, "Yes": True, "No": False}[invert],
        )
    except AepError as e:
        st.error(f"**{upload.name}** cannot be used: {e}")
        st.stop()
    x, preview, image_key = prepared.tensor, prepared.preview, models.digest(data) + invert
    original_size = prepared.original_size
    for note in prepared.notes:
        st.caption(note)
else:
    images, labels = models.shipped_samples()
    if not loaded.reads_slice:
        st.info(
            "The shipped samples are 28x28 grayscale Fashion-MNIST images; this model reads other images. Upload one."
        )
        st.stop()
    index = st.slider("Sample from the shipped Fashion-MNIST slice", 0, len(labels) - 1, key="img_sample")
    label = int(labels[index])
    x, preview, image_key = prepare_array(images[index], loaded.mean, loaded.std), images[index], f"sample{index}"

temperatures = None if loaded.temperatures is None else tuple(loaded.temperatures)
logits, confidences = models.image_outputs(loaded.key, image_key, loaded.model, x, temperatures)  # (exits, classes)
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
spec = current.spec
try:
    rule = make_rule(current.rule, loaded.exits, **current.rule_settings())
    stop, score = rule.decide_single(logits, confidences)
except AepError as e:
    st.error(str(e))
    st.stop()
cum_macs, full_macs = loaded.cum_macs, loaded.full_macs

left, right = st.columns([1, 3])
with left:
    st.image(preview, caption="What the model sees", width=200, clamp=True)
    if label is not None:
        st.caption(f"True class: **{names[label]}**")
with right:
    st.markdown(
        f"Under **{current.describe()}** this image stops at **exit {stop}** and is classified as "
        f"**{names[int(probs[stop].argmax())]}**."
    )
    m1, m2, m3 = st.columns(3)
    m1.metric("Stops at", f"exit {stop} of {len(cum_macs) - 1}")
    spent = f"{100 * cum_macs[stop] / full_macs:.0f}% of the full network"
    noted_metric(m2, "MACs spent", f"{cum_macs[stop] / 1e6:.2f} M", spent, help=glossary.help_text("MACs", "head"))
    m3.metric("Speed-up vs full network", f"{full_macs / cum_macs[stop]:.2f}x")
    st.altair_chart(charts.exit_probability_heatmap(probs, names, stop, label), width="stretch")

# "I don't know": exits' outputs far from every class seen in validation, or an image with nothing in it.
one_image = logits[:, None, :]  # (exits, 1, classes)
changes, final_p = float(disagreement(one_image)[0]), float(final_confidence(one_image)[0])
steps = len(logits) - 1
changing = (
    f"the predicted class changes at {round(changes * steps)} of {steps} steps between exits and " if steps else ""
)
why = f"{changing}the final exit is {100 * final_p:.0f}% sure of its answer"
flag = models.ood_flag_threshold(loaded.key, loaded)
verdict = None if flag is None else flag.judge(logits, preview, original_size)
with st.container(border=True):
    o1, o2 = st.columns([1, 3])
    if flag is None or verdict is None:
        reasons = input_reasons(preview, original_size)
        score = f"{float(ood_score(one_image)[0]):.3f}"
        noted_metric(o1, '"I don\'t know" score', score, None, help=SCORE_EXPLANATION)
    else:
        reasons = verdict.reasons
        note = f"threshold {flag.format(flag.value)}"
        noted_metric(o1, flag.score_name, flag.format(verdict.score), note, help=flag.explanation)
    if reasons:
        o2.warning(
            f"**This does not look like anything the model was trained on**: {'; '.join(reasons)}. "
            "Its answer is a guess.",
            icon=":material/help:",
        )
        o2.caption(f"For reference, {why}." + ("" if flag is None else f" Threshold: {flag.description}."))
    elif flag is None:
        o2.caption(f"No validation outputs to fit a threshold on, so only the image itself is checked; {why}.")
    else:
        o2.success(f"This looks like the images the model was trained on: {why}.", icon=":material/check:")
        o2.caption(f"Threshold: {flag.description}.")

global_setting = None if current.per_exit else current.value
st.altair_chart(
    charts.exit_scores(score, spec.score_name, global_setting, stop, not spec.lower_is_confident), width="stretch"
)
top = np.argsort(-probs, axis=1)[:, :3]
rows = [
    {
        "exit": f"exit {k}",
        "MACs (share)": f"{100 * cum_macs[k] / full_macs:.0f}%",
        **{f"top {j + 1}": f"{names[top[k, j]]} ({probs[k, top[k, j]]:.2f})" for j in range(3)},
        spec.score_name: round(float(score[k]), 3),
        "stops here": "yes" if k == stop else "",
    }
    for k in range(len(cum_macs))
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
