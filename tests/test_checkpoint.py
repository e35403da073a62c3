"""Checkpoint round trip, atomic writes, and every bad checkpoint giving a clear error."""
import io
import os
import pickle

import pytest
import torch

from aep_core.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from aep_core.errors import CheckpointError
from aep_core.models import ModelSpec, build_model


def _model():
    spec = ModelSpec(backbone_config={"widths": [4, 8]}, head="eenet")
    return build_model(spec), {"model": spec.to_dict(), "note": "x"}


def test_round_trip(tmp_path):
    model, meta = _model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, meta)
    loaded, meta2 = load_checkpoint(path)
    assert meta2["note"] == "x"
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    for a, b in zip(model(x).logits, loaded(x).logits):
        torch.testing.assert_close(a, b)
    loaded2, _ = load_checkpoint(path.read_bytes())
    torch.testing.assert_close(loaded2(x).logits[-1], model(x).logits[-1])


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


def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "meta": {}, "state_dict": {}, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(p)
    raw = pickle.dumps(Evil())
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_weights_not_matching_config(tmp_path):
    model, meta = _model()
    meta["model"]["backbone_config"] = {"widths": [4, 16]}
    p = tmp_path / "m.pt"
    save_checkpoint(p, model, meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(p)


def test_wrong_version(tmp_path):
    p = tmp_path / "m.pt"
    torch.save({"format": FORMAT, "version": 99, "meta": {}, "state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="version 99"):
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
        save_checkpoint(p, model, {**meta, "note": "new"})
    assert p.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
