"""What every page of the app shares: model discovery and caches, and the current settings (model,
exit rule, thresholds) read from the sidebar's session state, the URL, or defaults.

Pages call `settings()` and `current_model()` only; both work when a page is opened on its own
(no sidebar run yet), so every page can be tested directly.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from aep_core.analysis.calibration import fit_temperatures, scale_logits, scale_record, stored_temperatures
from aep_core.checkpoint import load_checkpoint
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord, collect_outputs, evaluation_path, load_evaluation
from aep_core.models import EarlyExitNet
from aep_core.exits.rules import POLICY_INFO, replay_rule, decide, make_rule

ROOT = Path(__file__).resolve().parent
SHIPPED_DIR = ROOT / "assets" / "models"


def trained_dir() -> Path:
    """Where models trained on the Train page go (git-ignored): runs/app, or AEP_APP_RUNS_DIR."""
    return Path(os.environ.get("AEP_APP_RUNS_DIR", ROOT / "runs" / "app"))

UPLOAD_PREFIX = "uploaded: "
RULES = ("max_probability", "entropy", "aep_ensemble", "eenet_confidence", "patience")
RULE_HELP = {
    "max_probability": "Stop at the first exit whose top class probability reaches t.",
    "entropy": "Stop at the first exit whose prediction entropy (0 = certain, 1 = uniform) is at most t.",
    "aep_ensemble": "AEP: average the softmax outputs of exits 0..k with the trained ensemble weights; stop when its top probability reaches t.",
    "eenet_confidence": "EENets: each exit has a learned confidence branch; stop when it reaches t (models trained with the EENet method only).",
    "patience": "Stop once t consecutive exits agree on the class.",
}
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


# ---- models ------------------------------------------------------------------------------------

def model_dirs() -> list[Path]:
    """Folders searched for checkpoints: shipped models, app-trained models, and the AEP_MODELS_DIR entries
    (os.pathsep-separated). AEP_MODELS_ONLY=1 leaves out the shipped models (tests, demos)."""
    extra = [Path(p) for p in os.environ.get("AEP_MODELS_DIR", "").split(os.pathsep) if p.strip()]
    if os.environ.get("AEP_MODELS_ONLY") == "1":
        return [trained_dir(), *extra]
    return [SHIPPED_DIR, trained_dir(), *extra]


def discover_models() -> dict[str, str]:
    """Label -> checkpoint path of every `*.pt` in the model folders (labels are file stems, made unique)."""
    found: dict[str, str] = {}
    for d in model_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.pt")):
            if p.name.endswith(".resume.pt"):  # an interrupted or running training's state, not a model
                continue
            label = p.stem if p.stem not in found else f"{p.parent.name}/{p.stem}"
            found[label] = str(p)
    return found


def available_models() -> list[str]:
    """Model labels the picker offers: checkpoints on disk, then this session's uploads."""
    return list(discover_models()) + [UPLOAD_PREFIX + n for n in st.session_state.get("uploads", {})]


@dataclass
class LoadedModel:
    """A model ready for the pages: network, metadata, evaluation records (None where missing)."""

    label: str
    key: str  # a plain value identifying the weights (path + mtime, or upload hash): the cache key
    model: EarlyExitNet
    meta: dict[str, Any]
    val: ExitRecord | None
    test: ExitRecord | None
    path: str | None = None
    notes: list[str] = field(default_factory=list)
    temperatures: list[float] | None = None  # per-exit temperatures already applied to val/test (calibrated outputs)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["dataset"]["class_names"])

    @property
    def record(self) -> ExitRecord | None:
        """The record the pages report on: test split if present, else validation."""
        return self.test if self.test is not None else self.val


@st.cache_resource(show_spinner="Loading model...", max_entries=16)
def _load_file(path: str, mtime: float) -> tuple[EarlyExitNet, dict, ExitRecord | None, ExitRecord | None, list[str]]:
    model, meta = load_checkpoint(path)
    recs, notes = [], []
    for split in ("val", "test"):
        try:
            recs.append(load_evaluation(evaluation_path(path, split)))
        except AepError as e:
            recs.append(None)
            notes.append(str(e))
    return model, meta, recs[0], recs[1], notes


def reads_slice(meta: dict) -> bool:
    """Whether the model reads the shipped slice's images (28x28 grayscale, 10 classes)."""
    ds = meta["dataset"]
    return ds.get("in_channels") == 1 and ds.get("image_size") == 28 and len(ds.get("class_names", [])) == 10


def _slice_dataset(meta: dict):
    """The shipped Fashion-MNIST slice's test images, normalised with the model's own mean and std."""
    from aep_core.data import load_dataset

    ds = meta["dataset"]
    bundle = load_dataset("fashion-mnist-slice")
    bundle.test.mean = torch.tensor(ds["mean"]).view(1, -1, 1, 1)
    bundle.test.std = torch.tensor(ds["std"]).view(1, -1, 1, 1)
    return bundle.test


