"""Shared widgets. The sidebar: checkpoint upload, model picker, exit rule with its setting, calibrated-outputs
switch; its widgets write the session state that explorer.state reads, and every rule fact comes from the rule
registry. A metric with a note under its value, for the pages' metric rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from aep_core.checkpoint.discovery import default_model
from aep_core.errors import AepError
from aep_core.exits.rules import RuleSpec, get_rule, list_rules
from explorer.catalog import available_models
from explorer.models import LoadedModel, add_upload, load_model
from explorer.state import DEFAULT_RULE, setting_key

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator


def sidebar() -> None:
    """Draw the sidebar shared by every page."""
    with st.sidebar:
        st.markdown("### :material/alt_route: Early-Exit Explorer")
        checkpoint_upload()
        loaded = model_picker()
        spec = rule_picker(loaded)
        rule_setting(spec, loaded)
        st.caption(spec.help)
        st.toggle(
            "Calibrated outputs",
            key="calibrated",
            help="Divide each exit's logits by its temperature (fitted "
            "on the validation split) before every exit rule, the AEP ensemble and every chart. See the "
            "Calibration page.",
        )


def checkpoint_upload() -> None:
    """An uploader for aep_core checkpoints; a good one becomes this session's model."""
    state = st.session_state
    with st.expander("Upload a checkpoint (.pt)"):
        upload = st.file_uploader(
            "aep_core checkpoint",
            type=["pt", "pth"],
            key="ckpt_upload",
            help="A checkpoint saved by aep_core. Files with pickled code are refused.",
        )
        if upload is not None and state.get("_ckpt_seen") != upload.file_id:
            state["_ckpt_seen"] = upload.file_id
            try:
                state["model"] = add_upload(upload.name, upload.getvalue())
                state["_ckpt_msg"] = ("success", f"Loaded {upload.name}.")
            except AepError as e:
                state["_ckpt_msg"] = ("error", f"Checkpoint refused: {e}")
        if "_ckpt_msg" in state:
            kind, message = state["_ckpt_msg"]
            (st.success if kind == "success" else st.error)(message)


def model_picker() -> LoadedModel | None:
    """The model selectbox; returns the picked model (None, after a message, if there is none or it is unusable)."""
    state = st.session_state
    models = available_models()
    if not models:
        st.warning("No model yet: train one on the Train page or upload a checkpoint.")
        return None
    if state.get("model") not in models:
        state["model"] = default_model(models)
    st.selectbox(
        "Model",
        models,
        key="model",
        help="Shipped checkpoints (assets/models), models trained on the Train page, and uploaded checkpoints.",
    )
    try:
        return load_model(state["model"])
    except AepError as e:
        st.error(str(e))
        return None


def rule_picker(loaded: LoadedModel | None) -> RuleSpec:
    """The exit-rule selectbox over the deployable rules the model can use; returns the picked rule."""
    state = st.session_state
    offered = list_rules(deployable=True, model=None if loaded is None else loaded.exits)
    if state.get("rule") not in offered:
        state["rule"] = DEFAULT_RULE
    name = st.selectbox(
        "Exit rule", offered, key="rule", format_func=lambda r: get_rule(r).label, help=get_rule(state["rule"]).help
    )
    return get_rule(name)


def rule_setting(spec: RuleSpec, loaded: LoadedModel | None) -> None:
    """The slider of the rule's one setting: a threshold in [0, 1], or a whole number within the model's bounds
    (patience t, fixed exit k)."""
    setting = spec.setting
    if setting is None or (setting.hi is None and loaded is None):
        return  # no setting, or one bounded by a model that is not there
    state = st.session_state
    key = setting_key(spec.name)
    lo, hi = setting.bounds(loaded.num_exits if loaded is not None else 0)
    value = min(hi, max(lo, float(state.get(key, setting.default))))
    if setting.integer:
        lo, hi, value = int(lo), int(hi), int(value)
    state[key] = value
    if lo == hi:
        st.caption(f"{setting.label}: {value}, the only value this model allows.")
    else:
        st.slider(setting.label, lo, hi, step=1 if setting.integer else 0.01, key=key, help=spec.help)
    if setting.per_exit and state.get("per_exit_on"):
        st.caption("Per-exit thresholds are on (set on the Thresholds page).")


def noted_metric(where: DeltaGenerator, label: str, value: str, note: str | None, help: str | None = None) -> None:
    """A metric in `where` with a grey note under its value: a fact about the value (its share, its split), not
    a change, so without colour or arrow."""
    where.metric(label, value, note, delta_color="off", delta_arrow="off", help=help)
