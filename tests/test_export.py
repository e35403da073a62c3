"""Export round trips: per-segment ONNX files match PyTorch under onnxruntime and chain back into the full
model's per-exit outputs; a pruned model's TorchScript file reproduces it."""

import json

import numpy as np
import pytest
import torch

from aep_core.analysis.pruning import prune_model
from aep_core.checkpoint import TrainingMeta, model_meta
from aep_core.deploy.export import (
    Segment,
    export_onnx,
    export_torchscript,
    make_segments,
    segment_ranges,
    verify_onnx,
    write_manifest,
)
from aep_core.errors import ConfigError
from aep_core.models import ModelSpec, build_model


def tiny(head: str = "aep", backbone: str = "compact_cnn", pool: int = 1):
    torch.manual_seed(0)
    cfg = {"widths": [4, 8, 8]} if backbone == "compact_cnn" else {"depth": 8, "width": 4}
    spec = ModelSpec(backbone=backbone, backbone_config=cfg, in_channels=1, image_size=12, head=head, head_pool=pool)
    model = build_model(spec).eval()
    for m in model.modules():  # non-trivial batch-norm statistics, so a wrong export cannot pass by chance
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, spec


def test_segments_in_pytorch_reproduce_the_model():
    model, _ = tiny("eenet")
    x = torch.randn(3, 1, 12, 12)
    full = model(x)
    h, logits, confs = x, [], []
    for seg in make_segments(model, [0, 2]):
        h, z, c = seg(h)
        logits.append(z)
        confs.append(c)
    torch.testing.assert_close(torch.cat(logits), torch.stack(full.logits))
    torch.testing.assert_close(torch.cat(confs), torch.stack(full.confidences))
    assert [list(r) for r in segment_ranges(model.num_exits, [0, 2])] == [[0], [1, 2], [3, 4]]


@pytest.mark.parametrize("head,backbone,pool,splits", [("aep", "compact_cnn", 1, [1]), ("eenet", "resnet", 2, [0, 1])])
def test_onnx_round_trip(tmp_path, head, backbone, pool, splits):
    model, _ = tiny(head, backbone, pool)
    paths = export_onnx(model, splits, tmp_path, (1, 12, 12))
    assert [p.name for p in paths] == [f"segment_{i}.onnx" for i in range(len(splits) + 1)]
    check = verify_onnx(model, splits, paths, (1, 12, 12), batch=5)
    assert check.ok, check.format()
    assert len(check.segments) == len(splits) + 1 and check.chain_max_abs_diff["logits"] < 1e-4
    if head == "eenet":
        assert "confidences" in check.chain_max_abs_diff
    # the files run alone, at a batch size other than the one they were traced with
    import onnxruntime as ort

    sess = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 1, 12, 12)
    out = sess.run(None, {"input": x.numpy()})
    ref = Segment(model, 0, splits[0])(x)
    for got, want in zip(out, ref, strict=True):
        np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4, rtol=1e-3)
    m = json.loads(write_manifest(tmp_path, model, splits, paths, (1, 12, 12), check, "tiny.pt").read_text())
    assert [s["exits"] for s in m["segments"]] == [list(r) for r in segment_ranges(model.num_exits, splits)]
    assert m["segments"][0]["handover_bytes"]["fp32"] == 4 * int(np.prod(ref[0].shape[1:]))
    assert m["segments"][-1]["handover_bytes"] is None and m["check"]["ok"]


def test_verification_catches_a_wrong_file(tmp_path):
    model, _ = tiny()
    paths = export_onnx(model, [1], tmp_path, (1, 12, 12))
    with torch.no_grad():
        model.heads[0].fc.bias += 1.0  # the files now describe another network
    check = verify_onnx(model, [1], paths, (1, 12, 12))
    assert not check.ok and not check.segments[0].ok and check.segments[1].ok and not check.chain_ok
    assert "MISMATCH" in check.format()


@pytest.mark.parametrize("splits", [[1, 1], [3, 1], [4], [-1]])
def test_export_splits_are_checked(splits):
    model, _ = tiny()
    with pytest.raises(ConfigError, match="increasing exit indices"):
        make_segments(model, splits)


@pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:FutureWarning")
def test_torchscript_of_a_pruned_model(tmp_path):
    model, spec = tiny()
    meta = model_meta(spec, model, training=TrainingMeta("aep", ensemble_weights=[0.1, 0.2, 0.3, 0.2, 0.2]))
    pruned, pmeta = prune_model(model, meta, 2)
    w = pmeta.ensemble_weights
    assert w == [0.1, 0.2, 0.3]
    path = tmp_path / "pruned.ts"
    diff = export_torchscript(pruned, path, (1, 12, 12), w)
    assert diff <= 1e-5
    loaded = torch.jit.load(str(path))
    x = torch.randn(6, 1, 12, 12)
    logits, probs = loaded(x)
    with torch.no_grad():
        ref = torch.stack(model(x, upto=2).logits)  # the pruned model computes exactly the kept exits
        ens = sum(wk / sum(w) * z.softmax(-1) for wk, z in zip(w, ref, strict=True))
    assert logits.shape == (3, 6, 10)
    torch.testing.assert_close(logits, ref)
    torch.testing.assert_close(probs, ens)
    with pytest.raises(ConfigError, match="Ensemble weights"):
        export_torchscript(pruned, path, (1, 12, 12), [1.0])


@pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:FutureWarning")
def test_cli_export_writes_checked_segments_and_torchscript(tmp_path, capsys):
    from aep_core.checkpoint import save_checkpoint
    from aep_core.cli.main import main

    model, spec = tiny()
    training = TrainingMeta("aep", ensemble_weights=[0.2] * 5)
    save_checkpoint(tmp_path / "tiny.pt", model, model_meta(spec, model, training=training))
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "tiny.pt"), "--splits", "1", "--out", str(out), "--prune", "--cut", "2"]) == 0
    text = capsys.readouterr().out
    assert "MISMATCH" not in text and text.count(" ok") == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "segment_0.onnx",
        "segment_1.onnx",
        "tiny.pruned.torchscript.pt",
    ]
    logits, probs = torch.jit.load(str(out / "tiny.pruned.torchscript.pt"))(torch.zeros(2, 1, 12, 12))
    assert logits.shape == (3, 2, 10) and probs.shape == (2, 10)
    assert main(["export", str(tmp_path / "tiny.pt"), "--splits", "4", "--out", str(out)]) == 2
    assert "increasing exit indices" in capsys.readouterr().err


def test_grid_pooling_exports_as_plain_ops(tmp_path):
    """Exit heads pooling to a grid the map does not divide into (6 x 6 and 3 x 3 to 4 x 4) export as average
    pooling or one matrix product, not as the slow chain of gathers and selects of the library op, with the
    model's outputs."""
    import onnx

    from aep_core.deploy.export import export_static_onnx, for_export

    model, _ = tiny("eenet", "compact_cnn", pool=4)
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        ref, got = model(x), for_export(model, (1, 12, 12))(x)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(ref.logits), atol=1e-5, rtol=1e-5)
    paths = export_onnx(model, [0, 2], tmp_path, (1, 12, 12))
    paths.append(export_static_onnx(model, tmp_path / "static.onnx", (1, 12, 12)))
    for p in paths:
        ops = {n.op_type for n in onnx.load(str(p)).graph.node}
        assert not ops & {"Where", "GatherND", "Gather", "ScatterND"}, (p.name, sorted(ops))
    assert verify_onnx(model, [0, 2], paths[:-1], (1, 12, 12), batch=5).ok
