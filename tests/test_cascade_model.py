"""A cascade of separate networks is an early-exit model like any other: exit k is member k's network and costs
members 0..k; the engines really stop and decide as the replay does; its checkpoint round-trips, is built by
`aep cascade` (and refused in one line for bad members), is read by `info`, `solve` and the other commands and by
every app page; pruning after exit 0 leaves member 0; and its records replayed with the max-probability rule
agree with the two-network replay of `exits.cascade`."""

import json

import numpy as np
import pytest
import torch
from app_helpers import PAGES, run_app
from test_cli import ROOT

from aep_core.analysis.pruning import prune_model
from aep_core.checkpoint import DatasetMeta, TrainingMeta, load_checkpoint, model_meta, save_checkpoint
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.cost import count_params, exit_costs
from aep_core.data import load_dataset
from aep_core.errors import ConfigError
from aep_core.evaluation import collect_outputs, load_evaluation, save_evaluation
from aep_core.exits.cascade import cascade_replay
from aep_core.exits.rules import ModelExits, make_rule, replay_rule
from aep_core.exits.runtime import EarlyExitRunner, record_outputs
from aep_core.models import ModelSpec, build_model
from aep_core.models.cascade import build_cascade, make_cascade, network_without_exits

SHIPPED = ROOT / "assets" / "models"
# Two tiny members: a single-exit network, then a network with early exits (the cascade uses its final exit).
SMALL = ModelSpec(backbone_config={"widths": [4, 8]}, placement=[])
BIG = ModelSpec(backbone_config={"widths": [8, 16, 32]}, placement="stages")


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return load_dataset("fashion-mnist-slice")


def save_member(path, spec: ModelSpec, bundle, seed: int, class_names=None, records: bool = True):
    """An untrained member checkpoint on the slice's data, with its val/test evaluation files unless not
    `records`."""
    torch.manual_seed(seed)
    spec = ModelSpec(**spec.to_dict())  # building fills in the exits
    model = build_model(spec).eval()
    data = DatasetMeta(**{**bundle.meta(), **({"class_names": class_names} if class_names else {})})
    cost = exit_costs(model, data.input_shape)
    weights = [1.0 / model.num_exits] * model.num_exits
    save_checkpoint(
        path,
        model,
        model_meta(spec, model, data, TrainingMeta("aep", config={"epochs": 3 + seed}, ensemble_weights=weights), cost),
    )
    if records:
        for split in ("val", "test"):
            info = {"split": split, "class_names": data.class_names, "ensemble_weights": weights}
            rec = collect_outputs(model, getattr(bundle, split), cost.cum_macs, cost.full_macs, info=info)
            save_evaluation(evaluation_path(path, split), rec)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory, bundle):
    d = tmp_path_factory.mktemp("members")
    return [save_member(d / "small.pt", SMALL, bundle, 0), save_member(d / "big.pt", BIG, bundle, 1)]


