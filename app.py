"""Early-Exit Explorer: the entry point. Page config, the shared sidebar (explorer.widgets), URL query
parameters for shareable links (explorer.state), and navigation over the pages in pages/."""

from __future__ import annotations

import os

import streamlit as st
import torch

from aep_core.allocator import keep_freed_buffers
from explorer import state, widgets

st.set_page_config(page_title="Early-Exit Explorer", page_icon=":material/alt_route:", layout="wide")
keep_freed_buffers()


@st.cache_resource
def use_app_threads() -> int:
    """Set torch's CPU threads for this server process, once; returns the count."""
    # One process runs every session's forward passes: a few threads per pass keep single images fast without one
    # session's pass taking every core from the others.
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return torch.get_num_threads()


use_app_threads()
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
page = st.navigation(PAGES)
state.restore_from_url(page, PAGES)
widgets.sidebar()
state.sync_url(page.url_path)
page.run()
