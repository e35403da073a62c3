"""Models for the pages: cached loading of checkpoint files, per-exit outputs files and uploads of either, the
loaded-model object (the one place the app reads a checkpoint's metadata, or an outputs file's facts), the
pages' check that a model has a network to run, temperature-scaled records, and cached per-image outputs.

Caches are keyed on plain values (path and mtime, content digests, the model's key); models and records
are passed as `_`-prefixed arguments so they are not hashed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import Generic, TypeVar, overload

import numpy as np
import streamlit as st
import torch

from aep_core.analysis.calibration import (
    TemperatureSource,
    fit_temperatures,
    resolve_temperatures,
    scale_logits,
    scale_record,
)
from aep_core.analysis.ood import FlagThreshold, flag_threshold
from aep_core.analysis.pruning import prune_model
from aep_core.checkpoint import CheckpointMeta, load_checkpoint
from aep_core.checkpoint.format import checkpoint_bytes as file_bytes
from aep_core.checkpoint.outputs_import import cost_name, cost_unit, format_cost, read_outputs, read_uploaded_outputs
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.data import load_slice, reads_slice_images, slice_dataset
from aep_core.errors import AepError
from aep_core.evaluation import ExitRecord, collect_outputs, load_evaluation, record_disagreement
from aep_core.exits.rules import ModelExits
from aep_core.models import EarlyExitNet
from explorer.catalog import OUTPUTS_PREFIX, UPLOAD_PREFIX, model_files, outputs_files, outputs_uploads, uploads
from explorer.state import settings

T = TypeVar("T")


NO_NETWORK = "This model is an outputs file: it has no network to run"


class NoNetworkError(AepError):
    """What only a network can give was asked of a model loaded from a per-exit outputs file."""


class _FromMeta(Generic[T]):
    """A read-only attribute of a LoadedModel: the value at a dotted path of its checkpoint metadata; for a model
    without a network (an outputs file), `from_record` of its records' facts, where the file gives one."""

    def __init__(self, path: str, from_record: Callable[[ExitRecord], T] | None = None) -> None:
        self.read = attrgetter(path)
        self.from_record = from_record
        self.name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, loaded: None, owner: type) -> _FromMeta[T]: ...
    @overload
    def __get__(self, loaded: LoadedModel, owner: type) -> T: ...
    def __get__(self, loaded: LoadedModel | None, owner: type) -> T | _FromMeta[T]:
        if loaded is None:
            return self
        if loaded.meta is not None:
            return self.read(loaded.meta)
        if self.from_record is None:
            raise NoNetworkError(f"{NO_NETWORK}; it has no {self.name.replace('_', ' ')}.")
        return self.from_record(loaded.outputs_record)


