"""The shared settings every page reads: model, exit rule and its setting, per-exit thresholds and the
calibrated-outputs switch. They live in the session state (written by the sidebar and the pages), with
defaults for anything not set yet, so a page opened on its own works; the URL carries them for links."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from aep_core.checkpoint.discovery import default_model
from aep_core.exits.rules import ModelExits, RuleSetting, RuleSpec, get_rule, list_rules
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

IGNORED_KEY = "_url_ignored"  # session key of the notes on link values that were ignored, until shown


@dataclass
class LinkSettings:
    """What a link's query parameters set once checked: session-state values, the page to open, and one note
    per value that was ignored (naming it and why)."""

    values: dict[str, Any] = field(default_factory=dict)
    page: str | None = None
    ignored: list[str] = field(default_factory=list)

    def ignore(self, name: str, value: str, reason: str) -> None:
        """Note that `name=value` was ignored, and why."""
        shown = value.replace("`", "'")
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        self.ignored.append(f"`{name}={shown}`: {reason}")


def _finite(text: str) -> float | None:
    """The number written in `text`, or None if it is not one or not finite (nan, inf, 1e309)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _setting_problem(text: str, setting: RuleSetting, num_exits: int | None) -> str | None:
    """Why `text` is not a value of the setting for a model with `num_exits` exits (bounds by the model unchecked
    when that is unknown); None if it is one."""
    value = _finite(text)
    if value is None:
        return "not a finite number"
    if setting.integer and not value.is_integer():
        return "not a whole number"
    if setting.hi is None and num_exits is None:
        return None if value >= setting.lo else f"below {setting.lo:g}"
    lo, hi = setting.bounds(num_exits or 0)
    return None if lo <= value <= hi else f"outside {lo:g} to {hi:g}"


def _per_exit_problem(text: str, setting: RuleSetting, num_exits: int | None) -> str | None:
    """Why `text` is not one threshold per early exit (comma-separated), or None."""
    items = text.split(",")
    if num_exits is not None and len(items) != num_exits - 1:
        return f"{len(items)} values for this model's {num_exits - 1} early exits"
    lo, hi = setting.bounds(num_exits or 0)
    for item in items:
        value = _finite(item)
        if value is None or not lo <= value <= hi:
            return f"'{item.strip()}' is not a threshold in {lo:g} to {hi:g}"
    return None


def _check_model(link: LinkSettings, label: str, models: list[str]) -> None:
    """The link's model, if the picker offers it."""
    if label in models:
        link.values["model"] = label
    elif label.lower().startswith("upload"):
        link.ignore("model", label, "an uploaded file stays in the session that uploaded it; upload it again")
    else:
        link.ignore("model", label, "no model of that name here")


def _check_rule(link: LinkSettings, rule: str, label: str | None, exits: ModelExits | None) -> bool:
    """The link's rule, if the app offers it for the model; returns whether it was kept."""
    if not is_rule_offered(rule):
        link.ignore("rule", rule, "not an exit rule of this app")
        return False
    if exits is not None and rule not in list_rules(deployable=True, model=exits):
        link.ignore("rule", rule, f"model {label} cannot use it")
        return False
    link.values["rule"] = rule
    return True


def _check_settings(link: LinkSettings, params: Mapping[str, str], rule_ok: bool, exits: ModelExits | None) -> None:
    """The rule's setting `t` and per-exit thresholds `pe`, checked against the rule and the model."""
    rule = link.values.get("rule", DEFAULT_RULE)
    setting = get_rule(rule).setting
    num_exits = exits.num_exits if exits is not None else None
    t, pe = params.get("t"), params.get("pe")
    if t is not None and setting is not None:  # links carry t=0 for rules without a setting
        problem = "the setting of the ignored rule" if not rule_ok else _setting_problem(t, setting, num_exits)
        if problem:
            link.ignore("t", t, problem)
        else:
            link.values[setting_key(rule)] = float(t)
    if pe:
        if not rule_ok:
            problem = "the setting of the ignored rule"
        elif setting is None or not setting.per_exit:
            problem = f"rule {rule} takes no per-exit thresholds"
        else:
            problem = _per_exit_problem(pe, setting, num_exits)
        if problem:
            link.ignore("pe", pe, problem)
        else:
            link.values["per_exit_thresholds"] = [float(v) for v in pe.split(",")]
            link.values["per_exit_on"] = True


def read_link(
    params: Mapping[str, str],
    models: list[str],
    exits_of: Callable[[str], ModelExits | None],
    page_paths: list[str],
) -> LinkSettings:
    """Check a link's query parameters (model, rule, its setting t, per-exit thresholds pe, calibrated switch cal,
    page) against the models offered, the rules the model can use, the setting's range and the pages;
    `exits_of(label)` is what a rule needs to know of a model (None if it cannot be loaded)."""
    link = LinkSettings()
    if params.get("model"):
        _check_model(link, params["model"], models)
    label = link.values.get("model") or default_model(models)
    exits = exits_of(label) if label else None
    rule_ok = _check_rule(link, params["rule"], label, exits) if params.get("rule") else True
    _check_settings(link, params, rule_ok, exits)
    cal = params.get("cal")
    if cal in ("0", "1"):
        link.values["calibrated"] = cal == "1"
    elif cal is not None:
        link.ignore("cal", cal, "the calibrated switch is 1 (on) or 0 (off)")
    page = params.get("page")
    if page in page_paths:
        link.page = page
    elif page:
        link.ignore("page", page, "no page of that name")
    return link


def restore_from_url(current_page: Any, pages: list[Any], exits_of: Callable[[str], ModelExits | None]) -> None:
    """On a session's first run, copy model, rule, its setting, the calibrated switch and the page from the
    URL into the session, keeping a note of each value ignored (shown by show_ignored_link_values)."""
    state = st.session_state
    if state.get("_url_restored"):
        return
    state["_url_restored"] = True
    paths = [page.url_path for page in pages if page.url_path]
    link = read_link(st.query_params.to_dict(), available_models(), exits_of, paths)
    state.update(link.values)
    if link.ignored:
        state[IGNORED_KEY] = link.ignored
    if link.page and link.page != current_page.url_path:
        st.switch_page(next(page for page in pages if page.url_path == link.page), query_params=page_params(link.page))


def show_ignored_link_values() -> None:
    """A warning naming the values of the link that opened this session that were ignored, and why; shown on
    the first page the session shows, then dropped."""
    ignored = st.session_state.pop(IGNORED_KEY, None)
    if ignored:
        st.warning(
            "Some of this link's settings were ignored and their defaults used instead:\n"
            + "\n".join(f"- {note}" for note in ignored),
            icon=":material/link_off:",
        )


PAGE_PARAMS = {"learn": ("step",)}  # query parameters a page reads itself, kept in its links


def page_params(page: str | None) -> dict[str, str]:
    """The current URL's values of the parameters `page` reads itself."""
    return {n: st.query_params[n] for n in PAGE_PARAMS.get(page or "", ()) if n in st.query_params}


def sync_url(page: str) -> None:
    """Write the current page and settings (and the page's own parameters) into the URL query string."""
    current = settings()
    params = {"page": page, "rule": current.rule}
    if current.model:
        params["model"] = current.model
    params["t"] = f"{current.value:g}"
    if current.per_exit:
        params["pe"] = ",".join(f"{t:g}" for t in current.per_exit)
    if current.calibrated:
        params["cal"] = "1"
    params.update(page_params(page))
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
