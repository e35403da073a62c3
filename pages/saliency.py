"""Saliency: for one image, what every exit looks at (Captum), next to each exit's prediction."""

import streamlit as st

from aep_core.analysis.saliency import METHODS, exit_saliency, overlay
from aep_core.errors import AepError
from aep_core.preprocess import UPLOAD_TYPES, prepare_array, prepare_image
from explorer import glossary, models
from explorer.entry import run_inside_app

run_inside_app()
st.title("Saliency per exit")
st.caption(glossary.explain("exit"))
st.markdown(
    "Each exit is wrapped as its own classifier and explained with Captum. Early exits often look at "
    "coarse shape; deeper ones at finer detail."
)
loaded = models.current_model()
if loaded is None:
    st.stop()
models.require_network(loaded, "a saliency map")
names = loaded.class_names


@st.cache_data(show_spinner="Computing saliency maps...", max_entries=64)
def maps(model_key: str, image_key: str, method: str, target: int | None, _model, _x) -> list[dict]:
    return [
        {"heatmap": m.heatmap, "target": m.target, "pred": m.predicted, "p": m.probability}
        for m in exit_saliency(_model, _x, method, target)
    ]


c1, c2, c3 = st.columns([2, 2, 2])
method = c1.selectbox("Method", list(METHODS), format_func=METHODS.get, key="sal_method")
target_name = c2.selectbox("Explain the class", ["predicted class (per exit)", *names], key="sal_target")
target = None if target_name.startswith("predicted") else names.index(target_name)
source = c3.radio("Image", ["Shipped sample", "Upload"], horizontal=True, key="sal_source")
if source == "Upload":
    upload = st.file_uploader("Upload an image", type=UPLOAD_TYPES, key="sal_upload")
    if upload is None:
        st.info("Upload an image, or switch to *Shipped sample*.")
        st.stop()
    try:
        prepared = prepare_image(upload.getvalue(), loaded.image_size, loaded.in_channels, loaded.mean, loaded.std)
    except AepError as e:
        st.error(f"**{upload.name}** cannot be used: {e}")
        st.stop()
    x, preview, image_key, label = prepared.tensor, prepared.preview, models.digest(upload.getvalue()), None
else:
    images, labels = models.shipped_samples()
    if not loaded.reads_slice:
        st.info("The shipped samples do not fit this model's input; upload an image instead.")
        st.stop()
    index = st.slider("Sample", 0, len(labels) - 1, key="sal_sample")
    x, preview = prepare_array(images[index], loaded.mean, loaded.std), images[index]
    image_key, label = f"sample{index}", int(labels[index])

result = maps(loaded.key, image_key, method, target, loaded.model, x)
cols = st.columns(len(result) + 1)
cols[0].image(
    preview, caption="input" + (f" ({names[label]})" if label is not None else ""), width="stretch", clamp=True
)
for k, (col, exit_map) in enumerate(zip(cols[1:], result, strict=True)):
    col.image(
        overlay(preview, exit_map["heatmap"]),
        width="stretch",
        caption=f"exit {k}: {names[exit_map['pred']]} ({exit_map['p']:.2f})",
    )
    if target is not None:
        col.caption(f"explaining {names[exit_map['target']]}")
st.caption(
    "Brighter = more influence on the explained class. The caption under each map is that exit's own "
    "prediction and probability."
)