@dataclass
class LoadedModel:
    """A model ready for the pages: network, metadata, evaluation records (None where missing). A model loaded
    from a per-exit outputs file has no network and no checkpoint metadata (`has_network` False): its facts
    (classes, costs, exits, ensemble weights) come from its records."""

    label: str
    key: str  # a plain value identifying the weights (path + mtime, or upload hash): the cache key
    model: EarlyExitNet | None  # None: a per-exit outputs file
    meta: CheckpointMeta | None  # None without a network
    val: ExitRecord | None
    test: ExitRecord | None
    path: str | None = None
    notes: list[str] = field(default_factory=list)
    temperatures: list[float] | None = None  # per-exit temperatures already applied to val/test (calibrated outputs)

    @property
    def record(self) -> ExitRecord | None:
        """The record the pages report on: test split if present, else validation."""
        return self.test if self.test is not None else self.val

    @property
    def has_network(self) -> bool:
        """Whether there is a network to run (False for a per-exit outputs file: only its records)."""
        return self.model is not None

    @property
    def outputs_record(self) -> ExitRecord:
        """The record the facts of a model without a network are read from (an outputs file always has val)."""
        record = self.val if self.val is not None else self.test
        if record is None:
            raise NoNetworkError(f"{NO_NETWORK} and holds no samples.")
        return record

    @property
    def num_exits(self) -> int:
        return self.model.num_exits if self.model is not None else self.outputs_record.num_exits

    @property
    def exits(self) -> ModelExits:
        """What an exit rule needs to know of this model (its trained ensemble weights included)."""
        if self.model is None:
            return ModelExits.of_record(self.outputs_record)
        return ModelExits.of_model(self.model, self.ensemble_weights)

    @property
    def cost_unit(self) -> str:
        """The unit of the exits' costs: "macs", or "ms" for an outputs file that gave milliseconds."""
        return "macs" if self.meta is not None else cost_unit(self.outputs_record)

    @property
    def cost_name(self) -> str:
        """What the cost is called in reports: "MACs", or "time" for milliseconds."""
        return "MACs" if self.meta is not None else cost_name(self.outputs_record)

    def format_cost(self, value: float) -> str:
        """A cost of this model for people: "1.234 M MACs" or "1.234 ms"."""
        return format_cost(value, self.cost_unit)

    def metric_cost(self, value: float) -> str:
        """A cost for a metric whose label names it (e.g. "Expected MACs"): "1.23 M" or "1.234 ms"."""
        return format_cost(value, "ms") if self.cost_unit == "ms" else f"{value / 1e6:.2f} M"

    # ---- the checkpoint's metadata (an outputs file's facts where it gives them) --------------------

    class_names = _FromMeta[list[str]]("class_names", lambda rec: list(rec.info["class_names"]))
    dataset_name = _FromMeta[str]("dataset.name")
    in_channels = _FromMeta[int]("dataset.in_channels")
    image_size = _FromMeta[int]("dataset.image_size")
    input_shape = _FromMeta[tuple[int, int, int]]("dataset.input_shape")  # (channels, height, width) of one input
    mean = _FromMeta[list[float]]("dataset.mean")  # per-channel normalisation of the training data
    std = _FromMeta[list[float]]("dataset.std")
    # (exits,) MACs a sample spends to stop at each exit (an outputs file's costs, in its unit)
    cum_macs = _FromMeta[list[float]]("cost.cum_macs", lambda rec: rec.cum_macs.tolist())
    full_macs = _FromMeta[float]("cost.full_macs", attrgetter("full_macs"))  # MACs of the network without exits
    params_with_exits = _FromMeta[int]("cost.with_exits_params")
    backbone = _FromMeta[str]("model.backbone")
    training_method = _FromMeta[str]("training.method")
    ensemble_weights = _FromMeta[list[float] | None](  # one per exit (None: trained without)
        "ensemble_weights", lambda rec: rec.info.get("ensemble_weights")
    )

    @property
    def macs_fractions(self) -> list[float]:
        """(exits,) share of the full network's MACs (or time) spent to stop at each exit."""
        if self.meta is None:
            return [float(c) / float(self.full_macs) for c in self.cum_macs]
        return [e.macs_fraction for e in self.meta.cost.exits]

    @property
    def num_blocks(self) -> int:
        """Blocks of the backbone (as built, after any pruning)."""
        return len(self.network.backbone.blocks)

    @property
    def weighting(self) -> str | None:
        """The AEP weighting scheme it was trained with (None for other methods and outputs files)."""
        return None if self.meta is None else self.meta.training.settings.get("weighting")

    @property
    def validation_accuracy(self) -> list[float] | None:
        """(exits,) accuracy of each exit on the validation split: from its record, else the checkpoint's metrics."""
        if self.val is not None:
            return self.val.exit_accuracy().tolist()
        val = self.meta.metrics.get("val")
        return list(val.exit_acc) if val is not None else None

    @property
    def reads_slice(self) -> bool:
        """Whether the model reads the shipped slice's images (28x28 grayscale, 10 classes)."""
        return self.has_network and reads_slice_images(self.in_channels, self.image_size, len(self.class_names))

    @property
    def network(self) -> EarlyExitNet:
        """The network; NoNetworkError for an outputs file."""
        if self.model is None:
            raise NoNetworkError(f"{NO_NETWORK}.")
        return self.model

    def pruned(self, cut: int, tolerance: float | None = None) -> LoadedModel:
        """The model without the blocks and exits after exit `cut` (AEP pruning), its metadata naming this
        model as its source (and the tolerance the cut was chosen with)."""
        model, meta = prune_model(self.network, self.meta, cut, Path(self.path or self.label).name, tolerance)
        return LoadedModel(f"{self.label} (cut after exit {cut})", f"{self.key}|cut={cut}", model, meta, None, None)

    def checkpoint_bytes(self) -> bytes:
        """The model as an aep_core checkpoint file."""
        return file_bytes(self.network, self.meta)


