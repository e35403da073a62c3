"""Per-exit outputs written by any framework: a file that says what each exit of a model answered for each
sample, with the labels, the split each sample belongs to and each exit's cumulative cost, read into one
`ExitRecord` per split so that exit rules, certified thresholds, calibration and the deployment simulator
work on a model this tool never ran. docs/BRING_YOUR_OWN.md documents the format for users.

Version 1 of the format, as a `.npz` (arrays, written with `np.savez`; read with `allow_pickle=False`):

    logits or probs   (exits, n, classes) float   one of the two: each exit's logits, or its probabilities
    labels            (n,) int                     true class index, 0 <= label < classes
    split             (n,) str                     "val" or "test" per sample; val is required
    cum_cost          (exits,) float or int        cost of a sample answered at each exit, strictly increasing
    cost_unit         () str                       "macs" or "ms"
    full_cost         () float, optional           the network without exits (default: the last cum_cost)
    confidences       (exits, n) float, optional   learned confidence branches, in [0, 1]
    class_names       (classes,) str, optional     default "0", "1", ...
    ensemble_weights  (exits,) float, optional     weights of the AEP ensemble rule (default: uniform)
    feature_sizes     (exits,) int, optional       values per sample in the feature map each exit's block hands
                                                   on (what a split after that exit sends), for `deploy`
    input_size        () int, optional             values in one input (what a tier sends before any exit)
    version           () int, optional             1

As CSV or Parquet: one row per sample with the columns `split`, `label`, `logit_<e>_<c>` or `prob_<e>_<c>`
for every exit e and class c, and optionally `confidence_<e>`; the per-file values (`cost_unit`, `cum_cost`,
optional `full_cost`, `class_names`, `ensemble_weights`, `feature_sizes`, `input_size`, `version`) in a JSON
file beside it with the same name and the suffix `.json`. A first column with an empty name (a pandas index
written without `index=False`) is ignored.

Probabilities become log-probabilities used as logits (softmax gives them back); probabilities below
PROB_FLOOR are read as PROB_FLOOR so that their logarithm is finite. Costs keep their unit in
`info["cost_unit"]` (and the full cost in `info["full_cost"]`), so reports can say milliseconds where a file
gave milliseconds. Scores are kept as float32, as in this tool's own evaluation files.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from aep_core.errors import DataError
from aep_core.evaluation import ExitRecord

FORMAT_VERSION = 1
COST_UNITS = ("macs", "ms")
COST_NAMES = {"macs": "MACs", "ms": "time"}  # what the cost is called in reports: "MACs ratio", "time ratio"
SPLITS = ("val", "test")
SUFFIXES = (".npz", ".csv", ".parquet")
MAX_VALUES = 200_000_000  # exits x samples x classes read at most (0.8 GB as float32)
MAX_FILE_BYTES = 2 * 1024**3  # on disk, and the arrays of a .npz once decompressed
PROB_FLOOR = 1e-12
PROB_TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1

SAMPLE_KEYS = ("logits", "probs", "labels", "split", "confidences")
FILE_KEYS = (
    "cum_cost",
    "cost_unit",
    "full_cost",
    "class_names",
    "ensemble_weights",
    "feature_sizes",
    "input_size",
    "version",
)
KEYS = SAMPLE_KEYS + FILE_KEYS
_SAFE_NAME = re.compile(r"^[\w][\w .()+-]{0,199}$")  # a file name kept as given
_SCORE_COLUMN = re.compile(r"^(logit|prob)_(\d+)_(\d+)$")
_CONFIDENCE_COLUMN = re.compile(r"^confidence_(\d+)$")


class OutputsFileError(DataError):
    """A per-exit outputs file is missing, unreadable, too large or malformed."""


# ---- what a file is ------------------------------------------------------------------------------


def is_outputs_file(path: str | Path) -> bool:
    """Whether `path` is a per-exit outputs file (a .csv, a .parquet, or a readable .npz that is not an
    evaluation file: without `cum_macs` and `info`) rather than an evaluation file or a checkpoint."""
    p = Path(path)
    if p.suffix in (".csv", ".parquet"):
        return True
    if p.suffix != ".npz" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            return not {"cum_macs.npy", "info.npy"} & set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def sidecar_path(path: str | Path) -> Path:
    """The JSON file holding the per-file values of a CSV or Parquet outputs file: `<name>.json` beside it."""
    return Path(path).with_suffix(".json")


def cost_unit(rec: ExitRecord) -> str:
    """The unit of a record's costs: "ms" or "macs" (records of this tool's own models are in MACs)."""
    return str(rec.info.get("cost_unit", "macs"))


def cost_name(rec: ExitRecord) -> str:
    """What the record's cost is called in reports: "MACs", or "time" for milliseconds."""
    return COST_NAMES.get(cost_unit(rec), "MACs")


