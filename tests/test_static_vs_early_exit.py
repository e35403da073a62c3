"""The static-versus-early-exit benchmark: a network without exits counts at its faster engine, each static network
is compared with each model's cheapest certified point at least as accurate, the comparisons follow the numbers,
timing keeps the fastest round, the RESULTS.md block leaves the rest of the file alone and is re-derived from
docs/static_vs_early_exit.json and the shipped models, and on a shipped model every engine stops the images where
the certified, replayed rule does."""

import json
import math

import numpy as np
import pytest
import torch

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.data import load_slice, slice_dataset
from aep_core.errors import ConfigError
from aep_core.exits.runtime import list_engines
from aep_core.paths import shipped_models_dir
from benchmarks import static_vs_early_exit as sv

TWO = ("torch", "onnxruntime")


def speeds(v: float | dict[str, float]) -> dict[str, float]:
    return dict(v) if isinstance(v, dict) else {"torch": v}


def row(key: str, kind: str, accuracy: float, ms, per_s, epochs: int = 6, macs: float = 1e6) -> sv.Row:
    """A row with ms per image at batch 1 and images per second at batch 256 per engine (a number: PyTorch)."""
    return sv.Row(
        key, key, kind, key.split(":")[0], epochs, 1000, macs, accuracy, ms_b1=speeds(ms), per_s_b256=speeds(per_s)
    )


def test_a_network_counts_at_its_faster_engine_at_each_batch_size():
    s = row("s", sv.STATIC, 0.9, {"torch": 2.0, "onnxruntime": 1.0}, {"torch": 500, "onnxruntime": 400})
    assert s.best(sv.B1) == ("onnxruntime", 1.0) and s.best(sv.B256) == ("torch", 500)
    assert s.rate(sv.B1) == 1000 and s.rate(sv.B1, "torch") == 500 and s.rate(sv.B256) == 500
    p = row("m:p", sv.POINT, 0.9, {"torch": 0.8, "onnxruntime": 1.6}, {"torch": 250, "onnxruntime": 1000})
    # speed-ups are against the static network on its faster engine, whichever engine the point runs on
    assert sv.speedup(p, s, sv.B1) == pytest.approx(1.25) and sv.speedup(p, s, sv.B1, "onnxruntime") == 0.625
    assert sv.speedup(p, s, sv.B256) == 2.0 and sv.speedup(p, s, sv.B256, "torch") == 0.5
    missing = row("q", sv.POINT, 0.9, {"torch": math.nan}, {})
    engine, ms = missing.best(sv.B1)
    assert engine == "" and math.isnan(ms)
    assert math.isnan(missing.rate(sv.B256)) and math.isnan(sv.speedup(missing, s, sv.B1))


def test_beats_needs_accuracy_and_both_speeds_on_the_faster_engines():
    p = row("p", sv.POINT, 0.91, 2.0, 500)
    assert sv.beats(row("s", sv.STATIC, 0.91, 1.0, 600), p)
    assert not sv.beats(row("s", sv.STATIC, 0.90, 1.0, 600), p)  # less accurate
    assert not sv.beats(row("s", sv.STATIC, 0.92, 2.5, 600), p)  # slower at batch 1
    assert not sv.beats(row("s", sv.STATIC, 0.92, 1.0, 400), p)  # slower at batch 256
    # slower than the point on PyTorch, faster on ONNX Runtime: its faster engine counts
    assert sv.beats(row("s", sv.STATIC, 0.92, {"torch": 2.5, "onnxruntime": 1.5}, 600), p)