# ---- loading ------------------------------------------------------------------------------------


def _slice_record(loaded: LoadedModel) -> ExitRecord | None:
    """The model's outputs on the shipped Fashion-MNIST slice, if it reads such images."""
    if not loaded.reads_slice:
        return None
    return collect_outputs(
        loaded.model,
        slice_dataset(loaded.mean, loaded.std),
        loaded.cum_macs,
        loaded.full_macs,
        info={
            "split": "test (shipped slice)",
            "class_names": loaded.class_names,
            "ensemble_weights": loaded.ensemble_weights,
        },
    )


@st.cache_resource(show_spinner="Loading model...", max_entries=16)
def _load_file(path: str, mtime: float) -> LoadedModel:
    model, meta = load_checkpoint(path)
    records, notes = [], []
    for split in ("val", "test"):
        source = evaluation_path(path, split)
        try:
            record = load_evaluation(source)
        except AepError as e:
            records.append(None)
            notes.append(str(e))
            continue
        disagreement = record_disagreement(record, model.num_classes, meta.cost.cum_macs)
        if disagreement is not None:
            record = None
            notes.append(
                f"{source} was ignored: {disagreement}. Recreate it with `python -m aep_core evaluate {path}`."
            )
        records.append(record)
    return LoadedModel(path, f"{path}@{mtime}", model, meta, records[0], records[1], path, notes)


@st.cache_resource(show_spinner="Checking the uploaded checkpoint...", max_entries=8)
def _load_upload(content_digest: str, _data: bytes) -> LoadedModel:
    model, meta = load_checkpoint(bytes(_data))
    loaded = LoadedModel("", f"upload:{content_digest}", model, meta, None, None)
    record = _slice_record(loaded)
    notes = (
        []
        if record is not None
        else [
            "This checkpoint has no evaluation files and does not read 28x28 "
            "grayscale images, so only the image pages can use it."
        ]
    )
    return replace(loaded, test=record, notes=notes)


def digest(data: bytes) -> str:
    """Short content hash used as a cache key."""
    return hashlib.sha256(data).hexdigest()[:16]


def outputs_model(name: str, key: str, records: dict[str, ExitRecord], path: str | None = None) -> LoadedModel:
    """A model without a network, from the records of a per-exit outputs file named `name`."""
    notes = [f"{NO_NETWORK}; every number here is replayed from the outputs it holds."]
    if "test" not in records:
        notes.append(
            f"{name} holds validation samples only: the pages report on the samples the thresholds are chosen on, "
            "so their numbers are optimistic."
        )
    return LoadedModel(name, key, None, None, records["val"], records.get("test"), path, notes)


@st.cache_resource(show_spinner="Reading the outputs file...", max_entries=16)
def _load_outputs_file(path: str, mtime: float) -> LoadedModel:
    return outputs_model(Path(path).name, f"{path}@{mtime}", read_outputs(path), path)


@st.cache_resource(show_spinner="Checking the uploaded outputs file...", max_entries=8)
def _load_outputs_upload(content_digest: str, _files: tuple[tuple[str, bytes], ...]) -> LoadedModel:
    name, records = read_uploaded_outputs(dict(_files))
    return outputs_model(name, f"outputs:{content_digest}", records)


def add_outputs_upload(files: list[tuple[str, bytes]]) -> str:
    """Check an uploaded per-exit outputs file (a .npz, or a .csv or .parquet with its .json) and add it to this
    session's models; returns its label. Raises OutputsFileError for anything but one well-formed outputs file."""
    ordered = tuple(sorted(files))
    content_digest = digest(b"".join(name.encode() + b"\0" + digest(data).encode() for name, data in ordered))
    name = _load_outputs_upload(content_digest, ordered).label
    outputs_uploads()[name] = (content_digest, ordered)
    return OUTPUTS_PREFIX + name


def add_upload(name: str, data: bytes) -> str:
    """Validate an uploaded checkpoint and add it to this session's models; returns its label.
    Raises CheckpointError for files that are not ours, corrupt, or carry pickled code."""
    content_digest = digest(data)
    _load_upload(content_digest, data)
    uploads()[name] = (content_digest, data)
    return UPLOAD_PREFIX + name