def slice_inputs(meta: dict, n: int) -> torch.Tensor | None:
    """The first n images of the shipped slice as model inputs (n, 1, 28, 28), or None if the model reads
    other images."""
    if not reads_slice(meta):
        return None
    test = _slice_dataset(meta)
    return test[list(range(min(n, len(test))))][0]


def _slice_record(model: EarlyExitNet, meta: dict) -> ExitRecord | None:
    """Evaluate a model without evaluation files on the shipped Fashion-MNIST slice, if it reads such images."""
    if not reads_slice(meta):
        return None
    ds = meta["dataset"]
    test = _slice_dataset(meta)
    c = meta["cost"]
    return collect_outputs(model, test, [e["cum_macs"] for e in c["exits"]], c["full_macs"],
                           info={"split": "test (shipped slice)", "class_names": ds["class_names"],
                                 "ensemble_weights": meta["training"]["ensemble_weights"]})


@st.cache_resource(show_spinner="Checking the uploaded checkpoint...", max_entries=8)
def _load_upload(digest: str, _data: bytes) -> tuple[EarlyExitNet, dict, ExitRecord | None]:
    model, meta = load_checkpoint(bytes(_data))
    return model, meta, _slice_record(model, meta)


def add_upload(name: str, data: bytes) -> str:
    """Validate an uploaded checkpoint and add it to this session's models; returns its label.
    Raises CheckpointError for files that are not ours, corrupt, or carry pickled code."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    _load_upload(digest, data)
    uploads = st.session_state.setdefault("uploads", {})
    uploads[name] = (digest, data)
    return UPLOAD_PREFIX + name


def load_model(label: str) -> LoadedModel:
    """The model with this picker label (cached, shared by all sessions). Raises AepError if unusable."""
    if label.startswith(UPLOAD_PREFIX):
        digest, data = st.session_state.get("uploads", {})[label[len(UPLOAD_PREFIX):]]
        model, meta, rec = _load_upload(digest, data)
        notes = [] if rec is not None else ["This checkpoint has no evaluation files and does not read 28x28 "
                                            "grayscale images, so only the image pages can use it."]
        return LoadedModel(label, f"upload:{digest}", model, meta, None, rec, None, notes)
    models = discover_models()
    if label not in models:
        raise AepError(f"Model '{label}' is not available. Pick one of: {', '.join(models) or 'none'}.")
    path = models[label]
    mtime = os.path.getmtime(path)
    model, meta, val, test, notes = _load_file(path, mtime)
    return LoadedModel(label, f"{path}@{mtime}", model, meta, val, test, path, notes)


# ---- settings ----------------------------------------------------------------------------------

@dataclass
class Settings:
    """The shared settings: model label, exit rule and its threshold(s)."""

    model: str | None
    rule: str
    threshold: float  # global threshold (or patience t)
    per_exit: list[float] | None = None  # per-early-exit thresholds, when set on the Thresholds page
    calibrated: bool = False  # exits' outputs temperature-scaled before every rule (sidebar switch)

    def policy_kwargs(self) -> dict[str, Any]:
        """Keyword settings for aep_core.policies.replay_rule / make_rule."""
        info = POLICY_INFO[self.rule]
        if info.setting == "thresholds":
            return {"thresholds": list(self.per_exit) if self.per_exit else float(self.threshold)}
        if info.setting is None:
            return {}
        return {info.setting: int(self.threshold)}

    def describe(self) -> str:
        """One line for captions, e.g. 'max_probability, t = 0.90' (+ ', calibrated outputs')."""
        cal = ", calibrated outputs" if self.calibrated else ""
        if self.per_exit:
            return f"{self.rule}, per-exit t = " + ", ".join(f"{t:.3f}" for t in self.per_exit) + cal
        if POLICY_INFO[self.rule].setting == "thresholds":
            return f"{self.rule}, t = {self.threshold:.2f}{cal}"
        return f"{self.rule}, {POLICY_INFO[self.rule].setting} = {int(self.threshold)}{cal}"


def threshold_key(rule: str) -> str:
    """Session key of the sidebar threshold widget for a rule (one per rule: each has its own scale)."""
    return f"thr_{rule}"


def default_threshold(rule: str) -> float:
    """The rule's default threshold."""
    return float(POLICY_INFO[rule].default)


def settings() -> Settings:
    """The current shared settings, with defaults for anything not set yet (pages opened directly)."""
    ss = st.session_state
    models = available_models()
    model = ss.get("model")
    if model not in models:
        model = default_model(models)
    rule = ss.get("rule") if ss.get("rule") in RULES else "max_probability"
    thr = ss.get(threshold_key(rule), default_threshold(rule))
    per_exit = ss.get("per_exit_thresholds") if ss.get("per_exit_on") and POLICY_INFO[rule].setting == "thresholds" else None
    return Settings(model, rule, float(thr), list(per_exit) if per_exit else None, bool(ss.get("calibrated", False)))