def format_cost(value: float, unit: str) -> str:
    """A cost in its unit for people: "1.234 M MACs" or "1.234 ms"."""
    return f"{value:.3f} ms" if unit == "ms" else f"{value / 1e6:.3f} M MACs"


def restore_costs(rec: ExitRecord) -> ExitRecord:
    """The record with the full network's cost exactly as its outputs file gave it (an evaluation file reads
    the full cost back as a whole number, which truncates milliseconds); unchanged for other records."""
    full = rec.info.get("full_cost")
    if "cost_unit" not in rec.info or not isinstance(full, int | float) or full == rec.full_macs:
        return rec
    return replace(rec, full_macs=full)


# ---- reading -------------------------------------------------------------------------------------


def read_outputs(path: str | Path) -> dict[str, ExitRecord]:
    """Read a per-exit outputs file (.npz, .csv or .parquet; see the module docstring) into one record per
    split it holds ("val", and "test" if present). OutputsFileError with one clear message for a missing,
    oversized or malformed file."""
    p = Path(path)
    if p.is_dir():
        raise OutputsFileError(f"{p} is a directory, not a per-exit outputs file (.npz, .csv or .parquet).")
    if not p.is_file():
        raise OutputsFileError(f"The per-exit outputs file {p} does not exist.")
    if p.suffix not in SUFFIXES:
        raise OutputsFileError(f"{p.name}: a per-exit outputs file is a .npz, .csv or .parquet file.")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OutputsFileError(
            f"{p.name} is {_bytes(size)}; the most this tool reads is {_bytes(MAX_FILE_BYTES)}. Keep fewer samples "
            "(a few thousand per split are enough to choose thresholds)."
        )
    if p.suffix == ".npz":
        arrays = _read_npz(p)
    else:
        arrays = _read_table(p)
    return records_from_arrays(arrays, p.name)


def read_uploaded_outputs(files: Mapping[str, bytes]) -> tuple[str, dict[str, ExitRecord]]:
    """Read a per-exit outputs file handed over as contents rather than a path (an upload): `files` maps file
    names to bytes, one outputs file (.npz, .csv or .parquet) and, for a CSV or Parquet file, its JSON sidecar
    (the .json of the same name, or the only .json given). Returns the outputs file's name and its records.
    OutputsFileError with one clear message for files that are not one outputs file, or a malformed one."""
    given = {Path(name).name: data for name, data in files.items()}
    kinds = {name: Path(name).suffix.lower() for name in given}
    others = [name for name, suffix in kinds.items() if suffix not in (*SUFFIXES, ".json")]
    if others:
        raise OutputsFileError(
            f"{others[0]} is neither a per-exit outputs file (.npz, .csv or .parquet) nor the .json beside one."
        )
    outputs = [name for name, suffix in kinds.items() if suffix in SUFFIXES]
    sidecars = [name for name, suffix in kinds.items() if suffix == ".json"]
    if not outputs:
        raise OutputsFileError(
            f"{sidecars[0]} alone is not a per-exit outputs file: a .json holds the per-file values of the .csv or "
            ".parquet file it comes with; give both together."
            if sidecars
            else "No per-exit outputs file was given (.npz, or .csv or .parquet with its .json)."
        )
    if len(outputs) > 1:
        raise OutputsFileError(f"Give one per-exit outputs file at a time, got {len(outputs)}: {', '.join(outputs)}.")
    name = outputs[0]
    stem, suffix = Path(name).stem, kinds[name]
    if suffix == ".npz" and sidecars:
        raise OutputsFileError(f"{name} holds its per-file values itself; leave out {sidecars[0]}.")
    sidecar = next((s for s in sidecars if Path(s).stem == stem), sidecars[0] if len(sidecars) == 1 else None)
    if suffix != ".npz" and sidecars and sidecar is None:
        raise OutputsFileError(f"{name} comes with {len(sidecars)} .json files; give only {stem}.json beside it.")
    # the sender's names are kept only where they are plain file names (messages name the file)
    local = (stem if _SAFE_NAME.match(stem) else "outputs") + suffix
    with tempfile.TemporaryDirectory(prefix="aep_outputs_") as folder:
        path = Path(folder) / local
        path.write_bytes(given[name])
        if sidecar is not None:
            sidecar_path(path).write_bytes(given[sidecar])
        return name, read_outputs(path)


