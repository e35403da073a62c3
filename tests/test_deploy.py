"""The split-computing simulator: a hand-worked two-tier example checked exactly, compute from measured
per-segment times, feature sizes and segment latencies measured from a model, the search against brute-force
replays, and clear errors for impossible settings."""

import importlib.util
import itertools
import json
import tempfile

import numpy as np
import pytest
import torch

from aep_core.deploy.simulator import (
    Deployment,
    FeatureSizes,
    Link,
    SegmentTimes,
    Tier,
    decision_grid,
    default_splits,
    exit_timings,
    feature_sizes,
    latency_stat,
    make_deployment,
    measure_macs_per_second,
    measure_segment_latencies,
    percentile,
    search,
    simulate,
    split_assignments,
)
from aep_core.errors import ConfigError
from aep_core.evaluation import ExitRecord
from aep_core.exits.rules import ModelExits, list_rules, replay_rule
from aep_core.models import ModelSpec, build_model
from aep_core.paths import shipped_models_dir
from aep_core.threads import default_threads


def hand_record() -> ExitRecord:
    """10 samples, 3 exits. Exit 0 is sure (logit 10) of class 0 on samples 0-3, exit 1 sure of class 1 on
    samples 4-6; elsewhere exits 0 and 1 output zeros (max probability 0.1). Exit 2 is sure of the true label."""
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 0])
    logits = np.zeros((3, 10, 10), dtype=np.float32)
    logits[0, 0:4, 0] = 10
    logits[1, 4:7, 1] = 10
    logits[2, np.arange(10), labels] = 10
    return ExitRecord(logits, labels, np.array([100, 300, 600]), 600)


# feature maps of 100, 50 and 25 values: 400, 200 and 100 bytes at fp32; the input is 1x4x4 = 64 bytes at fp32
SIZES = FeatureSizes((1, 4, 4), ((4, 5, 5), (2, 5, 5), (1, 5, 5)))


def hand_deployment(splits=(1,), precision="fp32") -> Deployment:
    """Device 1000 MACs/s at 2 W, cloud 10 000 MACs/s; link 3200 bit/s, 100 ms, radio 1 W."""
    return Deployment(
        (Tier("device", 1000.0, 2.0), Tier("cloud", 10_000.0)), (Link(0.0032, 100.0, 1.0),), tuple(splits), precision
    )


def test_two_tier_example_by_hand():
    # max probability >= 0.5: samples 0-3 stop at exit 0, 4-6 at exit 1 (both on the device), 7-9 at exit 2 (cloud)
    r = simulate(hand_record(), SIZES, hand_deployment(), "max_probability", thresholds=0.5)
    assert r.exit_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert r.tier.tolist() == [0] * 7 + [1] * 3
    # exit 0: 100 MACs / 1000 = 0.1 s; exit 1: 300 / 1000 = 0.3 s;
    # exit 2: 0.3 s on the device + 200 B * 8 / 3200 bit/s = 0.5 s + 0.1 s link + (600 - 300) / 10 000 = 0.03 s
    # -> 0.93 s
    np.testing.assert_allclose(r.timings.latency_s, [0.1, 0.3, 0.93], rtol=1e-12)
    np.testing.assert_allclose(r.timings.compute_s, [[0.1, 0], [0.3, 0], [0.3, 0.03]], rtol=1e-12)
    np.testing.assert_allclose(r.timings.transfer_s, [[0], [0], [0.5]], rtol=1e-12)
    np.testing.assert_allclose(r.timings.link_latency_s, [[0], [0], [0.1]], rtol=1e-12)
    assert r.timings.bytes_sent.tolist() == [0, 0, 200]
    # energy: device 2 W x busy time, radio 1 W x 0.5 s transmitting; the cloud has no power given
    np.testing.assert_allclose(r.timings.energy_j, [0.2, 0.6, 1.1], rtol=1e-12)
    stats = r.latency_stats()
    assert stats["mean"] == pytest.approx((4 * 0.1 + 3 * 0.3 + 3 * 0.93) / 10, rel=1e-12)  # 0.409 s
    assert stats["p50"] == pytest.approx(0.3)  # 5th of 10 sorted latencies
    assert stats["p95"] == pytest.approx(0.93) and stats["p99"] == pytest.approx(0.93)
    assert r.tier_share.tolist() == [0.7, 0.3]
    assert r.accuracy == pytest.approx(0.9)  # sample 3 (label 1) is called class 0 at exit 0
    np.testing.assert_allclose(r.tier_accuracy, [6 / 7, 1.0])
    assert r.bytes_sent.mean() == pytest.approx(60.0)
    assert r.energy_j.mean() == pytest.approx((4 * 0.2 + 3 * 0.6 + 3 * 1.1) / 10)
    b = r.breakdown()
    np.testing.assert_allclose(b["compute"], [(0.4 + 0.9 + 0.9) / 10, 0.09 / 10])
    np.testing.assert_allclose(b["transfer"], [0.15])
    np.testing.assert_allclose(b["link_latency"], [0.03])
    assert b["compute"].sum() + b["transfer"].sum() + b["link_latency"].sum() == pytest.approx(stats["mean"])


