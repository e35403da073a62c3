"""`python -m explorer [streamlit options]`: the app's server, started warm. PyTorch, the core and the shared
app modules are imported, and the default model is loaded into the server's cache and run once, before the
server accepts its first browser; `streamlit run app.py` works too, but its first visitor pays for all that.

Options are `streamlit run`'s, e.g. `python -m explorer --server.port 8502`."""

from __future__ import annotations

import logging
import sys
import time

from explorer import APP_DIR


def warm() -> str | None:
    """Import what every page needs and load the default model (checkpoint, evaluation files, one forward pass)
    into the server's cache; the default model's label, or None when there is no model to load."""
    import torch

    import explorer.charts.exits  # noqa: F401  (Altair and the chart builders every page draws with)
    from aep_core.checkpoint.discovery import default_model
    from aep_core.errors import AepError
    from explorer import widgets  # noqa: F401  (the sidebar every page draws)
    from explorer.catalog import model_files
    from explorer.models import load_model

    labels = list(model_files())
    if not labels:
        return None
    label = default_model(labels)
    try:
        loaded = load_model(label)
    except AepError:
        return None  # the page says why, to the visitor who picks it
    with torch.inference_mode():
        loaded.model(torch.zeros(1, *loaded.input_shape))
    return label


def main() -> int:
    """Warm the process, then hand it to `streamlit run app.py` with the given options."""
    from streamlit.web import cli

    t0 = time.perf_counter()
    # Loading outside a script run makes Streamlit warn that there is no session yet: expected here.
    import streamlit  # noqa: F401  (creates its loggers, so their levels can be set)

    quiet = [
        logging.getLogger(name)
        for name in (
            "streamlit.runtime.caching.cache_data_api",
            "streamlit.runtime.scriptrunner_utils.script_run_context",
        )
    ]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        label = warm()
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    print(f"Warmed in {time.perf_counter() - t0:.1f} s" + (f" (model {label})" if label else " (no model)"), flush=True)
    sys.argv = ["streamlit", "run", str(APP_DIR / "app.py"), *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
