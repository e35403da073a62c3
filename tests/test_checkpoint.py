"""Checkpoint round trip, typed metadata (version-1 files migrate, version 2 round-trips), atomic writes, and
every bad checkpoint giving one clear error line."""

import io
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aep_core.checkpoint import (
    FORMAT,
    VERSION,
    CalibrationMeta,
    CheckpointMeta,
    PruningMeta,
    SplitMetrics,
    TrainingMeta,
    load_checkpoint,
    model_meta,
    read_checkpoint,
    rewrite_meta,
    save_checkpoint,
)
from aep_core.checkpoint.discovery import discover_models
from aep_core.checkpoint.meta import migrate_v1
from aep_core.errors import CheckpointError
from aep_core.models import ModelSpec, build_model
from aep_core.paths import shipped_models_dir
from aep_core.training import MethodSettings

SHIPPED = [Path(p) for p in discover_models([shipped_models_dir()]).values()]


def _model():
    spec = ModelSpec(backbone_config={"widths": [4, 8]}, head="eenet")
    model = build_model(spec)
    return model, model_meta(spec, model)


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_round_trip(tmp_path):
    model, meta = _model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, meta)
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    for a, b in zip(model(x).logits, loaded(x).logits, strict=True):
        torch.testing.assert_close(a, b)
    loaded2, _ = load_checkpoint(path.read_bytes())
    torch.testing.assert_close(loaded2(x).logits[-1], model(x).logits[-1])


def test_version_2_file_with_every_entry_reads_back_equal(tmp_path):
    model, meta = _model()
    assert model.num_exits == 3
    meta = replace(
        meta,
        training=TrainingMeta("eenet", {"lam": 0.5}, {"epochs": 3}, [0.2, 0.3, 0.5], seconds=1.5),
        metrics={"val": SplitMetrics([0.5, 0.75, 0.8], [0.5, 0.7, 0.8], 8)},
        calibration=CalibrationMeta([0.9, 1.1, 1.0], samples=8),
        pruning=PruningMeta(2, [0, 1, 2, 3], 4, "a.pt", 0.01),
    )
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, meta, extra={"note": "kept"})
    raw = _raw(path)
    assert (raw["format"], raw["version"], raw["meta"]) == (FORMAT, VERSION, meta.to_dict())
    stored = read_checkpoint(path)
    assert stored.meta == meta and stored.extra == {"note": "kept"}
    assert stored.state_dict.keys() == model.state_dict().keys()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_migrates_and_round_trips_as_version_2(path, tmp_path):
    raw = _raw(path)
    model, meta = load_checkpoint(path)
    if raw["version"] == 1:  # the method's settings move from the flat training entry to training.settings
        flat, t = raw["meta"]["training"], meta.training
        assert MethodSettings(t.method, **t.settings).relevant() == {"method": t.method, **t.settings}
        assert t.settings == {k: flat[k] for k in t.settings}
        assert (t.config, t.ensemble_weights, t.seconds) == (flat["config"], flat["ensemble_weights"], flat["seconds"])
    out = tmp_path / path.name
    save_checkpoint(out, model, meta)
    assert _raw(out)["version"] == VERSION == 2
    again = read_checkpoint(out)
    assert again.meta == meta
    assert again.state_dict.keys() == raw["state_dict"].keys()
    assert all(torch.equal(again.state_dict[k], v) for k, v in raw["state_dict"].items())


def test_version_1_migration_moves_settings_and_keeps_a_pruned_models_kept_temperatures():
    _, meta = _model()
    v1 = meta.to_dict()
    training = v1.pop("training")
    v1["training"] = {**{k: v for k, v in training.items() if k != "settings"}, "lam": 0.5, "eenet_loss": "v2"}
    kept = len(meta.cost.exits)
    v1["pruning"] = {"cut": kept - 1, "original_exit_blocks": list(range(kept + 1)), "original_num_blocks": kept + 1}
    v1["calibration"] = {"temperatures": [0.5 + 0.1 * k for k in range(kept + 1)]}  # the source model's exits
    migrated = migrate_v1(v1)
    assert migrated["training"]["settings"] == {"lam": 0.5, "eenet_loss": "v2"}
    assert migrated["calibration"]["temperatures"] == v1["calibration"]["temperatures"][:kept]
    read = CheckpointMeta.from_dict(v1, 1)
    assert read.training.settings == {"lam": 0.5, "eenet_loss": "v2"}
    assert read.calibration.temperatures == v1["calibration"]["temperatures"][:kept]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_torch_file(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"hello, I am not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(p)


def test_truncated_file(tmp_path):
    model, meta = _model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, meta)
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_foreign_torch_file(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"weight": torch.zeros(3)}, p)
    with pytest.raises(CheckpointError, match="not an aep_core checkpoint"):
        load_checkpoint(p)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# torch.save writes pickle protocol 4 here, and the weights_only loader warns about it before refusing the file
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning:torch")
def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "meta": {}, "state_dict": {}, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(p)
    raw = pickle.dumps(Evil())
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def _drop_class_name(raw):
    raw["meta"]["dataset"]["class_names"].pop()


