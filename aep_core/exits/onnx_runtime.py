"""The ONNX Runtime engine: early exit with one ONNX file per exit, chained in onnxruntime sessions.

The model is exported once per set of weights and input shape (a split after every exit, with
`deploy.export`) into a cache folder keyed on them, so a later run, in this process or another, opens the
files without exporting again. The exported copy has BatchNorm folded, as the PyTorch engine's has, and its
heads pool with plain ONNX ops (`deploy.export.for_export`). Each segment gets its own session set for latency
(`deploy.export.inference_session`). Features pass from one segment to the next as the C-contiguous float32
arrays onnxruntime returns, a form it reads without converting; the last segment is asked for its logits only.

The decisions between segments are the PyTorch engine's (`runtime.SegmentRunner`): the same rule objects,
temperatures and EENet confidences, the same removal of exited samples from a batch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aep_core.deploy.export import export_onnx, export_static_onnx, inference_session, require_onnxruntime
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord, record_from_batches
from aep_core.exits.rules import ExitRule
from aep_core.exits.runtime import Inputs, SegmentRunner, StaticRunner, check_inputs
from aep_core.models import EarlyExitNet
from aep_core.models.inference import prepare_for_inference

EXPORT_FORMAT = 1  # part of the cache key: raised whenever the exported graphs change
SEGMENT_STEM = "exit"  # files exit_<k>.onnx: segment k ends at exit k
STATIC_FILE = "without_exits.onnx"


def default_cache_dir() -> Path:
    """Where exported files are kept unless a folder is given: a folder in the system's temporary directory."""
    return Path(tempfile.gettempdir()) / "aep_onnx"


def model_key(model: EarlyExitNet, input_shape: tuple[int, ...]) -> str:
    """A short hash of everything an export depends on: the module structure, every weight and buffer, the
    input shape, the versions of the exporter and the form of the exported graphs."""
    import onnx

    h = hashlib.sha256()
    h.update(repr(model).encode())
    shape = tuple(int(v) for v in input_shape)
    h.update(repr((shape, torch.__version__, onnx.__version__, EXPORT_FORMAT)).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _cached(folder: Path, files: list[str], write: Callable[[Path], None]) -> list[Path]:
    """The files in `folder`, written by `write(tmp)` into a temporary folder beside it first when any is
    missing; the folder appears whole or not at all, so concurrent exports never see a partial one."""
    paths = [folder / f for f in files]
    if all(p.is_file() for p in paths):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tmp)
        if all(p.is_file() for p in paths):  # another process finished it meanwhile
            return paths
        if folder.exists():  # an incomplete folder left by an interrupted copy
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not all(p.is_file() for p in paths):  # no other process finished it either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _export_copy(model: EarlyExitNet) -> EarlyExitNet:
    """The copy that is exported: BatchNorm folded, as the PyTorch engine runs it (ONNX has one layout)."""
    return prepare_for_inference(model, channels_last=False)


def exported_segments(
    model: EarlyExitNet, input_shape: tuple[int, ...], cache_dir: str | Path | None = None
) -> list[Path]:
    """One ONNX file per exit (segment k: the blocks after exit k-1 up to exit k, and exit k's head), exported
    once per weights and input shape into `cache_dir` (None: `default_cache_dir()`)."""
    shape = tuple(int(v) for v in input_shape)
    folder = Path(cache_dir or default_cache_dir()) / f"segments-{model_key(model, shape)}"
    files = [f"{SEGMENT_STEM}_{k}.onnx" for k in range(model.num_exits)]
    splits = list(range(model.num_exits - 1))
    return _cached(folder, files, lambda d: export_onnx(_export_copy(model), splits, d, shape, SEGMENT_STEM))


def exported_static(model: EarlyExitNet, input_shape: tuple[int, ...], cache_dir: str | Path | None = None) -> Path:
    """The network without exits as one ONNX file, exported once per weights and input shape into `cache_dir`."""
    shape = tuple(int(v) for v in input_shape)
    folder = Path(cache_dir or default_cache_dir()) / f"static-{model_key(model, shape)}"
    return _cached(folder, [STATIC_FILE], lambda d: export_static_onnx(_export_copy(model), d / STATIC_FILE, shape))[0]


def _threads(threads: int | None) -> int:
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")
    return torch.get_num_threads() if threads is None else threads