def test_the_cheapest_certified_point_at_least_as_accurate_is_compared():
    static = row("s", sv.STATIC, 0.92, 1, 1000)
    cheap = row("m:a", sv.POINT, 0.915, 0.1, 9000, macs=1e6)  # the cheapest, not accurate enough
    mid = row("m:b", sv.POINT, 0.92, 3.0, 100, macs=2e6)  # as accurate counts; slower does not matter
    dear = row("m:c", sv.POINT, 0.95, 0.5, 5000, macs=3e6)
    assert sv.cheapest_reaching(static, [dear, cheap, mid]) is mid
    assert sv.cheapest_reaching(static, [cheap]) is None
    versus = sv.comparisons([static, row("m:final", sv.FINAL, 0.95, 1, 1), cheap, mid, dear])
    assert [(v.static.key, v.model, v.point.key) for v in versus] == [("s", "m", "m:b")]
    assert versus[0].speedup(sv.B1) == pytest.approx(1 / 3) and not versus[0].faster(sv.B1)


def test_the_static_frontier_at_each_batch_size():
    big = row("big", sv.STATIC, 0.93, 3.0, 1000)
    small = row("small", sv.STATIC, 0.91, 1.0, 3000)
    dominated = row("shallow", sv.STATIC, 0.905, 1.5, 4000)  # slower at batch 1, faster at 256
    statics = [big, small, dominated]
    assert [sv.on_frontier(s, statics, sv.B1) for s in statics] == [True, True, False]
    assert [sv.on_frontier(s, statics, sv.B256) for s in statics] == [True, True, True]


def test_verdicts_follow_the_numbers():
    wide = row("wide", sv.STATIC, 0.93, {"torch": 2.0, "onnxruntime": 1.0}, {"torch": 900, "onnxruntime": 800})
    half = row("half", sv.STATIC, 0.92, {"torch": 0.5, "onnxruntime": 0.25}, {"torch": 3000, "onnxruntime": 4000})
    final = row("h:final", sv.FINAL, 0.94, {"torch": 2.0, "onnxruntime": 1.0}, {"torch": 900, "onnxruntime": 800})
    drop = row(
        "h:≤0.5 pt drop", sv.POINT, 0.935, {"torch": 1.2, "onnxruntime": 0.8}, {"torch": 1800, "onnxruntime": 700}
    )
    drop.macs = 0.4e6
    budget = row("h:≤50% MACs", sv.POINT, 0.94, 0.1, 90000, epochs=6)
    weak = row("a:≤0.5 pt drop", sv.POINT, 0.921, 0.1, 90000)
    beaten = row("a:≤50% MACs", sv.POINT, 0.90, 5.0, 100)  # half is as accurate and faster
    lines = sv.verdicts([wide, half, final, drop, budget, weak, beaten])
    assert lines[0] == (
        "Batch 1 (latency), wide (93.00%, 1.000 ms/image on ONNX Runtime, on the static frontier): "
        "h:≤0.5 pt drop (93.50%) is faster (1.25× the speed, on ONNX Runtime); a: no certified point is as accurate."
    )
    assert lines[1].startswith("Batch 1 (latency), half (92.00%, 0.250 ms/image on ONNX Runtime")
    assert "h:≤0.5 pt drop (93.50%) is slower (0.31× the speed, on ONNX Runtime)" in lines[1]
    assert "a:≤0.5 pt drop (92.10%) is faster (2.50× the speed, on PyTorch)" in lines[1]
    assert lines[2].startswith("Batch 256 (throughput), wide (93.00%, 900 images/s on PyTorch, on the static")
    assert "is faster (2.00× the speed, on PyTorch)" in lines[2]
    assert lines[4] == (
        "h (6 epochs): a certified point at least as accurate as 2 of the 2 static networks, and faster than 1 of "
        "them at batch 1 and 1 at batch 256."
    )
    assert lines[5].startswith("a (6 epochs): a certified point at least as accurate as 1 of the 2")
    assert lines[6] == (
        "h ≤0.5 pt drop: 1.25× the speed of its own weights without exits at batch 1 and 2.00× at batch 256, each on "
        "its faster engine."
    )
    assert lines[-1].startswith("1 of the 4 certified early-exit points are beaten")
    assert sv.verdicts([final, drop]) == ["No static network was measured: nothing to compare."]
    assert sv.verdicts([wide, final]) == ["No early-exit operating point could be certified: nothing to compare."]