def _drop_exit_cost(raw):
    raw["meta"]["cost"]["exits"].pop()


def _three_channels(raw):
    raw["meta"]["dataset"]["in_channels"] = 3


def _unknown_version(raw):
    raw["version"] = 99


def _missing_field(raw):
    del raw["meta"]["dataset"]["class_names"]


def _unknown_key(raw):
    raw["meta"]["training"]["colour"] = "blue"


def _unknown_top_level_key(raw):
    raw["meta"]["note"] = "x"


def _cost_not_a_mapping(raw):
    raw["meta"]["cost"] = [1, 2]


def _model_setting_unknown(raw):
    raw["meta"]["model"]["depth_multiplier"] = 2


def _no_metadata(raw):
    del raw["meta"]


BAD_METADATA = [
    (_drop_class_name, "names 9 classes but the model predicts 10"),
    (_drop_exit_cost, "exits (after blocks [0, 1]) but the model has 3"),
    (_three_channels, "3 channels but the model's first layer reads 1"),
    (_unknown_version, "version 99; this aep_core reads versions 1, 2"),
    (_missing_field, "dataset entry lacks 'class_names'"),
    (_unknown_key, "training entry has unknown keys ['colour']"),
    (_unknown_top_level_key, "metadata entry has unknown keys ['note']"),
    (_cost_not_a_mapping, "cost entry is not a mapping"),
    (_model_setting_unknown, "Unknown model settings"),
    (_no_metadata, "lacks its metadata"),
]


@pytest.mark.parametrize("corrupt,words", BAD_METADATA, ids=lambda v: getattr(v, "__name__", "")[1:] or None)
def test_bad_metadata_is_one_clear_error_line(tmp_path, corrupt, words):
    model, meta = _model()
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, meta)
    raw = _raw(good)
    corrupt(raw)
    bad = tmp_path / "bad.pt"
    torch.save(raw, bad)
    for source in (bad, bad.read_bytes()):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(source)
        message = str(info.value)
        assert words in message and "\n" not in message, message
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)


def test_the_writer_refuses_metadata_that_disagrees_with_the_weights(tmp_path):
    model, meta = _model()
    p = tmp_path / "m.pt"
    wrong = replace(meta, dataset=replace(meta.dataset, class_names=["a", "b"]))
    with pytest.raises(CheckpointError, match="names 2 classes"):
        save_checkpoint(p, model, wrong)
    assert not p.exists()
    save_checkpoint(p, model, meta)
    with pytest.raises(CheckpointError, match="cost of 1 exits"):
        rewrite_meta(p, replace(meta, cost=replace(meta.cost, exits=meta.cost.exits[:1])))
    assert read_checkpoint(p).meta == meta


def test_rewrite_meta_keeps_weights_and_extra(tmp_path):
    model, meta = _model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, meta, extra={"train_state": {"epoch": 1}})
    before = read_checkpoint(p)
    new = replace(meta, calibration=CalibrationMeta([1.5, 0.5, 1.0]))
    rewrite_meta(p, new)
    after = read_checkpoint(p)
    assert after.meta == new and after.extra == before.extra
    assert all(torch.equal(after.state_dict[k], v) for k, v in before.state_dict.items())


def test_weights_not_matching_config(tmp_path):
    model, meta = _model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, meta)
    raw = _raw(p)
    raw["meta"]["model"]["backbone_config"] = {"widths": [4, 16]}
    torch.save(raw, p)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(p)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, meta = _model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, meta)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(p, model, replace(meta, created="later"))
    assert p.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_model_meta_describes_the_model():
    model, meta = _model()
    assert meta.model.exit_blocks == model.exit_blocks and len(meta.cost.exits) == model.num_exits
    assert meta.dataset.input_shape == (1, 28, 28) and len(meta.class_names) == model.num_classes
    assert meta.ensemble_weights is None and meta.aep_core_version and meta.created
    buf = io.BytesIO()
    torch.save(meta.to_dict(), buf)  # plain types only
    buf.seek(0)
    assert CheckpointMeta.from_dict(torch.load(buf, weights_only=True)) == meta
