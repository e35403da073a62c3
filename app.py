"""Early-Exit Explorer: the entry point. Page config, the shared sidebar (explorer.widgets), URL query
parameters for shareable links (explorer.state), and navigation over the pages in pages/."""

from __future__ import annotations

import os

import streamlit as st

from aep_core.allocator import keep_freed_buffers
from aep_core.errors import AepError
from aep_core.exits.rules import ModelExits
from aep_core.threads import set_default_threads
from explorer import state, widgets
from explorer.models import load_model

st.set_page_config(page_title="Early-Exit Explorer", page_icon=":material/alt_route:", layout="wide")
keep_freed_buffers()


@st.cache_resource
def use_app_threads() -> int:
    """Set torch's CPU threads for this server process, once; returns the count."""
    # One process runs every session's forward passes: a few threads per pass keep single images fast without one
    # session's pass taking every core from the others.
    return set_default_threads(max(1, min(4, os.cpu_count() or 1)))


def model_exits(label: str) -> ModelExits | None:
    """What an exit rule needs to know of a picker model, for checking a link (None if it cannot be loaded)."""
    try:
        return load_model(label).exits
    except AepError:
        return None


def open_overview() -> None:
    """The root URL opens the Overview page under its own name."""
    st.switch_page(OVERVIEW)


use_app_threads()
OVERVIEW = st.Page("pages/overview.py", title="Overview", icon=":material/school:", url_path="overview")
PAGES = [
    OVERVIEW,
    st.Page("pages/learn.py", title="Learn", icon=":material/menu_book:", url_path="learn"),
    st.Page("pages/try_image.py", title="Try an image", icon=":material/image:", url_path="try_image"),
    st.Page("pages/thresholds.py", title="Thresholds", icon=":material/tune:", url_path="thresholds"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/speed:", url_path="calibration"),
    st.Page("pages/ensemble.py", title="Ensemble weights", icon=":material/stacked_bar_chart:", url_path="ensemble"),
    st.Page("pages/pruning.py", title="Pruning savings", icon=":material/content_cut:", url_path="pruning"),
    st.Page("pages/saliency.py", title="Saliency", icon=":material/visibility:", url_path="saliency"),
    st.Page("pages/deploy.py", title="Deploy", icon=":material/lan:", url_path="deploy"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
]
# Streamlit serves its default page at the root URL only, never under the page's own name, so the default is a
# hidden page that opens Overview: /overview then works like every other page's path, and so does /.
HOME = st.Page(open_overview, title="Overview", url_path="home", default=True, visibility="hidden")
page = st.navigation([HOME, *PAGES])
state.restore_from_url(page, PAGES, model_exits)
if page is HOME:
    open_overview()
state.show_ignored_link_values()
widgets.sidebar()
state.sync_url(page.url_path)
page.run()
