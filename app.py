"""Early-Exit Explorer: entry point. Page config, the shared sidebar (model, exit rule, threshold),
URL query parameters for shareable links, and navigation over the pages in pages/."""
from __future__ import annotations

import streamlit as st

import app_shared as shared
from aep_core.allocator import keep_freed_buffers
from aep_core.errors import AepError
from aep_core.exits.rules import POLICY_INFO

st.set_page_config(page_title="Early-Exit Explorer", page_icon=":material/alt_route:", layout="wide")
keep_freed_buffers()

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/school:", url_path="overview", default=True),
    st.Page("pages/try_image.py", title="Try an image", icon=":material/image:", url_path="try_image"),
    st.Page("pages/thresholds.py", title="Thresholds", icon=":material/tune:", url_path="thresholds"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/speed:", url_path="calibration"),
    st.Page("pages/ensemble.py", title="Ensemble weights", icon=":material/stacked_bar_chart:", url_path="ensemble"),
    st.Page("pages/pruning.py", title="Pruning savings", icon=":material/content_cut:", url_path="pruning"),
    st.Page("pages/saliency.py", title="Saliency", icon=":material/visibility:", url_path="saliency"),
    st.Page("pages/deploy.py", title="Deploy", icon=":material/lan:", url_path="deploy"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
]
pg = st.navigation(PAGES)
shared.restore_from_url(pg, PAGES)

with st.sidebar:
    st.markdown("### :material/alt_route: Early-Exit Explorer")
    with st.expander("Upload a checkpoint (.pt)"):
        up = st.file_uploader("aep_core checkpoint", type=["pt", "pth"], key="ckpt_upload",
                              help="A checkpoint saved by aep_core. Files with pickled code are refused.")
        if up is not None and st.session_state.get("_ckpt_seen") != up.file_id:
            st.session_state["_ckpt_seen"] = up.file_id
            try:
                st.session_state["model"] = shared.add_upload(up.name, up.getvalue())
                st.session_state["_ckpt_msg"] = ("success", f"Loaded {up.name}.")
            except AepError as e:
                st.session_state["_ckpt_msg"] = ("error", f"Checkpoint refused: {e}")
        if "_ckpt_msg" in st.session_state:
            kind, msg = st.session_state["_ckpt_msg"]
            (st.success if kind == "success" else st.error)(msg)

    models = shared.available_models()
    if not models:
        st.warning("No model yet: train one on the Train page or upload a checkpoint.")
        lm = None
    else:
        if st.session_state.get("model") not in models:
            st.session_state["model"] = shared.default_model(models)
        st.selectbox("Model", models, key="model", help="Shipped checkpoints (assets/models), models trained on the "
                     "Train page, and uploaded checkpoints.")
        try:
            lm = shared.load_model(st.session_state["model"])
        except AepError as e:
            st.error(str(e))
            lm = None

    rules = [r for r in shared.RULES if r != "eenet_confidence" or (lm is not None and lm.model.has_confidence)]
    if st.session_state.get("rule") not in rules:
        st.session_state["rule"] = "max_probability"
    rule = st.selectbox("Exit rule", rules, key="rule", format_func=lambda r: POLICY_INFO[r].label,
                        help=shared.RULE_HELP[st.session_state["rule"]])
    key = shared.threshold_key(rule)
    info = POLICY_INFO[rule]
    if info.setting == "thresholds":
        st.session_state[key] = min(1.0, max(0.0, float(st.session_state.get(key, info.default))))
        st.slider("Threshold t", 0.0, 1.0, step=0.01, key=key, help=shared.RULE_HELP[rule])
        if st.session_state.get("per_exit_on"):
            st.caption("Per-exit thresholds are on (set on the Thresholds page).")
    else:
        top = lm.model.num_exits if lm is not None else 5
        st.session_state[key] = int(min(top, max(1, int(st.session_state.get(key, info.default)))))
        st.slider("Patience t (exits that must agree)", 1, top, step=1, key=key, help=shared.RULE_HELP[rule])
    st.caption(shared.RULE_HELP[rule])
    st.toggle("Calibrated outputs", key="calibrated", help="Divide each exit's logits by its temperature (fitted on the "
              "validation split) before every exit rule, the AEP ensemble and every chart. See the Calibration page.")

shared.sync_url(pg.url_path)
pg.run()