@pytest.fixture(scope="module")
def cascade_file(members, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade") / "cascade.pt"
    make_cascade(members, out)
    return out


@pytest.fixture(scope="module")
def cascade(cascade_file):
    return load_checkpoint(cascade_file)


@pytest.fixture(scope="module")
def inputs(bundle):
    x, y = bundle.test[list(range(120))]
    return x, y.numpy()


def spread_rule(model, rec) -> object:
    """max_probability with exit 0's threshold at the median of its scores: about half the samples stop there."""
    exits = ModelExits.of_model(model, None)
    scores, _ = make_rule("max_probability", exits).scores(rec.logits, None)
    return make_rule("max_probability", exits, thresholds=[float(np.median(scores[0]))])


# ---- 1. the model ---------------------------------------------------------------------------------------


def test_exit_k_is_member_k_and_costs_add_up(members, bundle):
    loaded = [load_checkpoint(p) for p in members]
    model, spec = build_cascade([(m, meta.model) for m, meta in loaded])
    assert spec.backbone == "cascade" and model.num_exits == 2 and not model.has_confidence
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        for k, (member, _) in enumerate(loaded):
            torch.testing.assert_close(out.logits[k], member.forward_final(x), rtol=0, atol=0)
    cost = exit_costs(model, (1, 28, 28))
    member_macs = [meta.cost.full_macs for _, meta in loaded]  # each member without its early exits
    assert [e.segment_macs for e in cost.exits] == [0, 0]  # the blocks hand the image on
    assert [e.head_macs for e in cost.exits] == member_macs
    assert cost.cum_macs == list(np.cumsum(member_macs))
    assert cost.full_macs == member_macs[-1]  # the network without exits is the last member
    assert [e.cum_params for e in cost.exits] == list(np.cumsum([meta.cost.full_params for _, meta in loaded]))


def test_any_model_is_a_member_even_a_cascade():
    torch.manual_seed(0)
    specs = [ModelSpec(backbone_config={"widths": [4, 8]}, head="eenet"), SMALL, BIG]
    models = [build_model(ModelSpec(**s.to_dict())).eval() for s in specs]
    inner, inner_spec = build_cascade([(models[1], specs[1]), (models[2], specs[2])])
    outer, outer_spec = build_cascade([(models[0], specs[0]), (inner, inner_spec)])
    rebuilt = build_model(ModelSpec.from_dict(json.loads(json.dumps(outer_spec.to_dict())))).eval()
    rebuilt.load_state_dict(outer.state_dict(), strict=True)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        logits = rebuilt(x).logits
        torch.testing.assert_close(logits[0], models[0].forward_final(x), rtol=0, atol=0)  # an EENet's final exit
        torch.testing.assert_close(logits[1], models[2].forward_final(x), rtol=0, atol=0)  # a cascade's last member
    assert count_params(rebuilt) == count_params(
        *(network_without_exits(m, s)[0] for m, s in zip(models[::2], specs[::2], strict=True))
    )


def test_members_must_read_the_same_inputs():
    base = {"backbone": "compact_cnn", "backbone_config": {"widths": [4]}, "placement": []}
    spec = ModelSpec(backbone="cascade", backbone_config={"members": [base, {**base, "num_classes": 5}]})
    with pytest.raises(ConfigError, match="member 1 has 5 classes where the cascade has 10"):
        build_model(spec)
    spec = ModelSpec(backbone="cascade", backbone_config={"members": [{**base, "in_channels": 3}, base]})
    with pytest.raises(ConfigError, match="member 0 has 3 input channels"):
        build_model(spec)
    with pytest.raises(ConfigError, match="at least two member networks"):
        build_model(ModelSpec(backbone="cascade", backbone_config={"members": [base]}))


# ---- 2., 3. the engines ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 16])
def test_torch_engine_decides_as_the_replay_and_never_runs_a_later_member(cascade, inputs, batch_size):
    model, meta = cascade
    x, y = inputs
    rec = record_outputs(model, x, y, meta.cost.cum_macs, meta.cost.full_macs, batch_size=batch_size)
    rule = spread_rule(model, rec)
    replay = rule.replay(rec)
    seen = [0, 0]  # inputs each member ran on
    hooks = [
        head.classifier.register_forward_hook(lambda mod, inp, out, k=k: seen.__setitem__(k, seen[k] + len(inp[0])))
        for k, head in enumerate(model.heads)
    ]
    try:
        run = EarlyExitRunner(model, rule).run(x, batch_size)
    finally:
        for h in hooks:
            h.remove()
    assert np.array_equal(run.exit_index, replay.exit_index) and np.array_equal(run.prediction, replay.prediction)
    assert 0 < (run.exit_index == 0).sum() < len(x)
    assert seen == [len(x), int((run.exit_index == 1).sum())]  # member 1 ran on the inputs member 0 passed on only


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.mark.parametrize("batch_size", [1, 16])
def test_onnxruntime_engine_decides_as_torch(cascade, inputs, batch_size, onnx_cache):
    pytest.importorskip("onnxruntime")
    from aep_core.exits.onnx_runtime import OnnxEarlyExitRunner, OnnxStaticRunner

    model, meta = cascade
    x, y = inputs
    torch_rec = record_outputs(model, x, y, meta.cost.cum_macs, meta.cost.full_macs, batch_size=batch_size)
    rule = spread_rule(model, torch_rec)
    runner = OnnxEarlyExitRunner(model, rule, cache_dir=onnx_cache)
    ort_rec = runner.record_outputs(x, y, meta.cost.cum_macs, meta.cost.full_macs, batch_size=batch_size)
    np.testing.assert_allclose(ort_rec.logits, torch_rec.logits, atol=1e-4, rtol=0)
    ort = runner.run(x, batch_size)
    replay = rule.replay(ort_rec)
    assert np.array_equal(ort.exit_index, replay.exit_index) and np.array_equal(ort.prediction, replay.prediction)
    torch_run = EarlyExitRunner(model, rule).run(x, batch_size)
    scores, _ = rule.scores(torch_rec.logits, None)
    on_threshold = np.abs(scores[0] - rule.thresholds[0]) <= 1e-4  # rounding may flip these, nothing else
    assert np.array_equal(ort.exit_index[~on_threshold], torch_run.exit_index[~on_threshold])
    static = OnnxStaticRunner(model, threads=1, cache_dir=onnx_cache)
    static.prepare((1, 28, 28))
    with torch.no_grad():
        want = model.heads[-1].classifier.net.forward_final(x[:32]).numpy()  # the last member alone
    np.testing.assert_allclose(static.logits(static.as_input(x[:32])), want, atol=1e-4, rtol=0)


# ---- 4. checkpoint, info and the cascade command -----------------------------------------------------------


def test_checkpoint_round_trips_with_weights_only_loading(cascade_file, cascade, members, capsys):
    payload = torch.load(cascade_file, map_location="cpu", weights_only=True)
    config = payload["meta"]["model"]["backbone_config"]
    assert [m["backbone"] for m in config["members"]] == ["compact_cnn", "compact_cnn"]
    model, meta = cascade
    assert meta.training.method == "cascade" and meta.training.settings["members"] == ["small.pt", "big.pt"]
    assert meta.training.settings["member_epochs"] == [3, 4]  # the members' own
    assert meta.training.ensemble_weights == [0.5, 0.5] and meta.calibration is not None
    big, _ = load_checkpoint(members[1])
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_final(x), big.forward_final(x), rtol=0, atol=0)
    for split in ("val", "test"):  # stacked from the members' final exits
        rec = load_evaluation(evaluation_path(cascade_file, split))
        parts = [load_evaluation(evaluation_path(p, split)) for p in members]
        assert np.array_equal(rec.logits, np.stack([p.logits[-1] for p in parts]))
        assert rec.cum_macs.tolist() == meta.cost.cum_macs and rec.full_macs == meta.cost.full_macs
        assert meta.metrics[split].exit_acc == pytest.approx(rec.exit_accuracy().tolist())
    assert main(["info", str(cascade_file)]) == 0
    out = capsys.readouterr().out
    assert "model     cascade of compact_cnn" in out and "members=['small.pt', 'big.pt']" in out
    assert "training  none of its own" in out and "None epochs" not in out