def test_precision_and_other_splits_by_hand():
    t = exit_timings([100, 300, 600], SIZES, hand_deployment(precision="fp16"))
    np.testing.assert_allclose(t.latency_s, [0.1, 0.3, 0.3 + 0.25 + 0.1 + 0.03])  # 100 B at fp16
    t = exit_timings([100, 300, 600], SIZES, hand_deployment((0,), "int8"))
    # split after exit 0: its 100 values (100 B at int8) take 0.25 s; the cloud runs 200 then 500 MACs
    np.testing.assert_allclose(t.latency_s, [0.1, 0.1 + 0.25 + 0.1 + 0.02, 0.1 + 0.25 + 0.1 + 0.05])
    assert t.tier.tolist() == [0, 1, 1]
    t = exit_timings([100, 300, 600], SIZES, hand_deployment((-1,)))
    # the device runs nothing and sends the 64-byte input (0.16 s); everything runs in the cloud
    np.testing.assert_allclose(t.latency_s, [0.16 + 0.1 + 0.01, 0.16 + 0.1 + 0.03, 0.16 + 0.1 + 0.06])
    assert t.bytes_sent.tolist() == [64, 64, 64] and t.tier.tolist() == [1, 1, 1]
    t = exit_timings([100, 300, 600], SIZES, hand_deployment((2,)))
    np.testing.assert_allclose(t.latency_s, [0.1, 0.3, 0.6])  # all on the device: the cloud is never reached
    assert t.bytes_sent.tolist() == [0, 0, 0]


def test_three_tiers_with_an_empty_middle_tier_relay():
    dep = make_deployment([1000, 5000, 10_000], [0.0032, 0.0064], [100, 50], [0, 0])
    t = exit_timings([100, 300, 600], SIZES, dep)
    # exit 0 on the device; the edge holds nothing and relays 400 B: 1 s + 0.1 s, then 0.5 s + 0.05 s
    relay = 0.1 + 1.0 + 0.1 + 0.5 + 0.05
    np.testing.assert_allclose(t.latency_s, [0.1, relay + 0.02, relay + 0.05])
    assert t.tier.tolist() == [0, 2, 2] and t.bytes_sent.tolist() == [0, 800, 800]
    assert t.energy_j is None
    assert [t.name for t in dep.tiers] == ["device", "edge", "cloud"]