def test_tables_have_a_column_per_engine_with_the_faster_in_bold():
    s = row("static_w050", sv.STATIC, 0.92, {"torch": 2.0, "onnxruntime": 1.0}, {"torch": 1000, "onnxruntime": 900})
    s.label = "static, 1/2 width"
    final = row("m:final", sv.FINAL, 0.95, 4.0, 500)
    p = row("m:p", sv.POINT, 0.93, {"torch": 0.5, "onnxruntime": 1.0}, {"torch": 2500, "onnxruntime": 3000}, macs=5e5)
    p.label = "m p"
    lines = sv.table([s, final, p], 1e6, TWO).splitlines()
    assert "ms/image, batch 1, ONNX Runtime" in lines[0] and lines[0].count("|") == 11 and len(lines) == 5
    assert "| 2.000 | **1.000** | **1000** | 900 | — |" in lines[2]
    assert "| 4.000 | — | 500 | — | — |" in lines[3]  # a figure an engine did not give
    assert lines[4].endswith("| **0.500** | 1.000 | 2500 | **3000** | 8.00×, 6.00× |") and "0.50 M (50.0%)" in lines[4]
    assert sv.table([s], 1e6, ["torch"]).splitlines()[2].endswith("| 2.000 | 1000 | — |")  # one engine: no bold
    frontier = sv.frontier_table([s, final, p], 1e6, TWO).splitlines()
    assert frontier[2] == (
        "| static, 1/2 width | 92.00% | yes, yes | 1.000 ms/image on ONNX Runtime | 1000 images/s on PyTorch | m | "
        "p (93.00%, 50.0%) | 2.00× | 1.00× | 2.50× | 3.00× | yes, yes |"
    )
    weaker = row("x:q", sv.POINT, 0.90, 0.1, 1)
    assert "| x | none reaches it | — | — | — | — | — |" in sv.frontier_table([s, weaker], 1e6, TWO)


def test_best_times_takes_turns_and_keeps_the_fastest_timed_round():
    calls, times = [], {"a": iter([0.1, 5.0, 3.0, 4.0]), "b": iter([0.1, 2.0, 1.0, 7.0])}

    def timer(key):
        def t():
            calls.append(key)
            return next(times[key])

        return t

    best = sv.best_times({"a": timer("a"), "b": timer("b")}, rounds=3)
    assert best == {"a": 3.0, "b": 1.0}  # the untimed first pass (0.1) is not kept
    assert calls == ["a", "b"] * 4
    with pytest.raises(ConfigError):
        sv.best_times({}, rounds=0)


def test_results_block_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\nmine\n\n{sv.BEGIN}\nold\n{sv.END}\n\nafter\n")
    sv.write_results_block(md, "new")
    assert md.read_text() == f"# Results\n\nmine\n\n{sv.BEGIN}\nnew\n{sv.END}\n\nafter\n"
    md.write_text("# Results\n\nothers\n")
    sv.write_results_block(md, "new")
    assert md.read_text() == f"# Results\n\nothers\n\n{sv.BEGIN}\nnew\n{sv.END}\n"


def test_missing_networks_and_engines():
    nets, notes = sv.load_networks(["no_such_static"], [])
    assert nets == [] and "no_such_static" in notes[0] and "skipped" in notes[0]
    with pytest.raises(ConfigError, match="does not exist"):
        sv.load_networks([], ["no_such_model"])
    with pytest.raises(ConfigError, match="no early exits"):
        sv.load_early_exit(shipped_models_dir() / "baseline.pt")
    with pytest.raises(SystemExit, match="--rounds must be at least 1"):
        sv.main(["--rounds", "0", "--no-write"])
    with pytest.raises(SystemExit, match="Unknown inference engine 'tensorrt'"):
        sv.main(["--engines", "torch,tensorrt", "--no-write"])
    assert sv.engines_of("") == list_engines(available=True) and sv.engines_of("torch") == ["torch"]