def test_a_cascade_is_not_trained_as_one_network(tmp_path, capsys):
    args = ["train", "--model", "cascade", "--dataset", "fashion-mnist-slice", "--epochs", "1"]
    assert main([*args, "--out", str(tmp_path / "c.pt")]) == 2
    assert "python -m aep_core cascade --members" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()


def test_cascade_command_writes_a_checkpoint_every_command_reads(members, tmp_path, capsys):
    out = tmp_path / "c.pt"
    assert main(["cascade", "--members", *map(str, members), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"saved {out}" in printed and "exit block" in printed
    assert all(p.is_file() for p in (out, evaluation_path(out, "val"), evaluation_path(out, "test")))
    model, _ = load_checkpoint(out)
    assert model.num_exits == 2


def test_a_member_without_evaluation_files_is_evaluated_instead(members, bundle, cascade_file, tmp_path):
    small = save_member(tmp_path / "small.pt", SMALL, bundle, 0, records=False)  # the same weights, no records
    out, meta = make_cascade([small, members[1]], tmp_path / "c.pt")
    for split in ("val", "test"):
        got, want = (load_evaluation(evaluation_path(p, split)) for p in (out, cascade_file))
        np.testing.assert_allclose(got.logits, want.logits, atol=1e-5, rtol=0)
        assert np.array_equal(got.labels, want.labels) and meta.metrics[split].n == want.num_samples


@pytest.fixture(scope="module")
def odd_members(tmp_path_factory, bundle, members):
    """A member predicting other classes, and a copy of the big member whose validation file is on shuffled
    samples."""
    d = tmp_path_factory.mktemp("odd")
    other = save_member(d / "other.pt", SMALL, bundle, 2, class_names=[f"c{k}" for k in range(10)], records=False)
    shuffled = save_member(d / "shuffled.pt", BIG, bundle, 1)
    rec = load_evaluation(evaluation_path(shuffled, "val"))
    rec.labels = np.roll(rec.labels, 1)
    save_evaluation(evaluation_path(shuffled, "val"), rec)
    return {"other": other, "shuffled": shuffled}


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "does not exist"),
        ("not a checkpoint", "not a readable PyTorch checkpoint"),
        ("other classes", "read different data (classes differ)"),
        ("other samples", "val evaluation files are not on the same samples"),
        ("one member", "at least two member checkpoints"),
    ],
)
def test_bad_members_are_refused_in_one_line(case, message, members, odd_members, tmp_path, capsys):
    small = str(members[0])
    given = {
        "missing": [small, str(tmp_path / "nowhere.pt")],
        "not a checkpoint": [small, str(evaluation_path(members[1], "val"))],
        "other classes": [small, str(odd_members["other"])],
        "other samples": [small, str(odd_members["shuffled"])],
        "one member": [small],
    }[case]
    out = tmp_path / "c.pt"
    assert main(["cascade", "--members", *given, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


# ---- 5. the other commands ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_cascade(tmp_path_factory):
    """The cascade of the shipped quarter-width network and the shipped network without exits (their evaluation
    files are on the same samples)."""
    out = tmp_path_factory.mktemp("shipped") / "w025_baseline.pt"
    make_cascade([SHIPPED / "static_w025.pt", SHIPPED / "baseline.pt"], out)
    return out


def test_certified_thresholds_on_a_cascade(shipped_cascade, capsys):
    assert main(["solve", str(shipped_cascade), "--max-drop", "0.5", "--json"]) == 0
    op = json.loads(capsys.readouterr().out)
    assert op["certified"] is True and op["drop_bound_points"] == 0.5
    for split in ("val", "test"):
        replay = replay_rule(load_evaluation(evaluation_path(shipped_cascade, split)), op["rule"], **op["settings"])
        assert op[split]["accuracy"] == pytest.approx(replay.accuracy)
        assert op[split]["macs_ratio"] == pytest.approx(replay.macs_ratio)
        assert replay.macs_ratio < 0.5  # the small network answers most inputs


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--dataset", "fashion-mnist-slice", "--limit", "40", "--thresholds", "0.2", "--engine", "torch"],
        ["run", "--dataset", "fashion-mnist-slice", "--limit", "40", "--thresholds", "0.2", "--engine", "onnxruntime"],
        ["calibrate", "--no-save"],
        ["deploy", "--tiers", "2", "--speeds-gmacs", "1,100", "--repeats", "1"],
        ["export", "--splits", "0", "--out", "{tmp}/onnx"],
    ],
    ids=["run-torch", "run-onnxruntime", "calibrate", "deploy", "export"],
)
def test_commands_run_on_a_cascade(args, cascade_file, onnx_cache, tmp_path, capsys, monkeypatch):
    from aep_core.exits import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "default_cache_dir", lambda: onnx_cache)  # the engine test's exports
    command, *rest = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([command, str(cascade_file), *rest]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().out


# ---- 6. pruning ----------------------------------------------------------------------------------------


def test_pruning_after_exit_zero_leaves_member_zero(cascade, members, tmp_path):
    model, meta = cascade
    small, small_meta = load_checkpoint(members[0])
    net, _ = network_without_exits(small, small_meta.model)
    pruned, pruned_meta = prune_model(model, meta, 0)
    assert pruned.num_exits == 1 and count_params(pruned) == count_params(net) == small_meta.cost.full_params
    assert pruned_meta.cost.full_macs == small_meta.cost.full_macs
    save_checkpoint(tmp_path / "p.pt", pruned, pruned_meta)
    reloaded, _ = load_checkpoint(tmp_path / "p.pt")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.forward_final(x), small.forward_final(x), rtol=0, atol=0)


