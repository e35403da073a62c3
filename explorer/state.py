"""The shared settings every page reads: model, exit rule and its setting, per-exit thresholds and the
calibrated-outputs switch. They live in the session state (written by the sidebar and the pages), with
defaults for anything not set yet, so a page opened on its own works; the URL carries them for links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from aep_core.checkpoint.discovery import default_model
from aep_core.exits.rules import THRESHOLD, RuleSpec, get_rule, list_rules
from explorer.catalog import available_models

DEFAULT_RULE = "max_probability"


@dataclass
class Settings:
    """The shared settings: model label, exit rule and its setting."""

    model: str | None
    rule: str
    value: float  # the rule's one setting: its global threshold, patience t or fixed exit k
    per_exit: list[float] | None = None  # one threshold per early exit, when set on the Thresholds page
    calibrated: bool = False  # exits' outputs temperature-scaled before every rule (sidebar switch)

    @property
    def spec(self) -> RuleSpec:
        """The registry's entry of the current rule."""
        return get_rule(self.rule)

    def rule_settings(self) -> dict[str, Any]:
        """The rule's keyword setting for make_rule / replay_rule, e.g. {"thresholds": 0.9} or {"t": 2}."""
        setting = self.spec.setting
        if setting is None:
            return {}
        if setting.per_exit and self.per_exit:
            return {setting.keyword: list(self.per_exit)}
        return {setting.keyword: int(self.value) if setting.integer else float(self.value)}

    def describe(self) -> str:
        """One line for captions, e.g. 'max_probability, t = 0.90' (+ ', calibrated outputs')."""
        calibrated = ", calibrated outputs" if self.calibrated else ""
        setting = self.spec.setting
        if setting is None:
            return self.rule + calibrated
        if setting.per_exit and self.per_exit:
            return f"{self.rule}, per-exit t = " + ", ".join(f"{t:.3f}" for t in self.per_exit) + calibrated
        if setting.integer:
            return f"{self.rule}, {setting.keyword} = {int(self.value)}{calibrated}"
        return f"{self.rule}, t = {self.value:.2f}{calibrated}"


def setting_key(rule: str) -> str:
    """Session key of the sidebar's setting widget for a rule (one per rule: each has its own scale)."""
    return f"thr_{rule}"


def default_value(rule: str) -> float:
    """The rule's default setting (0 for a rule without one)."""
    setting = get_rule(rule).setting
    return float(setting.default) if setting is not None else 0.0


def is_rule_offered(name: Any) -> bool:
    """Whether `name` is a rule the app can run (registered and deployable)."""
    return name in list_rules(deployable=True)


def settings() -> Settings:
    """The current shared settings, with defaults for anything not set yet (pages opened directly)."""
    state = st.session_state
    models = available_models()
    model = state.get("model") if state.get("model") in models else default_model(models)
    rule = state.get("rule") if is_rule_offered(state.get("rule")) else DEFAULT_RULE
    value = float(state.get(setting_key(rule), default_value(rule)))
    setting = get_rule(rule).setting
    per_exit = state.get("per_exit_thresholds") if state.get("per_exit_on") and setting and setting.per_exit else None
    return Settings(model, rule, value, list(per_exit) if per_exit else None, bool(state.get("calibrated", False)))


# ---- URL query parameters (shareable links) -------------------------------------------------------


def restore_from_url(current_page: Any, pages: list[Any]) -> None:
    """On a session's first run, copy model, rule, its setting, the calibrated switch and the page from the
    URL into the session."""
    state = st.session_state
    if state.get("_url_restored"):
        return
    state["_url_restored"] = True
    params = st.query_params
    if params.get("model"):
        state["model"] = params["model"]
    if is_rule_offered(params.get("rule")):
        state["rule"] = params["rule"]
    if params.get("cal") == "1":
        state["calibrated"] = True
    try:
        if params.get("t") is not None:
            state[setting_key(state.get("rule", DEFAULT_RULE))] = float(params["t"])
        if params.get("pe"):
            state["per_exit_thresholds"] = [
                min(THRESHOLD.hi, max(THRESHOLD.lo, float(v))) for v in params["pe"].split(",")
            ]
            state["per_exit_on"] = True
    except ValueError:
        st.toast("Ignored a malformed threshold in the link.")
    target = params.get("page")
    if target and target != current_page.url_path:
        for page in pages:
            if page.url_path == target:
                st.switch_page(page)


def sync_url(page: str) -> None:
    """Write the current page and settings into the URL query string."""
    current = settings()
    params = {"page": page, "rule": current.rule}
    if current.model:
        params["model"] = current.model
    params["t"] = f"{current.value:g}"
    if current.per_exit:
        params["pe"] = ",".join(f"{t:g}" for t in current.per_exit)
    if current.calibrated:
        params["cal"] = "1"
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