def load_model(label: str) -> LoadedModel:
    """The model with this picker label (cached, shared by all sessions). Raises AepError if unusable."""
    if label.startswith(UPLOAD_PREFIX):
        content_digest, data = uploads()[label[len(UPLOAD_PREFIX) :]]
        return replace(_load_upload(content_digest, data), label=label)
    if label.startswith(OUTPUTS_PREFIX):
        content_digest, files = outputs_uploads()[label[len(OUTPUTS_PREFIX) :]]
        return replace(_load_outputs_upload(content_digest, files), label=label)
    files, outputs = model_files(), outputs_files()
    if label in outputs:
        path = outputs[label]
        return replace(_load_outputs_file(path, _mtime(path)), label=label)
    if label not in files:
        raise AepError(f"Model '{label}' is not available. Pick one of: {', '.join([*files, *outputs]) or 'none'}.")
    path = files[label]
    return replace(_load_file(path, os.path.getmtime(path)), label=label)


def _mtime(path: str) -> float:
    """When an outputs file (or the .json beside a table) last changed."""
    sidecar = Path(path).with_suffix(".json")
    return max(os.path.getmtime(path), os.path.getmtime(sidecar) if sidecar.is_file() else 0.0)


# ---- calibrated outputs ------------------------------------------------------------------------


@st.cache_data(show_spinner="Fitting per-exit temperatures on the validation split...", max_entries=32)
def _temperature_source(model_key: str, _loaded: LoadedModel) -> TemperatureSource:
    if _loaded.meta is None:  # an outputs file stores no temperatures: fitted on its validation samples
        return TemperatureSource(
            fit_temperatures(_loaded.outputs_record).tolist(), "fitted now on the outputs file's validation samples"
        )
    return resolve_temperatures(_loaded.meta, _loaded.val, _loaded.path)


def temperature_source(loaded: LoadedModel) -> TemperatureSource:
    """The model's per-exit temperatures and where they come from (cached per model). Raises AepError if the
    stored ones are malformed."""
    return _temperature_source(loaded.key, loaded)


@st.cache_resource(show_spinner=False, max_entries=16)
def _scaled_records(
    key: str, temperatures: tuple[float, ...], _val: ExitRecord | None, _test: ExitRecord | None
) -> tuple[ExitRecord | None, ExitRecord | None]:
    # Once per model and temperatures, not on every rerun; the records are read-only from here on.
    return (
        None if _val is None else scale_record(_val, list(temperatures)),
        None if _test is None else scale_record(_test, list(temperatures)),
    )


def calibrated_model(loaded: LoadedModel) -> LoadedModel:
    """The model with temperature-scaled val/test records and its own cache key (itself, unchanged, if no
    temperatures can be had)."""
    if loaded.temperatures is not None:
        return loaded
    temperatures = temperature_source(loaded).temperatures
    if temperatures is None:
        return loaded
    key = f"{loaded.key}|T=" + ",".join(f"{t:.6g}" for t in temperatures)
    val, test = _scaled_records(key, tuple(temperatures), loaded.val, loaded.test)
    return replace(loaded, key=key, val=val, test=test, temperatures=list(temperatures))


# ---- the current model, for the pages ------------------------------------------------------------


def current_model(calibrated: bool | None = None) -> LoadedModel | None:
    """The selected model, or None after showing a message in the page (no model / unreadable model).
    With calibrated outputs (the sidebar switch, or `calibrated=True`) its records are temperature-scaled."""
    current = settings()
    if current.model is None:
        st.warning(
            "No model found. Train one on the **Train** page, upload a checkpoint in the sidebar, or put a "
            "checkpoint in `assets/models/` (`python -m aep_core train --out assets/models/m.pt`)."
        )
        return None
    try:
        loaded = load_model(current.model)
        if not (current.calibrated if calibrated is None else calibrated):
            return loaded
        scaled = calibrated_model(loaded)
        source = temperature_source(loaded)
    except AepError as e:
        st.error(f"Model '{current.model}' cannot be used: {e}")
        return None
    if scaled.temperatures is None:
        st.caption(
            ":material/speed: Calibrated outputs are on, but this model stores no temperatures and has no "
            "validation outputs to fit them on: showing uncalibrated outputs."
        )
    else:
        st.caption(
            ":material/speed: Calibrated outputs: each exit's logits divided by its temperature ("
            + ", ".join(f"{t:.2f}" for t in scaled.temperatures)
            + f"), {source.description}."
        )
    return scaled


