"""Saliency: for one image, what every exit looks at (Captum), next to each exit's prediction."""
import streamlit as st

import app_shared as shared
from aep_core.errors import AepError
from aep_core.preprocess import UPLOAD_TYPES, prepare_array, prepare_image
from aep_core.analysis.saliency import METHODS, exit_saliency, overlay

shared.ensure_entry("saliency")
st.title("Saliency per exit")
st.markdown("Each exit is wrapped as its own classifier and explained with Captum. Early exits often look at "
            "coarse shape; deeper ones at finer detail.")
lm = shared.current_model()
if lm is None:
    st.stop()
ds = lm.meta["dataset"]
names = lm.class_names


@st.cache_data(show_spinner="Computing saliency maps...", max_entries=64)
def maps(model_key: str, image_key: str, method: str, target: int | None, _model, _x) -> list[dict]:
    return [{"heatmap": m.heatmap, "target": m.target, "pred": m.predicted, "p": m.probability}
            for m in exit_saliency(_model, _x, method, target)]


c1, c2, c3 = st.columns([2, 2, 2])
method = c1.selectbox("Method", list(METHODS), format_func=METHODS.get, key="sal_method")
target_name = c2.selectbox("Explain the class", ["predicted class (per exit)"] + names, key="sal_target")
target = None if target_name.startswith("predicted") else names.index(target_name)
source = c3.radio("Image", ["Shipped sample", "Upload"], horizontal=True, key="sal_source")
if source == "Upload":
    up = st.file_uploader("Upload an image", type=UPLOAD_TYPES, key="sal_upload")
    if up is None:
        st.info("Upload an image, or switch to *Shipped sample*.")
        st.stop()
    try:
        prep = prepare_image(up.getvalue(), ds["image_size"], ds["in_channels"], ds["mean"], ds["std"])
    except AepError as e:
        st.error(f"**{up.name}** cannot be used: {e}")
        st.stop()
    x, preview, key, label = prep.tensor, prep.preview, shared.digest(up.getvalue()), None
else:
    images, labels = shared.samples()
    if ds["in_channels"] != 1 or ds["image_size"] != images.shape[-1]:
        st.info("The shipped samples do not fit this model's input; upload an image instead.")
        st.stop()
    idx = st.slider("Sample", 0, len(labels) - 1, key="sal_sample")
    x, preview, key, label = prepare_array(images[idx], ds["mean"], ds["std"]), images[idx], f"sample{idx}", int(labels[idx])

result = maps(lm.key, key, method, target, lm.model, x)
cols = st.columns(len(result) + 1)
cols[0].image(preview, caption="input" + (f" ({names[label]})" if label is not None else ""), width="stretch", clamp=True)
for k, (col, m) in enumerate(zip(cols[1:], result)):
    col.image(overlay(preview, m["heatmap"]), width="stretch",
              caption=f"exit {k}: {names[m['pred']]} ({m['p']:.2f})")
    if target is not None:
        col.caption(f"explaining {names[m['target']]}")
st.caption("Brighter = more influence on the explained class. The caption under each map is that exit's own "
           "prediction and probability.")
