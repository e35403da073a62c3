"""Try an image: upload one (or pick a shipped sample), see what the model sees, every exit's answer,
and where the current exit rule stops it."""
import numpy as np
import pandas as pd
import streamlit as st

import app_shared as shared
from explorer.charts import exits as charts
from aep_core.errors import AepError
from aep_core.analysis.ood import disagreement, final_confidence, ood_score
from aep_core.exits.rules import POLICY_INFO
from aep_core.preprocess import UPLOAD_TYPES, prepare_array, prepare_image

shared.ensure_entry("try_image")
st.title("Try an image")
lm = shared.current_model()
if lm is None:
    st.stop()
s = shared.settings()
ds = lm.meta["dataset"]
names = lm.class_names

source = st.radio("Image", ["Shipped sample", "Upload"], horizontal=True, key="img_source")
x = preview = label = None
key = ""
if source == "Upload":
    up = st.file_uploader("Upload an image (PNG, JPEG, WebP, BMP, GIF, TIFF)", type=UPLOAD_TYPES, key="img_upload",
                          help="Photos of clothes on a light background work: the image is made grayscale, "
                               "resized and inverted to look like the training images.")
    invert = st.radio("Invert colours", ["Auto", "Yes", "No"], horizontal=True, key="img_invert",
                      help="Training images show light garments on black. Auto inverts light backgrounds.")
    if up is None:
        st.info("Upload an image, or switch to *Shipped sample*.")
        st.stop()
    data = up.getvalue()
    try:
        prep = prepare_image(data, ds["image_size"], ds["in_channels"], ds["mean"], ds["std"],
                             {"Auto": None, "Yes": True, "No": False}[invert])
    except AepError as e:
        st.error(f"**{up.name}** cannot be used: {e}")
        st.stop()
    x, preview, key = prep.tensor, prep.preview, shared.digest(data) + invert
    for note in prep.notes:
        st.caption(note)
else:
    images, labels = shared.samples()
    if ds["in_channels"] != 1 or ds["image_size"] != images.shape[-1]:
        st.info("The shipped samples are 28x28 grayscale Fashion-MNIST images; this model reads other images. Upload one.")
        st.stop()
    idx = st.slider("Sample from the shipped Fashion-MNIST slice", 0, len(labels) - 1, key="img_sample")
    label = int(labels[idx])
    x, preview, key = prepare_array(images[idx], ds["mean"], ds["std"]), images[idx], f"sample{idx}"

logits, conf = shared.image_outputs(lm.key, key, lm.model, x, None if lm.temperatures is None else tuple(lm.temperatures))
probs = np.exp(logits - logits.max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
try:
    stop, score = shared.stop_exit_for(lm, logits, conf, s)
except AepError as e:
    st.error(str(e))
    st.stop()
cum = [e["cum_macs"] for e in lm.meta["cost"]["exits"]]
full = lm.meta["cost"]["full_macs"]

left, right = st.columns([1, 3])
with left:
    st.image(preview, caption="What the model sees", width=200, clamp=True)
    if label is not None:
        st.caption(f"True class: **{names[label]}**")
with right:
    st.markdown(f"Under **{s.describe()}** this image stops at **exit {stop}** and is classified as "
                f"**{names[int(probs[stop].argmax())]}**.")
    m1, m2, m3 = st.columns(3)
    m1.metric("Stops at", f"exit {stop} of {len(cum) - 1}")
    m2.metric("MACs spent", f"{cum[stop] / 1e6:.2f} M", f"{100 * cum[stop] / full:.0f}% of the full network", delta_color="off", delta_arrow="off")
    m3.metric("Speed-up vs full network", f"{full / cum[stop]:.2f}x")
    st.altair_chart(charts.exit_probability_heatmap(probs, names, stop, label), width="stretch")

# "I don't know": exits that keep changing their mind, and an unsure final exit, mean an unfamiliar input.
one = logits[:, None, :]  # (exits, 1, classes)
ood, changes, final_p = float(ood_score(one)[0]), float(disagreement(one)[0]), float(final_confidence(one)[0])
ood_thr = shared.ood_threshold(lm.key, lm)
with st.container(border=True):
    o1, o2 = st.columns([1, 3])
    o1.metric("\"I don't know\" score", f"{ood:.3f}", None if ood_thr is None else f"threshold {ood_thr[0]:.3f}",
              delta_color="off", delta_arrow="off",
              help="0.5 x the share of consecutive exits that change class + 0.5 x (1 - the final exit's top "
                   "probability). Higher: less like the training images.")
    steps = len(logits) - 1
    why = (f"the predicted class changes at {round(changes * steps)} of {steps} steps between exits and " if steps else "") \
        + f"the final exit is {100 * final_p:.0f}% sure of its answer"
    if ood_thr is None:
        o2.caption(f"No evaluation outputs to set a threshold from; {why}.")
    elif ood > ood_thr[0]:
        o2.warning(f"**This does not look like anything the model was trained on**: {why}. Its answer is a guess.",
                   icon=":material/help:")
        o2.caption(f"Flagged because the score is above the threshold ({ood_thr[1]}).")
    else:
        o2.success(f"This looks like the images the model was trained on: {why}.", icon=":material/check:")
        o2.caption(f"Threshold: {ood_thr[1]}.")

info = POLICY_INFO[s.rule]
score_name = {"max_probability": "max probability", "entropy": "normalised entropy", "aep_ensemble": "ensemble max probability",
              "eenet_confidence": "EENet confidence", "patience": "exits in a row agreeing"}[s.rule]
thr = None if s.per_exit else s.threshold
st.altair_chart(charts.exit_scores(score, score_name, thr, stop, s.rule != "entropy"), width="stretch")
top = np.argsort(-probs, axis=1)[:, :3]
rows = [{"exit": f"exit {k}", "MACs (share)": f"{100 * cum[k] / full:.0f}%",
         **{f"top {j + 1}": f"{names[top[k, j]]} ({probs[k, top[k, j]]:.2f})" for j in range(3)},
         score_name: round(float(score[k]), 3), "stops here": "yes" if k == stop else ""} for k in range(len(cum))]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
