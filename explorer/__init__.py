"""What the pages of the Streamlit app share: session state and URL, model loading and caches, shared
widgets, and the Altair chart builders."""

from aep_core.paths import PROJECT_DIR

APP_DIR = PROJECT_DIR  # the checkout holds app.py and pages/ beside aep_core/
