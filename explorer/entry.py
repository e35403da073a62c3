"""Every page runs inside the entry script (app.py), which draws the sidebar and the navigation."""

from __future__ import annotations

import runpy

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from explorer import APP_DIR


def run_inside_app() -> None:
    """Run app.py around the calling page when Streamlit started the page file on its own."""
    # Streamlit's legacy multipage mode runs a file of pages/ alone (no sidebar, no URL sync) while a pages/ folder
    # sits next to app.py and no st.navigation call has run yet in this process: a fresh server's first run, and
    # every AppTest run. Running app.py here calls st.navigation, which ends that mode and runs this page inside it.
    if PagesManager.uses_pages_directory:
        runpy.run_path(str(APP_DIR / "app.py"), run_name="__main__")
        st.stop()