# ---- 7. the two-network replay ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_max_probability_replay_agrees_with_the_cascade_replay(shipped_cascade, split):
    rec = load_evaluation(evaluation_path(shipped_cascade, split))
    small, big = (load_evaluation(SHIPPED / f"{name}.{split}.npz") for name in ("static_w025", "baseline"))
    for t in (0.0, 0.5, 0.8, 0.95, 0.999):
        ours, theirs = replay_rule(rec, "max_probability", thresholds=[t]), cascade_replay(small, big, t)
        assert ours.accuracy == theirs.accuracy
        assert ours.expected_macs == pytest.approx(theirs.expected_macs, rel=1e-12)
        assert ours.full_macs == theirs.reference_macs
        assert ours.exit_distribution[0] == theirs.small_share


# ---- every page --------------------------------------------------------------------------------------------


def test_every_page_works_with_a_cascade(cascade_file, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(cascade_file.parent))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "none"))
    for page in PAGES:
        at = run_app(page, model="cascade")
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.session_state["model"] == "cascade"


def test_the_overview_lists_a_cascades_members(cascade_file, cascade, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(cascade_file.parent))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "none"))
    at = run_app("overview", model="cascade")
    assert not at.exception and not at.error
    _, meta = cascade
    table = at.dataframe[0].value
    assert list(table["exit"]) == ["exit 0", "exit 1"]
    assert [m.split(" ")[0] for m in table["member network"]] == ["compact_cnn", "compact_cnn"]
    cum = meta.cost.cum_macs
    assert list(table["its MACs (M)"]) == [round(cum[0] / 1e6, 2), round((cum[1] - cum[0]) / 1e6, 2)]
    assert list(table["paid when answered here"]) == [f"{100 * c / meta.cost.full_macs:.1f}%" for c in cum]
    assert list(table["validation accuracy %"]) == [round(100 * a, 2) for a in meta.metrics["val"].exit_acc]
    assert any("A **cascade**" in c.value for c in at.caption)
    assert not at.get("vega_lite_chart")  # no backbone strip: a cascade's blocks are not layers