def test_measured_segment_times_by_hand():
    # segments measured at 0.2, 0.1 and 0.4 s on a machine the tiers' speeds put at 1000 MACs/s: the device (1000)
    # takes them as measured, the cloud (10 000) in a tenth of the time
    seg = SegmentTimes((0.2, 0.1, 0.4), 1000.0)
    r = simulate(hand_record(), SIZES, hand_deployment(), "max_probability", seg, thresholds=0.5)
    # exit 2: 0.3 s on the device + 0.5 s transfer + 0.1 s link + 0.4 / 10 = 0.04 s in the cloud
    np.testing.assert_allclose(r.timings.latency_s, [0.2, 0.3, 0.94], rtol=1e-12)
    np.testing.assert_allclose(r.timings.compute_s, [[0.2, 0], [0.3, 0], [0.3, 0.04]], rtol=1e-12)
    np.testing.assert_allclose(r.timings.energy_j, [0.4, 0.6, 1.1], rtol=1e-12)  # 2 W x device time + radio 0.5 J
    assert r.latency_stats()["mean"] == pytest.approx((4 * 0.2 + 3 * 0.3 + 3 * 0.94) / 10, rel=1e-12)
    # split after exit 0: 400 B take 1 s; the cloud runs segments 1 (0.01 s) and 2 (0.04 s)
    t = exit_timings([100, 300, 600], SIZES, hand_deployment((0,)), seg)
    np.testing.assert_allclose(t.latency_s, [0.2, 0.2 + 1.0 + 0.1 + 0.01, 0.2 + 1.0 + 0.1 + 0.05], rtol=1e-12)
    # a device at half the reference speed takes twice the measured times
    dep = make_deployment([500.0], [], [], [])
    np.testing.assert_allclose(exit_timings([100, 300, 600], SIZES, dep, seg).latency_s, [0.4, 0.6, 1.4])
    # times in proportion to the MACs at the reference speed give the MACs model's figures
    same = exit_timings([100, 300, 600], SIZES, hand_deployment(), SegmentTimes((0.1, 0.2, 0.3), 1000.0))
    np.testing.assert_allclose(same.latency_s, exit_timings([100, 300, 600], SIZES, hand_deployment()).latency_s)


def test_search_with_measured_segment_times_matches_replays():
    rec, dep, seg = hand_record(), hand_deployment(), SegmentTimes((0.2, 0.1, 0.4), 1000.0)
    grid = decision_grid(rec, "max_probability", grid=[0.05, 0.5, 0.99999])
    res = search(grid, rec.cum_macs, SIZES, dep, stat="p95", segments=seg)
    for i in range(len(res.accuracy)):
        r = simulate(rec, SIZES, dep.with_splits(res.splits[i]), "max_probability", seg, **res.settings[i])
        assert res.latency_s[i] == pytest.approx(r.latency_stats()["p95"], rel=1e-12)
    assert res.latency_s.min() == pytest.approx(0.2)  # everyone at exit 0 on the device


@pytest.mark.parametrize(
    "seg,match",
    [
        (SegmentTimes((0.1, 0.2), 1000.0), "cover 2 exits"),
        (SegmentTimes((0.1, 0.0, 0.2), 1000.0), "positive seconds"),
        (SegmentTimes((0.1, float("nan"), 0.2), 1000.0), "positive seconds"),
        (SegmentTimes((0.1, 0.1, 0.2), 0.0), "reference speed"),
    ],
)
def test_bad_segment_times_are_refused(seg, match):
    with pytest.raises(ConfigError, match=match):
        exit_timings([100, 300, 600], SIZES, hand_deployment(), seg)