def test_a_payload_gives_back_its_rows_and_block():
    s = row("s", sv.STATIC, 0.92, {"torch": 2.0, "onnxruntime": 1.0}, {"torch": 1000, "onnxruntime": 900})
    p = row("m:p", sv.POINT, 0.93, {"torch": 0.5, "onnxruntime": math.nan}, {"torch": 2500, "onnxruntime": 3000})
    p.timed = {"torch": {"images": 3, "macs_ratio": 0.5, "same_exit_as_replay": 1.0}}
    how = {"command": "c", "machine": "m", "threads": 1, "rounds": 2, "n1": 3, "n256": 4, "engines": list(TWO)}
    how.update(seconds=12.0, load={"before": 1.0, "after": 2.0, "cores": 2})
    data = json.loads(json.dumps(sv.payload([s, p], 1e6, ["n"], how)))
    assert data["rows"][1]["ms_b1"]["onnxruntime"] is None and data["rows"][1]["best_engine_b1"] == "torch"
    assert data["versus"] == [
        {
            "static": "s",
            "model": "m",
            "point": "m:p",
            "speedup_b1": {"torch": 2.0, "onnxruntime": None},
            "speedup_b256": {"torch": 2.5, "onnxruntime": 3.0},
            "faster_b1": True,
            "faster_b256": True,
        }
    ]
    back = sv.rows_from_payload(data)
    assert sv.block(back, 1e6, data["notes"], sv.how_from_payload(data)) == sv.block([s, p], 1e6, ["n"], how)


def test_shipped_model_is_timed_on_every_engine_where_the_certified_rule_stops():
    torch.set_num_threads(1)
    engines = list_engines(available=True)
    net, notes = sv.load_early_exit(shipped_models_dir() / f"{DEFAULT_MODEL}.pt")
    points = [r for r in net.rows if r.kind == sv.POINT]
    assert net.rows[0].kind == sv.FINAL and len(points) + len(notes) == 1 + len(sv.BUDGETS)
    for p in points:
        assert p.macs < net.rows[0].macs and p.params > net.rows[0].params  # the exit heads cost parameters
    ds = net.meta.dataset
    n = 12
    images = slice_dataset(ds.mean, ds.std)[list(range(n))][0]
    sv.measure([net], images, {1: n, 4: n}, rounds=1, engines=engines, positions=load_slice()["indices"])
    for r in net.rows:
        assert set(r.ms_b1) == set(r.per_s_b256) == set(engines)
        assert all(v > 0 for v in [*r.ms_b1.values(), *r.per_s_b256.values()])
    for p in points:
        assert set(p.timed) == set(engines)
        for timed in p.timed.values():
            assert timed["images"] == n and 0 < timed["macs_ratio"] <= 1.01
            assert timed["same_exit_as_replay"] >= 11 / 12
    how = {"engines": engines}
    plain = sv.payload(net.rows, net.rows[0].macs, notes, how)
    assert plain["rows"][0]["macs_percent_of_default"] == pytest.approx(100)
    assert all(np.isfinite(v) for r in plain["rows"] for v in r["ms_b1"].values())


def test_spread_among_rows_running_the_same_computation():
    same = [
        row("s", sv.STATIC, 0.9, {"torch": 1.0, "onnxruntime": 0.5}, {"torch": 100, "onnxruntime": 100}),
        row("m:final", sv.FINAL, 0.9, {"torch": 1.2, "onnxruntime": 0.5}, {"torch": 150, "onnxruntime": 110}),
        row("k", sv.FINAL, 0.9, 1.1, 120),
    ]
    other = row("small", sv.STATIC, 0.9, 0.1, 9000)
    other.macs = 0.5e6
    rows = [*same, other, row("m:p", sv.POINT, 0.9, 5.0, 10)]
    n, b1, b256 = sv.same_network_spread(rows, "torch")
    assert n == 3 and b1 == pytest.approx(0.2) and b256 == pytest.approx(0.5)
    assert sv.same_network_spread(rows, "onnxruntime") == pytest.approx((2, 0.0, 0.1))
    assert sv.same_network_spread([same[0], other], "torch") is None