def default_model(models: list[str]) -> str | None:
    """The shipped AEP model if present, else the first model found."""
    for preferred in ("aep_hybrid",):
        if preferred in models:
            return preferred
    return models[0] if models else None


def current_model(calibrated: bool | None = None) -> LoadedModel | None:
    """The selected model, or None after showing a message in the page (no model / unreadable model).
    With calibrated outputs (the sidebar switch, or `calibrated=True`) its records are temperature-scaled."""
    s = settings()
    if s.model is None:
        st.warning("No model found. Train one on the **Train** page, upload a checkpoint in the sidebar, or put a "
                   "checkpoint in `assets/models/` (`python -m aep_core train --out assets/models/m.pt`).")
        return None
    try:
        lm = load_model(s.model)
        if not (s.calibrated if calibrated is None else calibrated):
            return lm
        cal = calibrated_model(lm)
    except AepError as e:
        st.error(f"Model '{s.model}' cannot be used: {e}")
        return None
    if cal.temperatures is None:
        st.caption(":material/speed: Calibrated outputs are on, but this model stores no temperatures and has no "
                   "validation outputs to fit them on: showing uncalibrated outputs.")
    else:
        st.caption(":material/speed: Calibrated outputs: each exit's logits divided by its temperature ("
                   + ", ".join(f"{t:.2f}" for t in cal.temperatures) + "), " + temperature_source(lm)[1] + ".")
    return cal


# ---- calibrated outputs ------------------------------------------------------------------------

@st.cache_data(show_spinner="Fitting per-exit temperatures on the validation split...", max_entries=32)
def _fit_on_val(model_key: str, _val: ExitRecord) -> list[float]:
    return fit_temperatures(_val).tolist()


def temperature_source(lm: LoadedModel) -> tuple[list[float] | None, str]:
    """The model's per-exit temperatures and where they come from: stored in the checkpoint, or fitted
    now on its validation record (cached) when it stores none; (None, reason) when neither is possible.
    Raises AepError if the stored ones are malformed."""
    stored = stored_temperatures(lm.meta)
    if stored is not None:
        return stored, "fitted on the validation split and stored in the checkpoint"
    if lm.val is None:
        return None, "no stored temperatures and no validation outputs to fit them on"
    where = f"`python -m aep_core calibrate {lm.path}`" if lm.path else "`python -m aep_core calibrate CHECKPOINT`"
    return _fit_on_val(lm.key, lm.val), f"fitted now on the validation split (the checkpoint stores none; {where} stores them)"


def calibrated_model(lm: LoadedModel) -> LoadedModel:
    """The model with temperature-scaled val/test records and its own cache key (itself, unchanged, if no
    temperatures can be had)."""
    if lm.temperatures is not None:
        return lm
    temps, _ = temperature_source(lm)
    if temps is None:
        return lm
    key = f"{lm.key}|T=" + ",".join(f"{t:.6g}" for t in temps)
    val, test = _scaled_records(key, tuple(temps), lm.val, lm.test)
    return replace(lm, key=key, val=val, test=test, temperatures=list(temps))


@st.cache_resource(show_spinner=False, max_entries=16)
def _scaled_records(key: str, temps: tuple[float, ...], _val: ExitRecord | None,
                    _test: ExitRecord | None) -> tuple[ExitRecord | None, ExitRecord | None]:
    # Once per model and temperatures, not on every rerun; the records are read-only from here on.
    return (None if _val is None else scale_record(_val, list(temps)),
            None if _test is None else scale_record(_test, list(temps)))


def require_record(lm: LoadedModel) -> ExitRecord | None:
    """The model's evaluation record, or None after a message saying how to create one."""
    if lm.record is None:
        st.info("This model has no evaluation file, so replayed metrics are not available. Create one with "
                f"`python -m aep_core evaluate {lm.path or 'CHECKPOINT'}`.")
    return lm.record


# ---- cached computations (plain-value keys) ------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=512)
def policy_summary(model_key: str, split: str, rule: str, kwargs_items: tuple, _rec: ExitRecord) -> dict[str, Any]:
    """replay_rule on a record, summarised (accuracy, MACs ratio, distributions); cached on plain values."""
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs_items}
    return replay_rule(_rec, rule, **kwargs).summary()