def require_network(loaded: LoadedModel, what: str, stop: bool = True) -> bool:
    """Whether the model has a network to run; if not, one line saying that `what` (e.g. "saliency") needs one,
    then the page stops (or, with `stop=False`, the caller leaves that section out)."""
    if loaded.has_network:
        return True
    st.info(f"{NO_NETWORK}; {what} needs one.", icon=":material/block:")
    if stop:
        st.stop()
    return False


def require_record(loaded: LoadedModel) -> ExitRecord | None:
    """The model's evaluation record, or None after a message saying how to create one."""
    if loaded.record is None:
        st.info(
            "This model has no evaluation file, so replayed metrics are not available. Create one with "
            f"`python -m aep_core evaluate {loaded.path or 'CHECKPOINT'}`."
        )
    return loaded.record


def model_and_record() -> tuple[LoadedModel, ExitRecord]:
    """The current model and its test-split evaluation file (temperature-scaled when calibrated outputs are on);
    stops the page (after its message) if either is missing."""
    loaded = current_model()
    record = require_record(loaded) if loaded is not None else None
    if loaded is None or record is None:
        st.stop()
    return loaded, record


# ---- inputs and per-image outputs ------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def shipped_samples() -> tuple[np.ndarray, np.ndarray]:
    """The shipped Fashion-MNIST slice: images (n, 28, 28) uint8 and labels (n,)."""
    samples = load_slice()
    return samples["images"], samples["labels"]


@st.cache_resource(show_spinner="Reading the model's own test images...", max_entries=4)
def _own_test_images(model_key: str, _loaded: LoadedModel, n: int) -> torch.Tensor | None:
    from aep_core.data import first_images
    from aep_core.training.job import checkpoint_dataset

    try:
        test = checkpoint_dataset(_loaded.meta).test
    except AepError:
        return None
    return first_images(test, min(n, len(test)))[0] if len(test) else None


def measurement_inputs(loaded: LoadedModel, n: int) -> tuple[torch.Tensor, str] | None:
    """Up to n images the model reads, to time it on, and where they come from: the shipped slice when the model
    reads 28x28 grayscale images, else the first images of its own test split when its data is on this server;
    None when neither."""
    if not loaded.has_network:
        return None
    x = slice_inputs(loaded, n)
    if x is not None:
        return x, "the shipped test slice"
    x = _own_test_images(loaded.key, loaded, n)
    if x is None:
        return None
    return x, f"the first {len(x):,} images of its own test split ({loaded.dataset_name})"


def slice_inputs(loaded: LoadedModel, n: int) -> torch.Tensor | None:
    """The first n images of the shipped slice as the model's inputs (n, 1, 28, 28), or None if the model
    reads other images."""
    if not loaded.reads_slice:
        return None
    dataset = slice_dataset(loaded.mean, loaded.std)
    return dataset[list(range(min(n, len(dataset))))][0]


@st.cache_data(show_spinner=False, max_entries=256)
def image_outputs(
    model_key: str,
    image_key: str,
    _model: EarlyExitNet,
    _x: torch.Tensor,
    temperatures: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-exit logits (exits, classes) and confidences (exits,) or None for one input image; logits
    divided by their exit's temperature when `temperatures` is given (calibrated outputs)."""
    with torch.inference_mode():
        out = _model(_x)
    logits = torch.stack(out.logits)[:, 0].numpy()
    if temperatures is not None:
        logits = scale_logits(logits, temperatures)
    confidences = None if out.confidences is None else torch.stack(out.confidences)[:, 0].numpy()
    return logits, confidences


@st.cache_data(show_spinner=False, max_entries=64)
def ood_flag_threshold(model_key: str, _loaded: LoadedModel) -> FlagThreshold | None:
    """The "I don't know" flagging threshold of the model, fitted on its validation outputs (never on the test
    split, whose labels are for reporting), with where it comes from; None without validation outputs."""
    return flag_threshold(_loaded.val, None)