def _as_array(x: Inputs) -> np.ndarray:
    """Images as a C-contiguous float32 array in (n, channels, height, width) order."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().contiguous().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class OnnxEarlyExitRunner(SegmentRunner):
    """Early exit on ONNX Runtime: one session per exit, chained, with the PyTorch engine's decisions in between.
    `threads`: threads inside each operator (None: torch's current count). Files are exported on the first run
    (or `prepare`) into `cache_dir` (None: `default_cache_dir()`)."""

    engine = "onnxruntime"

    def __init__(
        self,
        model: EarlyExitNet,
        rule: ExitRule,
        temperatures: list[float] | np.ndarray | None = None,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        require_onnxruntime()
        super().__init__(model, rule, temperatures)
        self.model = model
        self.threads = _threads(threads)
        self.cache_dir = cache_dir
        self.has_confidence = model.has_confidence
        self.input_shape: tuple[int, ...] | None = None
        self.paths: list[Path] = []
        self.sessions: list[Any] = []
        self._feeds: list[str] = []  # the input name of each session
        self._fetch: list[list[str]] = []  # the outputs asked of each session

    def prepare(self, input_shape: tuple[int, ...]) -> None:
        """Export (or find in the cache) the files for inputs of this shape and open their sessions."""
        shape = tuple(int(v) for v in input_shape)
        if shape == self.input_shape:
            return
        self.paths = exported_segments(self.model, shape, self.cache_dir)
        self.sessions = [inference_session(p, self.threads) for p in self.paths]
        self._feeds = [s.get_inputs()[0].name for s in self.sessions]
        conf = ["confidences"] if self.has_confidence else []
        last = len(self.sessions) - 1
        self._fetch = [(["logits"] if k == last else ["features", "logits"]) + conf for k in range(len(self.sessions))]
        self.input_shape = shape

    def as_input(self, x: Inputs) -> np.ndarray:
        """Images as a C-contiguous float32 array, the form onnxruntime reads without copying."""
        return _as_array(x)

    def _advance(self, h: np.ndarray, k: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        out = self.sessions[k].run(self._fetch[k], {self._feeds[k]: h})
        if self._fetch[k][0] == "features":
            h, out = out[0], out[1:]
        else:
            h = None  # after the last exit nothing runs on
        # logits (1, n, classes) and confidences (1, n): this segment has one exit
        return h, out[0][0], out[1][0] if self.has_confidence else None

    def _take(self, h: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return h[keep]

    def record_outputs(
        self,
        x: Inputs,
        labels: np.ndarray,
        cum_macs: list[int] | np.ndarray,
        full_macs: int,
        batch_size: int = 1,
        info: dict | None = None,
    ) -> ExitRecord:
        """Every exit's outputs for the inputs on this engine, no sample stopping, in batches of `batch_size`: the
        numbers a replay reads to reproduce this engine's decisions (logits as exported, before temperatures)."""
        check_inputs(x, batch_size)
        self.prepare(tuple(x.shape[1:]))
        x = self.as_input(x)
        logits, confs = [], []
        for i in range(0, len(x), batch_size):
            h, zs, cs = x[i : i + batch_size], [], []
            for k in range(self.num_exits):
                h, z, c = self._advance(h, k)
                zs.append(z)
                cs.append(c)
            logits.append(np.stack(zs))  # (exits, b, classes)
            if self.has_confidence:
                confs.append(np.stack(cs))  # (exits, b)
        return record_from_batches(logits, confs, labels, cum_macs, full_macs, info)


class OnnxStaticRunner(StaticRunner):
    """The network without exits as one ONNX file in one ONNX Runtime session set for latency."""

    engine = "onnxruntime"

    def __init__(self, model: EarlyExitNet, threads: int | None = None, cache_dir: str | Path | None = None) -> None:
        require_onnxruntime()
        self.model = model
        self.threads = _threads(threads)
        self.cache_dir = cache_dir
        self.input_shape: tuple[int, ...] | None = None
        self.path: Path | None = None
        self.session: Any = None

    def prepare(self, input_shape: tuple[int, ...]) -> None:
        """Export (or find in the cache) the file for inputs of this shape and open its session."""
        shape = tuple(int(v) for v in input_shape)
        if shape == self.input_shape:
            return
        self.path = exported_static(self.model, shape, self.cache_dir)
        self.session = inference_session(self.path, self.threads)
        self.input_shape = shape

    def as_input(self, x: Inputs) -> np.ndarray:
        """Images as a C-contiguous float32 array."""
        return _as_array(x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(b, classes) logits of one batch."""
        return self.session.run(["logits"], {"input": x})[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(b,) predicted class of one batch."""
        return self.logits(x).argmax(1)
