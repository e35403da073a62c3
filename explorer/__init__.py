"""What the pages of the Streamlit app share: session state and URL, model loading and caches, shared
widgets, and the Altair chart builders."""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent  # the folder holding app.py and pages/