def frozen_kwargs(kwargs: dict[str, Any]) -> tuple:
    """Policy kwargs as a hashable, sorted tuple."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


def stop_exit_for(lm: LoadedModel, logits: np.ndarray, confidences: np.ndarray | None, s: Settings) -> tuple[int, np.ndarray]:
    """Where one image stops under the current rule, from its per-exit logits (exits, classes):
    (exit index, rule score per exit). Uses the same decision code as the replayed policies."""
    kwargs = s.policy_kwargs()
    if s.rule == "aep_ensemble":
        kwargs["weights"] = lm.meta["training"].get("ensemble_weights")
    rule = make_rule(s.rule, logits.shape[0], lm.model.has_confidence, **kwargs)
    conf = None if confidences is None else confidences[:, None]
    score, _ = rule.scores(logits[:, None, :], conf)
    return int(decide(score, rule.thresholds, rule.lower_is_confident)[0]), score[:, 0]


@st.cache_data(show_spinner=False, max_entries=256)
def image_outputs(model_key: str, image_digest: str, _model: EarlyExitNet, _x: torch.Tensor,
                  temperatures: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-exit logits (exits, classes) and confidences (exits,) or None for one input image; logits
    divided by their exit's temperature when `temperatures` is given (calibrated outputs)."""
    with torch.inference_mode():
        out = _model(_x)
    logits = torch.stack(out.logits)[:, 0].numpy()
    if temperatures is not None:
        logits = scale_logits(logits, temperatures)
    conf = None if out.confidences is None else torch.stack(out.confidences)[:, 0].numpy()
    return logits, conf


@st.cache_data(show_spinner=False, max_entries=64)
def ood_threshold(model_key: str, _lm: LoadedModel) -> tuple[float, str] | None:
    """The "I don't know" flagging threshold: the 95th percentile of the score on the model's validation
    outputs (else its test record), with a description of where it comes from; None without records."""
    from aep_core.analysis.ood import DEFAULT_QUANTILE, ood_score
    from aep_core.analysis.ood import ood_threshold as threshold

    rec, split = (_lm.val, "validation") if _lm.val is not None else (_lm.record, "evaluation")
    if rec is None:
        return None
    return threshold(ood_score(rec.logits), DEFAULT_QUANTILE), f"{100 * DEFAULT_QUANTILE:g}% of {rec.num_samples:,} {split} images score below it"


def digest(data: bytes) -> str:
    """Short content hash used as a cache key."""
    return hashlib.sha256(data).hexdigest()[:16]


# ---- samples -----------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def samples() -> tuple[np.ndarray, np.ndarray]:
    """The shipped Fashion-MNIST slice: images (n, 28, 28) uint8 and labels (n,)."""
    from aep_core.data import load_slice

    s = load_slice()
    return s["images"], s["labels"]


# ---- URL query parameters (shareable links) -------------------------------------------------------

def restore_from_url(current_page: Any, pages: list[Any]) -> None:
    """On a session's first run, copy model, rule, threshold(s) and page from the URL into the session."""
    ss = st.session_state
    if ss.get("_url_restored"):
        return
    ss["_url_restored"] = True
    qp = st.query_params
    if qp.get("model"):
        ss["model"] = qp["model"]
    rule = qp.get("rule")
    if rule in RULES:
        ss["rule"] = rule
    if qp.get("cal") == "1":
        ss["calibrated"] = True
    try:
        if qp.get("t") is not None and ss.get("rule", "max_probability") in RULES:
            ss[threshold_key(ss.get("rule", "max_probability"))] = float(qp["t"])
        if qp.get("pe"):
            ss["per_exit_thresholds"] = [min(1.0, max(0.0, float(v))) for v in qp["pe"].split(",")]
            ss["per_exit_on"] = True
    except ValueError:
        st.toast("Ignored a malformed threshold in the link.")
    target = qp.get("page")
    if target and target != current_page.url_path:
        for p in pages:
            if p.url_path == target:
                st.switch_page(p)


def sync_url(page: str) -> None:
    """Write the current page and settings into the URL query string."""
    s = settings()
    params = {"page": page, "rule": s.rule}
    if s.model:
        params["model"] = s.model
    params["t"] = f"{s.threshold:g}"
    if s.per_exit:
        params["pe"] = ",".join(f"{t:g}" for t in s.per_exit)
    if s.calibrated:
        params["cal"] = "1"
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def ensure_entry(page: str) -> None:
    """Make sure the entry script (sidebar, navigation) runs around this page.

    While `pages/` exists, Streamlit's legacy multipage mode may run a page file on its own (a fresh
    server's first run; every AppTest run). Then run app.py here instead: its st.navigation switches
    legacy mode off and runs this page inside it, with the widget state of this run intact."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        import runpy

        runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
        st.stop()


def model_and_record() -> tuple[LoadedModel, ExitRecord]:
    """The current model and its test-split evaluation file (temperature-scaled when calibrated outputs are on);
    stops the page (after its message) if either is missing."""
    lm = current_model()
    rec = require_record(lm) if lm is not None else None
    if lm is None or rec is None:
        st.stop()
    return lm, rec