# ---- the shipped report ---------------------------------------------------------------------------------

SPEED_FIELDS = {"ms_b1", "per_s_b256", "timed"}


@pytest.fixture(scope="module")
def report():
    data = json.loads((sv.DOCS / "static_vs_early_exit.json").read_text())
    return data, sv.rows_from_payload(data)


def test_the_results_block_is_rederived_from_the_json(report):
    data, rows = report
    text = (sv.DOCS / "RESULTS.md").read_text()
    assert sv.BEGIN in text and sv.END in text
    shown = text.split(sv.BEGIN, 1)[1].split(sv.END, 1)[0].strip("\n")
    assert shown == sv.block(rows, data["default_macs"], data["notes"], sv.how_from_payload(data))
    assert data["verdicts"] == sv.verdicts(rows)
    assert data["engines"] == list_engines() and all(set(r["ms_b1"]) == set(data["engines"]) for r in data["rows"])
    assert data["command"].startswith("python -m benchmarks.static_vs_early_exit --threads 1 ")


def test_the_json_describes_the_shipped_models(report):
    data, rows = report
    statics = [r.key for r in rows if r.kind == sv.STATIC]
    models = list(dict.fromkeys(r.model for r in rows if r.kind != sv.STATIC))
    assert set(statics) == set(sv.STATICS) and models == list(sv.CHECKPOINTS)
    nets, notes = sv.load_networks(statics, models)
    fresh = sv.ordered_rows(nets)
    assert notes == data["notes"] and [r.key for r in fresh] == [r.key for r in rows]
    for new, old in zip(fresh, rows, strict=True):
        for name, v in vars(new).items():
            if name not in SPEED_FIELDS:
                assert getattr(old, name) == pytest.approx(v), f"{new.key}: {name}"
    assert data["default_macs"] == sv.default_macs(nets)


def test_the_default_targets_follow_the_numbers():
    half = row("half", sv.STATIC, 0.92, 0.25, 4000)
    wide = row("wide", sv.STATIC, 0.93, 1.0, 900)
    final = row("d:final", sv.FINAL, 0.946, 2.0, 500, macs=10e6)
    final.oracle_macs = 2.5e6
    drop = row("d:≤0.5 pt drop", sv.POINT, 0.943, 0.5, 1500, macs=3e6)
    lines = sv.default_targets([wide, half, final, drop], "d")
    assert lines[0] == "Final exit: 94.60% on test (target ≥ 94.5%): met."
    assert lines[1] == (
        "Certified drop of at most 0.5 points (94.30% on test, 30.0% of its MACs without exits; the oracle, which "
        "reads the labels: 25.0%): 4.00× at batch 1 (target ≥ 3×: met) and 3.00× at batch 256 (target ≥ 2×: met) "
        "the speed of its own weights without exits, each on its faster engine."
    )
    assert lines[2] == (
        "Static frontier at batch 1: a certified point at least as accurate and faster than 1 of the 2 static "
        "networks (target: every one): missed: half (92.00%): 0.50× the speed."
    )
    assert lines[3].startswith("Static frontier at batch 256: a certified point at least as accurate and faster than 1")
    final.accuracy, drop.ms_b1 = 0.9438, {"torch": 1.0}
    lines = sv.default_targets([wide, half, final, drop], "d")
    assert lines[0].endswith("missed (0.12 points short).")
    assert "2.00× at batch 1 (target ≥ 3×: missed (1.50× faster needed))" in lines[1]
    assert sv.default_targets([final, drop], "other") == []
    assert "no speed-up to report" in sv.default_targets([half, final], "d")[1]
