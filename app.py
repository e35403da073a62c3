"""Early-Exit Explorer: the entry point. Page config, the shared sidebar (explorer.widgets) and its uploader of
per-exit outputs files, URL query parameters for shareable links (explorer.state), and navigation over the pages
in pages/."""

from __future__ import annotations

import os

import streamlit as st

from aep_core.allocator import keep_freed_buffers
from aep_core.errors import AepError
from aep_core.exits.rules import ModelExits
from aep_core.threads import set_default_threads
from explorer import state, widgets
from explorer.models import add_outputs_upload, load_model

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


def take_outputs_upload() -> None:
    """Make the files added to the outputs uploader since its last accepted file this session's model once they
    are checked; a refused file changes nothing. Runs as the uploader's callback, before the model picker is
    drawn."""
    state = st.session_state
    taken = state.setdefault("_outputs_taken", set())  # file ids of the files already opened
    # the uploader keeps every file added: an earlier outputs file stays in the picker, and is not read again
    added = [f for f in state.get("outputs_upload") or [] if f.file_id not in taken]
    if not added:
        state.pop("_outputs_msg", None)
        return
    try:
        state["model"] = add_outputs_upload([(f.name, f.getvalue()) for f in added])
    except AepError as e:
        state["_outputs_msg"] = ("error", f"Outputs file refused: {e}")
        return
    taken.update(f.file_id for f in added)
    state["_outputs_msg"] = ("success", f"Opened {state['model']}.")


def outputs_upload() -> None:
    """An uploader for per-exit outputs files written by any framework (docs/BRING_YOUR_OWN.md): a .npz, or a
    .csv or .parquet with its .json; a good one becomes this session's model, without a network."""
    with st.sidebar.expander("Open an outputs file (.npz, or .csv/.parquet + .json)"):
        st.file_uploader(
            "Per-exit outputs of your own model",
            type=["npz", "csv", "parquet", "json"],
            accept_multiple_files=True,
            key="outputs_upload",
            on_change=take_outputs_upload,
            help="What each exit of a model answered for labelled val (and test) samples, and what each exit costs "
            "(MACs or milliseconds); a .csv or .parquet comes with the .json of its per-file values, uploaded "
            "together. Thresholds, calibration, the ensemble and the deployment simulator work from it; pages "
            "that run the network do not. See docs/BRING_YOUR_OWN.md.",
        )
        if "_outputs_msg" in st.session_state:
            kind, message = st.session_state["_outputs_msg"]
            (st.success if kind == "success" else st.error)(message)


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
outputs_upload()
state.sync_url(page.url_path)
page.run()