def _npz_headers(p: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in a .npz, read from the headers without loading any data."""
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for member in zf.infolist():
                with zf.open(member) as f:
                    version = fmt.read_magic(f)
                    read = readers.get(version, getattr(fmt, "_read_array_header", None))
                    shape, _, dtype = read(f) if version in readers else read(f, version)
                out[member.filename.removesuffix(".npy")] = (tuple(int(v) for v in shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError, TypeError) as e:
        raise OutputsFileError(f"{p.name} is not a readable .npz file (a zip of .npy arrays): {e}") from None
    return out


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz outputs file, once their keys, dtypes and sizes were checked from the headers."""
    headers = _npz_headers(p)
    _check_keys(set(headers), KEYS, p.name, "keys")
    pickled = sorted(k for k, (_, dtype) in headers.items() if dtype.hasobject)
    if pickled:
        raise OutputsFileError(
            f"{p.name}: {', '.join(pickled)} hold Python objects (pickled), which are never loaded; save "
            "strings as a string array (np.array(names, dtype=str)) and numbers as numeric arrays."
        )
    scores = next((headers[k][0] for k in ("logits", "probs") if k in headers), ())
    _check_size(scores, p.name)
    nbytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    if nbytes > MAX_FILE_BYTES:
        raise OutputsFileError(
            f"{p.name} decompresses to {_bytes(nbytes)}; the most this tool loads is {_bytes(MAX_FILE_BYTES)}. "
            "Keep fewer samples."
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in headers}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise OutputsFileError(f"{p.name} is not a readable .npz file: {e}") from None


def _bytes(n: int) -> str:
    """A size for people: "512 bytes", "3.4 MB", "2 GB"."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _check_size(scores_shape: tuple[int, ...], name: str) -> None:
    """OutputsFileError when the per-exit scores hold more than MAX_VALUES values."""
    total = math.prod(scores_shape) if scores_shape else 0
    if total > MAX_VALUES:
        dims = " x ".join(f"{v:,}" for v in scores_shape)
        raise OutputsFileError(
            f"{name} holds {dims} = {total:,} per-exit scores; the most this tool loads is {MAX_VALUES:,} "
            "(exits x samples x classes). Keep fewer samples (a few thousand per split are enough to choose "
            "thresholds)."
        )


def _check_keys(found: set[str], allowed: tuple[str, ...], name: str, what: str) -> None:
    unknown = sorted(found - set(allowed))
    if unknown:
        raise OutputsFileError(
            f"{name}: unknown {what} {', '.join(repr(k) for k in unknown)}; a per-exit outputs file (version "
            f"{FORMAT_VERSION}) holds {', '.join(allowed)} (see docs/BRING_YOUR_OWN.md)."
        )


def _read_sidecar(p: Path) -> dict[str, Any]:
    """The per-file values of a CSV or Parquet outputs file, from the JSON file beside it."""
    side = sidecar_path(p)
    if not side.is_file():
        raise OutputsFileError(
            f"{p.name} needs {side.name} beside it, a JSON object with the per-file values: cost_unit "
            '("macs" or "ms") and cum_cost (one cost per exit), optionally full_cost, class_names, '
            "ensemble_weights, feature_sizes, input_size."
        )
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputsFileError(f"{side.name} is not readable JSON: {e}") from None
    if not isinstance(meta, dict):
        raise OutputsFileError(f"{side.name} must hold a JSON object (keys cost_unit, cum_cost, ...).")
    _check_keys(set(meta), FILE_KEYS, side.name, "keys")
    out: dict[str, np.ndarray] = {}
    for k, v in meta.items():
        try:
            out[k] = np.asarray(v)
        except ValueError as e:
            raise OutputsFileError(f"{side.name}: {k} is not an array: {e}") from None
        if out[k].dtype.hasobject:
            raise OutputsFileError(f"{side.name}: {k} must be a number, a string or a flat list of them.")
    return out


def _read_table(p: Path) -> dict[str, np.ndarray]:
    """The arrays of a CSV or Parquet outputs file and its JSON sidecar."""
    meta = _read_sidecar(p)
    columns = _read_parquet(p) if p.suffix == ".parquet" else _read_csv(p)
    return {**meta, **_columns_to_arrays(columns, p.name)}


def _layout(names: list[str], source: str) -> tuple[str, int, int, int]:
    """(score kind "logit" or "prob", exits, classes, confidence columns) the column names describe;
    OutputsFileError for unknown, missing or mixed columns."""
    kinds, exits, classes, confs = set(), set(), set(), set()
    for c in names:
        m = _SCORE_COLUMN.match(c)
        if m:
            kinds.add(m[1])
            exits.add(int(m[2]))
            classes.add(int(m[3]))
        elif _CONFIDENCE_COLUMN.match(c):
            confs.add(int(c.split("_")[1]))
        elif c not in ("split", "label"):
            raise OutputsFileError(
                f"{source}: unknown column {c!r}; the columns are split, label, logit_<exit>_<class> (or "
                "prob_<exit>_<class>) for every exit and class, and optionally confidence_<exit>."
            )
    missing_fixed = [c for c in ("split", "label") if c not in names]
    if missing_fixed:
        raise OutputsFileError(f"{source}: the column {missing_fixed[0]!r} is missing.")
    if len(kinds) != 1:
        raise OutputsFileError(
            f"{source}: give each exit's scores as logit_<exit>_<class> columns or as prob_<exit>_<class> "
            f"columns, {'not both' if kinds else 'none were found'}."
        )
    kind = kinds.pop()
    e, c = max(exits) + 1, max(classes) + 1
    expected = {f"{kind}_{i}_{j}" for i in range(e) for j in range(c)}
    gap = sorted(expected - set(names), key=lambda s: [int(v) for v in s.split("_")[1:]])
    if gap:
        raise OutputsFileError(
            f"{source}: the column {gap[0]!r} is missing ({len(gap)} of the {e} x {c} score columns are)."
        )
    if confs and confs != set(range(e)):
        raise OutputsFileError(f"{source}: give confidence_<exit> for every exit 0..{e - 1} or for none.")
    return kind, e, c, len(confs)


def _read_csv(p: Path) -> dict[str, np.ndarray]:
    """The columns of a CSV outputs file: split as str, everything else as float64."""
    try:
        with p.open(newline="") as f:
            rows = sum(1 for _ in f)  # an upper bound on the samples, to check the size before reading
            f.seek(0)
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise OutputsFileError(f"{p.name} is empty.")
            skip = 1 if header and header[0].strip() in ("", "Unnamed: 0") else 0
            names = [h.strip() for h in header[skip:]]
            _, e, c, _ = _layout(names, p.name)
            _check_size((e, max(rows - 1, 0), c), p.name)
            numeric = [i for i, name in enumerate(names) if name != "split"]
            split_at = names.index("split")
            values = np.empty((max(rows - 1, 0), len(numeric)), dtype=np.float64)
            splits: list[str] = []
            n = 0
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                row = row[skip:]
                if len(row) != len(names):
                    raise OutputsFileError(f"{p.name}, line {line}: {len(row)} values for {len(names)} columns.")
                splits.append(row[split_at].strip())
                try:
                    values[n] = [float(row[i]) if row[i].strip() else math.nan for i in numeric]
                except ValueError:
                    bad = next(row[i] for i in numeric if not _is_number(row[i]))
                    raise OutputsFileError(f"{p.name}, line {line}: {bad!r} is not a number.") from None
                n += 1
    except UnicodeDecodeError as e:
        raise OutputsFileError(f"{p.name} is not a text CSV file: {e}") from None
    except csv.Error as e:
        raise OutputsFileError(f"{p.name} is not a readable CSV file: {e}") from None
    out = {name: values[:n, j] for j, name in enumerate(names[i] for i in numeric)}
    out["split"] = np.asarray(splits, dtype=str)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return not text.strip()
    return True


def _read_parquet(p: Path) -> dict[str, np.ndarray]:
    """The columns of a Parquet outputs file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OutputsFileError(
            f"Reading {p.name} needs pyarrow (`pip install pyarrow`); or save the outputs as .npz or .csv."
        ) from None
    try:
        pf = pq.ParquetFile(p)
        names = [n for n in pf.schema_arrow.names if n not in ("__index_level_0__", "")]
        _, e, c, _ = _layout(names, p.name)
        _check_size((e, pf.metadata.num_rows, c), p.name)
        table = pf.read(columns=names)
    except OutputsFileError:
        raise
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise OutputsFileError(f"{p.name} is not a readable Parquet file: {e}") from None
    out: dict[str, np.ndarray] = {}
    for name in names:
        col = table.column(name).to_numpy(zero_copy_only=False)
        out[name] = col.astype(str) if name == "split" else _as_float(col, name, p.name)
    return out


def _as_float(col: np.ndarray, name: str, source: str) -> np.ndarray:
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        raise OutputsFileError(f"{source}: the column {name!r} holds values that are not numbers.") from None


def _columns_to_arrays(columns: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The per-sample arrays (logits or probs, labels, split, confidences) from a table's columns."""
    kind, e, c, confs = _layout(list(columns), source)
    n = len(columns["label"])
    scores = np.empty((e, n, c), dtype=np.float64)
    for i in range(e):
        for j in range(c):
            scores[i, :, j] = columns[f"{kind}_{i}_{j}"]
    out = {"logits" if kind == "logit" else "probs": scores, "labels": columns["label"], "split": columns["split"]}
    if confs:
        out["confidences"] = np.stack([columns[f"confidence_{i}"] for i in range(e)])
    return out


# ---- checking and building the records -----------------------------------------------------------


def _fail(source: str, message: str) -> OutputsFileError:
    return OutputsFileError(f"{source}: {message}")


def _numeric(a: np.ndarray, key: str, source: str) -> np.ndarray:
    if a.dtype.kind not in "fiub":
        raise _fail(source, f"{key} must be numbers, got {a.dtype} values.")
    return a


def _scalar(arrays: dict[str, np.ndarray], key: str, source: str) -> np.ndarray:
    a = arrays[key]
    if a.ndim != 0 and a.shape != (1,):
        raise _fail(source, f"{key} must be a single value, got an array of shape {a.shape}.")
    return a.reshape(())


def _string(arrays: dict[str, np.ndarray], key: str, source: str) -> str:
    a = _scalar(arrays, key, source)
    if a.dtype.kind not in "US":
        raise _fail(source, f"{key} must be a string, got {a.dtype} value {a!s}.")
    v = a.item()
    return (v.decode() if isinstance(v, bytes) else str(v)).strip()


def _finite(a: np.ndarray, key: str, source: str) -> np.ndarray:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise _fail(
            source,
            f"{key} holds {int(bad.sum()):,} NaN or infinite values (the first at index {tuple(where)}); "
            "every value must be a finite number.",
        )
    return a


def _whole(a: np.ndarray, key: str, source: str) -> np.ndarray:
    """Integer values of `a` (ints, or floats that are whole numbers, as a CSV column holds)."""
    _finite(_numeric(a, key, source), key, source)
    if a.dtype.kind == "f" and not np.all(a == np.round(a)):
        raise _fail(source, f"{key} must be whole numbers, got {a[a != np.round(a)].ravel()[0]:g}.")
    return a.astype(np.int64)


def _shape(a: np.ndarray, shape: tuple[int, ...], key: str, source: str, what: str) -> None:
    if a.shape != shape:
        raise _fail(source, f"{key} has shape {a.shape}; expected {shape} ({what}).")


def _scores(arrays: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, bool]:
    """(exits, n, classes) logits (log-probabilities for a file of probabilities) and whether probabilities
    were given."""
    given = [k for k in ("logits", "probs") if k in arrays]
    if len(given) != 1:
        raise _fail(
            source,
            "give each exit's scores as logits or as probs (exits, samples, classes), "
            + ("not both." if given else "neither was found."),
        )
    key = given[0]
    a = _numeric(arrays[key], key, source)
    if a.ndim != 3:
        raise _fail(source, f"{key} has shape {a.shape}; expected (exits, samples, classes), 3 dimensions.")
    e, n, c = a.shape
    if e < 2 or c < 2 or n < 1:
        raise _fail(source, f"{key} has shape {a.shape}; expected at least 2 exits, 1 sample and 2 classes.")
    _check_size(a.shape, source)
    _finite(a, key, source)
    if key == "logits":
        return a.astype(np.float32, copy=False), False
    p = a.astype(np.float64)
    if p.min() < 0 or p.max() > 1:
        raise _fail(source, f"probs must lie in [0, 1], got values from {p.min():g} to {p.max():g}.")
    sums = p.sum(-1)
    worst = np.unravel_index(np.abs(sums - 1).argmax(), sums.shape)
    if abs(sums[worst] - 1) > PROB_TOLERANCE:
        raise _fail(
            source,
            f"the probabilities of exit {worst[0]}, sample {worst[1]} sum to {sums[worst]:.6g}; each exit's "
            f"probabilities over the classes must sum to 1 (within {PROB_TOLERANCE:g}). Give logits instead if "
            "these are not probabilities.",
        )
    return np.log(np.maximum(p, PROB_FLOOR)).astype(np.float32), True


def _costs(arrays: dict[str, np.ndarray], e: int, source: str) -> tuple[np.ndarray, float | int, str]:
    """Cumulative costs (exits,), the full network's cost and the unit, checked."""
    for key in ("cum_cost", "cost_unit"):
        if key not in arrays:
            raise _fail(source, f"{key} is missing: {_COST_HELP}")
    unit = _string(arrays, "cost_unit", source).lower()
    if unit not in COST_UNITS:
        raise _fail(source, f"cost_unit must be one of {', '.join(COST_UNITS)}, got {unit!r}.")
    cum = _finite(_numeric(arrays["cum_cost"], "cum_cost", source), "cum_cost", source)
    _shape(cum, (e,), "cum_cost", source, "one cumulative cost per exit")
    if not cum[0] > 0 or np.any(np.diff(cum) <= 0):
        raise _fail(
            source,
            f"cum_cost must be positive and strictly increasing (each exit costs more than the one before), got "
            f"{[float(v) for v in cum]}.",
        )
    full: float | int = cum[-1].item()
    if "full_cost" in arrays:
        f = _finite(_numeric(_scalar(arrays, "full_cost", source), "full_cost", source), "full_cost", source)
        if not f > 0:
            raise _fail(source, f"full_cost must be positive, got {f.item():g}.")
        full = f.item()
    integral = unit == "macs" and np.all(cum == np.round(cum)) and float(full).is_integer()
    if integral:
        return cum.astype(np.int64), int(full), unit
    return cum.astype(np.float64), float(full), unit


_COST_HELP = (
    'give cum_cost (one cumulative cost per exit: what a sample answered at that exit cost) and cost_unit ("macs" '
    'or "ms").'
)


def _labels(arrays: dict[str, np.ndarray], n: int, c: int, source: str) -> np.ndarray:
    if "labels" not in arrays:
        raise _fail(source, "labels (one true class index per sample) are missing.")
    labels = _whole(arrays["labels"], "labels", source)
    _shape(labels, (n,), "labels", source, "one label per sample")
    bad = (labels < 0) | (labels >= c)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(
            source,
            f"{int(bad.sum()):,} labels are out of range (sample {i} has {labels[i]}); labels are class indices "
            f"0 to {c - 1}.",
        )
    return labels


def _split(arrays: dict[str, np.ndarray], n: int, source: str) -> np.ndarray:
    if "split" not in arrays:
        raise _fail(source, 'split (one of "val" or "test" per sample) is missing.')
    s = arrays["split"]
    if s.dtype.kind not in "US":
        raise _fail(source, f'split must hold the strings "val" and "test", got {s.dtype} values.')
    _shape(s, (n,), "split", source, "one split name per sample")
    s = np.char.strip(np.char.lower(s.astype(str)))
    unknown = sorted(set(np.unique(s).tolist()) - set(SPLITS))
    if unknown:
        raise _fail(source, f'split holds {unknown[0]!r}; each sample is "val" or "test".')
    if not (s == "val").any():
        raise _fail(
            source,
            'no sample has split "val": thresholds, temperatures and every other choice are made on the validation '
            "samples (test samples only report). Mark some samples as val.",
        )
    return s


def _optional_info(arrays: dict[str, np.ndarray], e: int, c: int, source: str) -> dict[str, Any]:
    """class_names, ensemble_weights, feature_sizes and input_size, checked, as plain values."""
    info: dict[str, Any] = {}
    names = arrays.get("class_names")
    if names is None:
        info["class_names"] = [str(i) for i in range(c)]
    else:
        if names.dtype.kind not in "US":
            raise _fail(source, f"class_names must be strings, got {names.dtype} values.")
        _shape(names, (c,), "class_names", source, "one name per class")
        info["class_names"] = [str(v) for v in names.astype(str).tolist()]
    if "ensemble_weights" in arrays:
        w = _finite(_numeric(arrays["ensemble_weights"], "ensemble_weights", source), "ensemble_weights", source)
        _shape(w, (e,), "ensemble_weights", source, "one weight per exit")
        if (w < 0).any() or not w[0] > 0:
            raise _fail(source, f"ensemble_weights must be >= 0 with a positive first one, got {w.tolist()}.")
        info["ensemble_weights"] = [float(v) for v in w]
    if "feature_sizes" in arrays:
        f = _whole(arrays["feature_sizes"], "feature_sizes", source)
        _shape(f, (e,), "feature_sizes", source, "values per sample in the feature map at each exit")
        if (f <= 0).any():
            raise _fail(source, f"feature_sizes must be positive numbers of values, got {f.tolist()}.")
        info["feature_sizes"] = [int(v) for v in f]
    if "input_size" in arrays:
        i = _whole(_scalar(arrays, "input_size", source), "input_size", source)
        if not i > 0:
            raise _fail(source, f"input_size must be a positive number of values, got {int(i)}.")
        info["input_size"] = int(i)
    return info


def records_from_arrays(arrays: dict[str, np.ndarray], source: str = "outputs") -> dict[str, ExitRecord]:
    """One ExitRecord per split from the arrays of a per-exit outputs file (see the module docstring), checked;
    `source` names the file in messages. OutputsFileError with one clear message for anything malformed."""
    _check_keys(set(arrays), KEYS, source, "keys")
    if "version" in arrays:
        v = _scalar(arrays, "version", source)
        if v.dtype.kind not in "iuf" or v.item() != FORMAT_VERSION:
            raise _fail(source, f"version {v.item()!r} is not supported; this tool reads version {FORMAT_VERSION}.")
    logits, from_probs = _scores(arrays, source)
    e, n, c = logits.shape
    labels = _labels(arrays, n, c, source)
    split = _split(arrays, n, source)
    cum, full, unit = _costs(arrays, e, source)
    confidences = None
    if "confidences" in arrays:
        confidences = _finite(_numeric(arrays["confidences"], "confidences", source), "confidences", source)
        _shape(confidences, (e, n), "confidences", source, "one confidence per exit and sample")
        if confidences.min() < 0 or confidences.max() > 1:
            raise _fail(source, "confidences must lie in [0, 1].")
        confidences = confidences.astype(np.float32)
    info = {
        "outputs_file": source,
        "cost_unit": unit,
        "full_cost": full,
        "scores": "probabilities" if from_probs else "logits",
        **_optional_info(arrays, e, c, source),
    }
    out: dict[str, ExitRecord] = {}
    for s in SPLITS:
        rows = np.flatnonzero(split == s)
        if len(rows) == 0:
            continue
        out[s] = ExitRecord(
            np.ascontiguousarray(logits[:, rows]),
            labels[rows],
            cum.copy(),
            full,
            None if confidences is None else np.ascontiguousarray(confidences[:, rows]),
            {"split": s, **info},
        )
    return out


def split_record(records: dict[str, ExitRecord], split: str, source: str) -> ExitRecord:
    """The record of `split` among those an outputs file gave; OutputsFileError naming the splits it holds."""
    if split not in records:
        held = " and ".join(records)
        raise OutputsFileError(f"{source} holds {held} samples only; it has no {split} split.")
    return records[split]