ENGINES = [
    "torch",
    pytest.param(
        "onnxruntime",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"
        ),
    ),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_segment_latencies_measured_on_each_engine(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # exported files go to a fresh folder
    model = build_model(ModelSpec(backbone_config={"widths": [4, 8, 16]}, placement="blocks")).eval()
    seconds = measure_segment_latencies(model, (1, 28, 28), engine, threads=1, rounds=3, warmup=1)
    assert len(seconds) == model.num_exits and all(s > 0 for s in seconds)
    assert torch.get_num_threads() == default_threads()  # the thread count is back where it was


def test_segment_latencies_refuse_bad_settings():
    model = build_model(ModelSpec(backbone_config={"widths": [4, 8, 16]}, placement="blocks")).eval()
    with pytest.raises(ConfigError, match="rounds"):
        measure_segment_latencies(model, (1, 28, 28), rounds=0)
    with pytest.raises(ConfigError, match="threads"):
        measure_segment_latencies(model, (1, 28, 28), threads=0)
    with pytest.raises(ConfigError, match="engine"):
        measure_segment_latencies(model, (1, 28, 28), "tensorrt")


def test_percentiles_are_nearest_rank():
    v = np.arange(1, 101, dtype=float)
    assert percentile(v, 0.95) == 95 and percentile(v, 0.99) == 99 and percentile(v, 0.5) == 50
    assert percentile(np.array([3.0]), 0.99) == 3.0
    assert latency_stat(v, "mean") == 50.5
    with pytest.raises(ConfigError, match="p90"):
        latency_stat(v, "p90")


def test_feature_sizes_measured_from_the_model():
    model = build_model(ModelSpec(backbone_config={"widths": [4, 8, 16]}, placement="blocks")).eval()
    sizes = feature_sizes(model, (1, 28, 28))
    h = torch.zeros(1, 1, 28, 28)
    for k in range(model.num_exits):
        h = model.forward_segment(h, k)
        assert sizes.exit_shapes[k] == tuple(h.shape[1:])
    c, hh, w = sizes.exit_shapes[0]
    assert sizes.exit_bytes("fp32")[0] == 4 * c * hh * w and sizes.exit_bytes("int8")[0] == c * hh * w
    assert sizes.exit_bytes("fp16").tolist() == (sizes.exit_bytes("fp32") // 2).tolist()
    assert sizes.input_bytes("fp32") == 4 * 28 * 28
    assert measure_macs_per_second(model, (1, 28, 28), repeats=3) > 0
    with pytest.raises(ConfigError, match="precision"):
        sizes.exit_bytes("fp8")


def test_search_matches_brute_force_replays():
    rec = hand_record()
    dep = hand_deployment()
    grid = decision_grid(rec, "max_probability", grid=[0.05, 0.5, 0.99999])
    for stat in ("mean", "p95"):
        res = search(grid, rec.cum_macs, SIZES, dep, stat=stat)
        assert len(res.accuracy) == 3 * len(split_assignments(3, 2))
        for i in range(len(res.accuracy)):
            r = simulate(rec, SIZES, dep.with_splits(res.splits[i]), "max_probability", **res.settings[i])
            assert res.accuracy[i] == pytest.approx(r.accuracy)
            assert res.latency_s[i] == pytest.approx(r.latency_stats()[stat], rel=1e-12)
            assert res.mean_latency_s[i] == pytest.approx(r.latency_stats()["mean"], rel=1e-12)


def test_search_meets_its_deadline_on_a_constructed_case():
    rec = hand_record()
    dep = hand_deployment()
    # Thresholds 0.05: all stop at exit 0 (40% right); 0.5: 4/3/3 samples at exits 0/1/2 (90%); 0.99999: all at exit 2
    # (100%). A sample answered at exit 0/1/2 takes, per split: -1 (cloud only, 64 B input) 0.27/0.29/0.32 s;
    # 0: 0.1/1.22/1.25 s; 1: 0.1/0.3/0.93 s; 2 (device only): 0.1/0.3/0.6 s.
    grid = decision_grid(rec, "max_probability", grid=[0.05, 0.5, 0.99999])
    res = search(grid, rec.cum_macs, SIZES, dep, deadline_s=0.3, stat="mean")
    best = res.point(res.best)  # 0.5 in the cloud: mean (4 * 0.27 + 3 * 0.29 + 3 * 0.32) / 10 = 0.291 s
    assert best["splits"] == [-1] and best["settings"] == {"thresholds": 0.5} and best["accuracy"] == pytest.approx(0.9)
    assert best["mean_latency_s"] == pytest.approx(0.291)
    res = search(grid, rec.cum_macs, SIZES, dep, deadline_s=0.3, stat="p95")
    best = res.point(res.best)  # under p95 the slowest 5% count: only "everyone at exit 0" (0.1 s) fits
    assert best["accuracy"] == pytest.approx(0.4) and best["p95_latency_s"] == pytest.approx(0.1)
    assert best["settings"] == {"thresholds": 0.05} and best["splits"] == [0]  # first of the equally fast splits
    res = search(grid, rec.cum_macs, SIZES, dep, deadline_s=0.35, stat="p95")
    assert res.point(res.best)["splits"] == [-1] and res.accuracy[res.best] == 1.0
    assert res.latency_s[res.best] == pytest.approx(0.32)
    res = search(grid, rec.cum_macs, SIZES, dep, deadline_s=0.35, stat="p95", splits=[(1,), (2,)])
    assert res.point(res.best)["splits"] == [1] and res.accuracy[res.best] == pytest.approx(0.4)
    with pytest.raises(ConfigError, match=r"fastest reachable is 100 ms"):
        search(grid, rec.cum_macs, SIZES, dep, deadline_s=0.05, stat="mean")
    front = search(grid, rec.cum_macs, SIZES, dep, stat="p95").front()
    expected = [(pytest.approx(0.1), 0.4), (pytest.approx(0.32), 1.0)]
    assert [(p["p95_latency_s"], p["accuracy"]) for p in front] == expected


def test_search_best_is_the_most_accurate_within_the_deadline():
    rng = np.random.default_rng(0)
    e, n = 4, 300
    labels = rng.integers(0, 5, n)
    logits = rng.normal(0, 2, (e, n, 5)).astype(np.float32)
    for k in range(e):
        logits[k, np.arange(n), labels] += 1.0 + k
    rec = ExitRecord(logits, labels, np.array([10, 40, 70, 100]) * 1_000_000, 100_000_000)
    sizes = FeatureSizes((3, 32, 32), ((16, 32, 32), (32, 16, 16), (64, 8, 8), (64, 8, 8)))
    dep = make_deployment([2e9, 2e10, 2e11], [10, 100], [5, 20], [0, 1])
    grid = decision_grid(rec, "entropy", points=20)
    for stat, deadline in itertools.product(("mean", "p95", "p99"), (0.03, 0.05, 0.08)):
        res = search(grid, rec.cum_macs, sizes, dep, deadline_s=deadline, stat=stat)
        ok = res.latency_s <= deadline
        assert res.latency_s[res.best] <= deadline and res.accuracy[res.best] == res.accuracy[ok].max()
        r = simulate(rec, sizes, dep.with_splits(res.splits[res.best]), "entropy", **res.settings[res.best])
        assert r.latency_stats()[stat] <= deadline and r.accuracy == pytest.approx(res.accuracy[res.best])


@pytest.mark.parametrize("rule", list_rules(model=ModelExits.of_record(hand_record())))
def test_decision_grid_for_every_rule_matches_single_replays(rule):
    rec = hand_record()
    rec.info["ensemble_weights"] = [0.2, 0.3, 0.5]
    grid = decision_grid(rec, rule)
    assert grid.counts.sum(1).tolist() == [10] * len(grid.settings)
    for i in (0, len(grid.settings) // 2, len(grid.settings) - 1):
        r = replay_rule(rec, rule, **grid.settings[i])
        assert grid.counts[i].tolist() == np.bincount(r.exit_index, minlength=3).tolist()
        assert grid.accuracy[i] == pytest.approx(r.accuracy)
    res = search(grid, rec.cum_macs, SIZES, hand_deployment())
    assert res.pareto.any() and res.best is None


def test_one_tier_and_default_splits():
    assert split_assignments(5, 1) == [()]
    assert len(split_assignments(5, 3)) == 21  # non-decreasing pairs from -1..4
    assert default_splits(5, 3) == [0, 2] and default_splits(5, 1) == []
    dep = make_deployment([1000.0], [], [], [])
    r = simulate(hand_record(), SIZES, dep, "fixed_exit", k=2)
    assert r.latency_s.tolist() == [0.6] * 10 and r.bytes_sent.sum() == 0 and r.tier_share.tolist() == [1.0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(speeds=[1, 1, 1, 1, 1], bandwidth_mbps=[1] * 4, latency_ms=[0] * 4, splits=[0, 0, 0, 0]), "1 to 4 tiers"),
        (dict(speeds=[1, 1], bandwidth_mbps=[], latency_ms=[], splits=[0]), "link"),
        (dict(speeds=[1, 1], bandwidth_mbps=[1], latency_ms=[1], splits=[0, 1]), "split points"),
        (dict(speeds=[1, 1, 1], bandwidth_mbps=[1, 1], latency_ms=[1, 1], splits=[1, 0]), "non-decreasing"),
        (dict(speeds=[1, 1], bandwidth_mbps=[1], latency_ms=[1], splits=[3]), "non-decreasing"),
        (dict(speeds=[0, 1], bandwidth_mbps=[1], latency_ms=[1], splits=[0]), "speed"),
        (dict(speeds=[1, 1], bandwidth_mbps=[0], latency_ms=[1], splits=[0]), "bandwidth"),
        (dict(speeds=[1, 1], bandwidth_mbps=[1], latency_ms=[-1], splits=[0]), "latency"),
        (dict(speeds=[1, 1], bandwidth_mbps=[1], latency_ms=[1], splits=[0], precision="fp64"), "precision"),
    ],
)
def test_impossible_deployments_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        simulate(hand_record(), SIZES, make_deployment(**kwargs), "max_probability", thresholds=0.5)


def test_sizes_must_match_the_record():
    with pytest.raises(ConfigError, match="feature sizes cover 2 exits"):
        exit_timings([1, 2, 3], FeatureSizes((1,), ((1,), (1,))), hand_deployment())


SHIPPED = shipped_models_dir() / "aep_hybrid.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model is not present")
def test_cli_deploy_prints_the_simulation_and_the_search(capsys):
    from aep_core.checkpoint import load_checkpoint
    from aep_core.checkpoint.sidecars import evaluation_path
    from aep_core.cli.main import main
    from aep_core.evaluation import load_evaluation

    model, _ = load_checkpoint(SHIPPED)
    rec = load_evaluation(evaluation_path(SHIPPED, "test"))
    sizes = feature_sizes(model, (1, 28, 28))
    dep = make_deployment([2e9, 1e11, 1e12], [20, 100], [5, 30], [1, 3], "fp16", [3.0, None, None])
    r = simulate(rec, sizes, dep, "entropy", thresholds=0.3)
    args = [
        "deploy",
        str(SHIPPED),
        "--splits",
        "1,3",
        "--speeds-gmacs",
        "2,100,1000",
        "--bandwidth-mbps",
        "20,100",
        "--link-ms",
        "5,30",
        "--precision",
        "fp16",
        "--power-w",
        "3,,",
        "--rule",
        "entropy",
        "--thresholds",
        "0.3",
    ]
    assert main([*args, "--deadline-ms", "40", "--stat", "p95"]) == 0
    out = capsys.readouterr().out
    st = r.latency_stats()
    assert f"accuracy {100 * r.accuracy:.2f}%   latency ms: mean {1e3 * st['mean']:.3f}" in out
    assert f"p95 {1e3 * st['p95']:.3f}" in out and f"energy {1e3 * r.energy_j.mean():.3f} mJ" in out
    res = search(decision_grid(rec, "entropy"), rec.cum_macs, sizes, dep, 0.04, "p95")
    assert f"best: splits {res.point(res.best)['splits']}" in out and f"{100 * res.accuracy[res.best]:.2f}%" in out
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["simulation"]
    assert summary["accuracy"] == pytest.approx(r.accuracy)
    assert summary["tier_share"] == pytest.approx(r.tier_share.tolist())
    assert main([*args, "--deadline-ms", "0.001"]) == 2
    assert "fastest reachable" in capsys.readouterr().err
    assert main(["deploy", str(SHIPPED), "--splits", "3,1", "--speeds-gmacs", "1,1,1"]) == 2
    assert "non-decreasing" in capsys.readouterr().err
