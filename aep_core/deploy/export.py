"""Export for deployment across tiers: one ONNX file per segment (the blocks and exit heads a tier runs),
checked with onnxruntime against PyTorch, and a TorchScript file of a (pruned) single model.

Segment i takes what enters it (the image for the first; the previous segment's features otherwise) and
returns (features at its last exit, logits of its exits (exits, b, classes)[, EENet confidences
(exits, b)]), so a device runs segment 0, stops the samples its exits are sure of, and hands the
features of the others to the next tier. A tier that should stop between its exits can run one segment
per exit: export with a split after every exit. The network without exits (every block, then the final
classifier) exports as one file too, the static baseline an engine is timed against.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aep_core.checkpoint import atomic_write_bytes
from aep_core.errors import ConfigError
from aep_core.models import EarlyExitNet
from aep_core.models.heads import GridAvgPool, grid_pool_matrix


class Segment(nn.Module):
    """Exits first..last of an early-exit network as one module (it shares the network's weights)."""

    def __init__(self, model: EarlyExitNet, first: int, last: int) -> None:
        super().__init__()
        self.first, self.last = first, last
        self.stem = model.backbone.stem if first == 0 else nn.Identity()
        self.parts = nn.ModuleList(
            nn.Sequential(*(model.backbone.blocks[b] for b in model.segment_blocks(k))) for k in range(first, last + 1)
        )
        self.heads = nn.ModuleList(model.heads[k] for k in range(first, last + 1))
        self.has_confidence = model.has_confidence

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.stem(h)
        logits, confs = [], []
        for part, head in zip(self.parts, self.heads, strict=True):
            h = part(h)
            z, c = head(h)
            logits.append(z)
            confs.append(c)
        if self.has_confidence:
            return h, torch.stack(logits), torch.stack(confs)  # (b, c, h, w), (exits, b, classes), (exits, b)
        return h, torch.stack(logits)


class MatrixGridPool(nn.Module):
    """Average pooling of a height x width map to a pool x pool grid as one matrix product: equal to adaptive
    average pooling. Exported, it is one MatMul; the library op becomes a slow chain of gathers and selects when
    the map does not divide into the grid (7 x 7 to 4 x 4)."""

    def __init__(self, height: int, width: int, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self.register_buffer("matrix", grid_pool_matrix(height, width, pool), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h.flatten(2) @ self.matrix).unflatten(2, (self.pool, self.pool))  # (b, c, pool, pool)


def _exit_map_sizes(model: EarlyExitNet, input_shape: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(height, width) of the feature map each exit head reads."""
    sizes, h = [], torch.zeros(1, *input_shape)
    with torch.no_grad():
        for k in range(model.num_exits):
            h = model.forward_segment(h, k)
            sizes.append((int(h.shape[2]), int(h.shape[3])))
    return sizes


def for_export(model: EarlyExitNet, input_shape: tuple[int, int, int]) -> EarlyExitNet:
    """A copy of the model, in eval mode, whose exit heads pool in a form ONNX runs fast (plain average pooling
    where the map divides into the grid, else one matrix product); outputs equal the model's up to float rounding."""
    model = copy.deepcopy(model).eval()
    for head, (height, width) in zip(model.heads, _exit_map_sizes(model, input_shape), strict=True):
        member = getattr(getattr(head, "classifier", None), "net", None)
        if isinstance(member, EarlyExitNet):  # a cascade member reads the image: its own heads pool too
            head.classifier.net = for_export(member, input_shape)
        for name, child in list(head.named_children()):
            if not isinstance(child, GridAvgPool) or child.pool == 1:
                continue
            p = child.pool
            exact = height % p == 0 and width % p == 0
            setattr(head, name, nn.AvgPool2d((height // p, width // p)) if exact else MatrixGridPool(height, width, p))
    return model


def segment_ranges(num_exits: int, splits: list[int] | tuple[int, ...]) -> list[range]:
    """The exits of each segment for split points (the last exit of every segment but the last)."""
    s = [int(v) for v in splits]
    if s != sorted(set(s)) or any(not 0 <= v <= num_exits - 2 for v in s):
        raise ConfigError(
            f"Export split points are increasing exit indices in 0..{num_exits - 2}, one per segment "
            f"boundary (a tier without exits runs nothing, so it needs no file); got {s}."
        )
    bounds = [-1, *s, num_exits - 1]
    return [range(bounds[i] + 1, bounds[i + 1] + 1) for i in range(len(bounds) - 1)]


def make_segments(model: EarlyExitNet, splits: list[int] | tuple[int, ...]) -> list[Segment]:
    """One Segment per tier for the given split points, in eval mode."""
    return [Segment(model, r.start, r.stop - 1).eval() for r in segment_ranges(model.num_exits, splits)]


def _output_names(seg: Segment) -> list[str]:
    return ["features", "logits", *(["confidences"] if seg.has_confidence else [])]


@torch.no_grad()
def segment_inputs(model: EarlyExitNet, splits: list[int] | tuple[int, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """What enters each segment when the network sees `x`: the image, then each split's features."""
    out, h = [x], x
    for r in segment_ranges(model.num_exits, splits)[:-1]:
        for k in r:
            h = model.forward_segment(h, k)
        out.append(h)
    return out


def export_onnx(
    model: EarlyExitNet,
    splits: list[int] | tuple[int, ...],
    out_dir: str | Path,
    input_shape: tuple[int, int, int],
    stem: str = "segment",
) -> list[Path]:
    """Write `<stem>_<i>.onnx` for every segment (batch size free), weights inside each file; return the paths."""
    model = for_export(model, input_shape)
    segs = make_segments(model, splits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = segment_inputs(model, splits, torch.zeros(2, *input_shape))
    paths = []
    for i, (seg, x) in enumerate(zip(segs, inputs, strict=True)):
        path = out_dir / f"{stem}_{i}.onnx"
        _export(seg, x, path, "input" if i == 0 else "features_in", _output_names(seg))
        paths.append(path)
    return paths


class WithoutExits(nn.Module):
    """The network without exits as one module: every block, then the final classifier's logits (b, classes)."""

    def __init__(self, model: EarlyExitNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_final(x)


def export_static_onnx(model: EarlyExitNet, path: str | Path, input_shape: tuple[int, int, int]) -> Path:
    """Write the network without exits (input `input`, output `logits`, batch size free) to one ONNX file."""
    model = for_export(model, input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(WithoutExits(model).eval(), torch.zeros(2, *input_shape), path, "input", ["logits"])
    return path


def _export(module: nn.Module, x: torch.Tensor, path: Path, input_name: str, output_names: list[str]) -> None:
    """One module to one ONNX file, weights inside, the batch dimension free."""
    with torch.no_grad():  # an inference graph (the heads' pooling takes its forward-only form)
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        )


@dataclass
class SegmentCheck:
    """Largest absolute difference between onnxruntime and PyTorch on each output of one segment."""

    file: str
    exits: list[int]
    max_abs_diff: dict[str, float]
    ok: bool


@dataclass
class ExportCheck:
    """Each segment alone, and the segments chained from the image against the full model's per-exit outputs."""

    segments: list[SegmentCheck]
    chain_max_abs_diff: dict[str, float]
    chain_ok: bool
    atol: float
    rtol: float
    batch: int
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain_ok and all(s.ok for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type view."""
        return {**asdict(self), "ok": self.ok}

    def format(self) -> str:
        """The check as text."""
        lines = [f"{'segment':<22}{'exits':<10}" + "max |onnxruntime - torch|"]
        for s in self.segments:
            diffs = "  ".join(f"{k} {v:.2e}" for k, v in s.max_abs_diff.items())
            lines.append(f"{s.file:<22}{','.join(map(str, s.exits)):<10}{diffs}  {'ok' if s.ok else 'MISMATCH'}")
        diffs = "  ".join(f"{k} {v:.2e}" for k, v in self.chain_max_abs_diff.items())
        lines.append(f"{'chained vs full model':<32}{diffs}  {'ok' if self.chain_ok else 'MISMATCH'}")
        lines.append(f"({self.batch} random inputs; tolerance |diff| <= {self.atol:g} + {self.rtol:g} * |torch|)")
        return "\n".join(lines)


def _close(a: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> bool:
    return bool(np.all(np.abs(a - ref) <= atol + rtol * np.abs(ref)))


def require_onnxruntime() -> Any:
    """The onnxruntime module; ConfigError saying how to install it when it is missing."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(
            "ONNX Runtime is not installed: pip install 'aep-core[export]' (or pip install onnxruntime)."
        ) from e
    return onnxruntime


def inference_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session on one file, set for latency: `threads` threads inside each operator, operators
    run one after another (no pool across them), every graph optimisation on, and idle threads that sleep
    rather than spin."""
    ort = require_onnxruntime()
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Each session owns its pool. Chained sessions, or a CPU shared with other work, lose to spinning pools:
    # measured at 2 threads on a shared 2-core machine, early exit ran 4x slower at batch 1 and 1.4x at batch 256.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _session(path: Path) -> Any:
    return inference_session(path, 1)


@torch.no_grad()
def verify_onnx(
    model: EarlyExitNet,
    splits: list[int] | tuple[int, ...],
    paths: list[Path],
    input_shape: tuple[int, int, int],
    batch: int = 8,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
) -> ExportCheck:
    """Run every exported segment with onnxruntime on random inputs and compare with PyTorch: each segment on
    the features PyTorch feeds it, and the chain of ONNX segments from the image against the full model."""
    model.eval()
    segs = make_segments(model, splits)
    if len(paths) != len(segs):
        raise ConfigError(f"{len(segs)} segments for splits {list(splits)}, but {len(paths)} files were given.")
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))
    sessions = [_session(p) for p in paths]
    checks = []
    for seg, sess, h, p in zip(segs, sessions, segment_inputs(model, splits, x), paths, strict=True):
        ref = [t.numpy() for t in seg(h)]
        got = sess.run(None, {sess.get_inputs()[0].name: h.numpy()})
        names = _output_names(seg)
        diffs = {n: float(np.abs(g - r).max()) for n, g, r in zip(names, got, ref, strict=True)}
        checks.append(
            SegmentCheck(
                p.name,
                list(range(seg.first, seg.last + 1)),
                diffs,
                all(_close(g, r, atol, rtol) for g, r in zip(got, ref, strict=True)),
            )
        )
    full = model(x)
    ref_logits = torch.stack(full.logits).numpy()
    h, logits, confs = x.numpy(), [], []
    for sess in sessions:
        out = sess.run(None, {sess.get_inputs()[0].name: h})
        h = out[0]
        logits.append(out[1])
        if len(out) > 2:
            confs.append(out[2])
    chain_logits = np.concatenate(logits)
    chain = {"logits": float(np.abs(chain_logits - ref_logits).max())}
    ok = _close(chain_logits, ref_logits, atol, rtol)
    if full.confidences is not None:
        ref_conf = torch.stack(full.confidences).numpy()
        chain["confidences"] = float(np.abs(np.concatenate(confs) - ref_conf).max())
        ok = ok and _close(np.concatenate(confs), ref_conf, atol, rtol)
    return ExportCheck(checks, chain, ok, atol, rtol, batch)


def write_manifest(
    out_dir: str | Path,
    model: EarlyExitNet,
    splits: list[int] | tuple[int, ...],
    paths: list[Path],
    input_shape: tuple[int, int, int],
    check: ExportCheck | None,
    source: str = "",
) -> Path:
    """`manifest.json` beside the segments: which exits and blocks each file runs, its inputs and outputs, the
    bytes a sample hands on at each split, and the verification result."""
    from aep_core.deploy.simulator import PRECISION_BYTES, feature_sizes

    sizes = feature_sizes(model, input_shape)
    segs = []
    for i, (r, p) in enumerate(zip(segment_ranges(model.num_exits, splits), paths, strict=True)):
        shape_in = list(input_shape) if i == 0 else list(sizes.exit_shapes[r.start - 1])
        segs.append(
            {
                "file": p.name,
                "exits": list(r),
                "blocks": [b for k in r for b in model.segment_blocks(k)],
                "input": {"name": "input" if i == 0 else "features_in", "shape": ["batch", *shape_in]},
                "outputs": {
                    "features": ["batch", *sizes.exit_shapes[r.stop - 1]],
                    "logits": [len(r), "batch", model.num_classes],
                    **({"confidences": [len(r), "batch"]} if model.has_confidence else {}),
                },
                "handover_bytes": (
                    {p_: int(sizes.exit_bytes(p_)[r.stop - 1]) for p_ in PRECISION_BYTES}
                    if i < len(paths) - 1
                    else None
                ),
            }
        )
    manifest = {
        "source": source,
        "splits": [int(v) for v in splits],
        "num_exits": model.num_exits,
        "exit_blocks": list(model.exit_blocks),
        "input_shape": list(input_shape),
        "segments": segs,
        "check": None if check is None else check.to_dict(),
    }
    path = Path(out_dir) / "manifest.json"
    atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())
    return path


class AllExits(nn.Module):
    """A network as one traceable module: image -> logits of every exit (exits, b, classes), then the EENet
    confidences (exits, b) if it has them, then the AEP ensemble probabilities (b, classes) if weights are given."""

    def __init__(self, model: EarlyExitNet, weights: list[float] | None = None) -> None:
        super().__init__()
        self.model = model
        w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        if w is not None and (w.numel() != model.num_exits or (w < 0).any() or w.sum() <= 0):
            raise ConfigError(
                f"Ensemble weights must be {model.num_exits} non-negative numbers with a positive sum; got {weights}."
            )
        self.register_buffer("weights", None if w is None else w / w.sum())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        logits = torch.stack(out.logits)  # (exits, b, classes)
        res: tuple[torch.Tensor, ...] = (logits,)
        if out.confidences is not None:
            res += (torch.stack(out.confidences),)
        if self.weights is not None:
            res += ((self.weights[:, None, None] * logits.softmax(-1)).sum(0),)  # (b, classes)
        return res


def export_archive(
    model: EarlyExitNet,
    splits: list[int] | tuple[int, ...],
    input_shape: tuple[int, int, int],
    source: str = "",
) -> tuple[bytes, ExportCheck]:
    """The per-segment ONNX files of `model` cut at `splits`, checked with onnxruntime against PyTorch, and their
    manifest, as the bytes of one zip archive (what `aep export` writes to a folder)."""
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory(prefix="aep_export_") as tmp:
        out = Path(tmp)
        paths = export_onnx(model, splits, out, input_shape)
        check = verify_onnx(model, splits, paths, input_shape)
        manifest = write_manifest(out, model, splits, paths, input_shape, check, source)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in [*paths, manifest]:
                archive.write(path, path.name)
    return buffer.getvalue(), check


@torch.no_grad()
def export_torchscript(
    model: EarlyExitNet,
    path: str | Path,
    input_shape: tuple[int, int, int],
    weights: list[float] | None = None,
    batch: int = 4,
    atol: float = 1e-5,
) -> float:
    """Trace the model (all exits, plus the AEP ensemble when weights are given) to a TorchScript file, load it
    back and return the largest difference from PyTorch on random inputs; raises ConfigError above `atol`."""
    model.eval()
    wrapper = AllExits(model, weights).eval()
    example = torch.zeros(2, *input_shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=FutureWarning)
        traced = torch.jit.trace(wrapper, example)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    diff = max(float((a - b).abs().max()) for a, b in zip(loaded(x), wrapper(x), strict=True))
    if diff > atol:
        raise ConfigError(f"The TorchScript file {path} differs from the model by {diff:.2e} (> {atol:g}).")
    return diff
