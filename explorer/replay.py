"""Exit rules replayed on a model's saved outputs, cached on plain values (model key, rule, settings)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import replay_rule


@st.cache_data(show_spinner=False, max_entries=512)
def _summary(model_key: str, rule: str, settings_items: tuple, _record: ExitRecord) -> dict[str, Any]:
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings_items}
    return replay_rule(_record, rule, **settings).summary()


def rule_summary(
    model_key: str, record: ExitRecord, rule: str, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """replay_rule on a model's record, summarised (accuracy, MACs ratio, distributions); `model_key` names
    the record (the model and its calibration), so the summary is computed once per setting."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (settings or {}).items()))
    return _summary(model_key, rule, items, record)
