"""The static-versus-early-exit benchmark: its comparisons follow the numbers, its timing keeps the fastest round,
its RESULTS.md block leaves the rest of the file alone, and on a shipped model the runtime it times stops the
images where the certified, replayed rule does."""

import numpy as np
import pytest
import torch

from aep_core.checkpoint.discovery import DEFAULT_MODEL
from aep_core.data import load_slice, slice_dataset
from aep_core.errors import ConfigError
from aep_core.paths import shipped_models_dir
from benchmarks import static_vs_early_exit as sv


def row(key: str, kind: str, accuracy: float, ms: float, per_s: float, epochs: int = 6) -> sv.Row:
    return sv.Row(key, key, kind, key.split(":")[0], epochs, 1000, 1e6, accuracy, ms_b1=ms, per_s_b256=per_s)


def test_closest_from_above_is_the_least_accurate_static_at_least_as_accurate():
    small, mid, big = (
        row("small", sv.STATIC, 0.90, 1, 1000),
        row("mid", sv.STATIC, 0.92, 2, 500),
        row("big", sv.STATIC, 0.93, 3, 300),
    )
    statics = [big, small, mid]
    assert sv.closest_from_above(row("p", sv.POINT, 0.91, 2, 600), statics) is mid
    assert sv.closest_from_above(row("p", sv.POINT, 0.92, 2, 600), statics) is mid  # equal counts as above
    assert sv.closest_from_above(row("p", sv.POINT, 0.89, 2, 600), statics) is small
    assert sv.closest_from_above(row("p", sv.POINT, 0.94, 2, 600), statics) is None


def test_beats_needs_accuracy_and_both_speeds():
    p = row("p", sv.POINT, 0.91, 2.0, 500)
    assert sv.beats(row("s", sv.STATIC, 0.91, 1.0, 600), p)
    assert not sv.beats(row("s", sv.STATIC, 0.90, 1.0, 600), p)  # less accurate
    assert not sv.beats(row("s", sv.STATIC, 0.92, 2.5, 600), p)  # slower at batch 1
    assert not sv.beats(row("s", sv.STATIC, 0.92, 1.0, 400), p)  # slower at batch 256
    assert sv.ratios(p, row("s", sv.STATIC, 0.92, 4.0, 250)) == (0.5, 2.0)


def test_verdicts_follow_the_numbers():
    fast = row("static_w050", sv.STATIC, 0.92, 1.0, 2000)
    points = [row("a:p1", sv.POINT, 0.91, 2.0, 800), row("a:p2", sv.POINT, 0.915, 3.0, 900)]
    strong = row("h:p1", sv.POINT, 0.94, 4.0, 700, epochs=30)
    lines = sv.verdicts([fast, *points, strong])
    assert "beats all 2 certified early-exit points of the 6-epoch model (a);" in lines[0]
    assert "none of the 1 certified points of the 30-epoch model (h)" in lines[0]
    assert any(v.startswith("h:p1 (30 epochs)") and "more accurate than every static network" in v for v in lines)
    assert lines[-1].startswith("2 of the 3 certified early-exit points are beaten")
    # The static network slower at batch 256 than one point no longer beats it, and that point gets its own line.
    points[1].per_s_b256 = 2500
    lines = sv.verdicts([fast, *points, strong])
    assert "1 of the 2 certified points of the 6-epoch model (a): a:p1;" in lines[0]
    assert any(
        v.startswith("a:p2")
        and "3.00× its latency at batch 1 (slower), 1.25× its throughput at batch 256 (faster)" in v
        for v in lines
    )
    assert lines[-1].startswith("1 of the 3")
    assert sv.verdicts(points) == ["No static network was measured: nothing to compare."]


def test_table_gives_each_early_exit_row_its_ratios():
    s = row("static_w050", sv.STATIC, 0.92, 2.0, 1000)
    s.label = "static, 1/2 width"
    text = sv.table([s, row("m:p", sv.POINT, 0.91, 1.0, 2500), row("m:q", sv.POINT, 0.95, 1.0, 2500)], 2e6)
    lines = text.splitlines()
    assert "% of 2.00 M" in lines[0] and len(lines) == 5
    assert "1/2 width (92.00%): 0.50× latency, 2.50× throughput" in lines[3]
    assert lines[4].endswith("none is as accurate |") and "1.00 M (50.0%)" in lines[4]


def test_best_times_takes_turns_and_keeps_the_fastest_timed_round():
    calls, times = [], {"a": iter([0.1, 5.0, 3.0, 4.0]), "b": iter([0.1, 2.0, 1.0, 7.0])}

    def timer(key):
        def t(x, bs):
            calls.append(key)
            return next(times[key])

        return t

    best = sv.best_times({"a": timer("a"), "b": timer("b")}, torch.zeros(1, 1, 2, 2), 1, rounds=3)
    assert best == {"a": 3.0, "b": 1.0}  # the untimed first pass (0.1) is not kept
    assert calls == ["a", "b"] * 4
    with pytest.raises(ConfigError):
        sv.best_times({}, torch.zeros(1, 1, 2, 2), 1, rounds=0)


def test_results_block_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\nmine\n\n{sv.BEGIN}\nold\n{sv.END}\n\nafter\n")
    sv.write_results_block(md, "new")
    assert md.read_text() == f"# Results\n\nmine\n\n{sv.BEGIN}\nnew\n{sv.END}\n\nafter\n"
    md.write_text("# Results\n\nothers\n")
    sv.write_results_block(md, "new")
    assert md.read_text() == f"# Results\n\nothers\n\n{sv.BEGIN}\nnew\n{sv.END}\n"


def test_missing_networks():
    nets, notes = sv.load_networks(["no_such_static"], [])
    assert nets == [] and "no_such_static" in notes[0] and "skipped" in notes[0]
    with pytest.raises(ConfigError, match="does not exist"):
        sv.load_networks([], ["no_such_model"])
    with pytest.raises(ConfigError, match="no early exits"):
        sv.load_early_exit(shipped_models_dir() / "baseline.pt")
    with pytest.raises(SystemExit, match="--rounds must be at least 1"):
        sv.main(["--rounds", "0", "--no-write"])


def test_shipped_model_is_timed_where_the_certified_rule_stops():
    torch.set_num_threads(1)
    net, notes = sv.load_early_exit(shipped_models_dir() / f"{DEFAULT_MODEL}.pt")
    points = [r for r in net.rows if r.kind == sv.POINT]
    assert net.rows[0].kind == sv.FINAL and len(points) + len(notes) == 1 + len(sv.BUDGETS)
    for p in points:
        assert p.macs < net.rows[0].macs and p.params > net.rows[0].params  # the exit heads cost parameters
    ds = net.meta.dataset
    n = 12
    images = slice_dataset(ds.mean, ds.std)[list(range(n))][0]
    sv.measure([net], images, {1: n, 4: n}, rounds=1, positions=load_slice()["indices"])
    for r in net.rows:
        assert r.ms_b1 > 0 and r.per_s_b256 > 0
    for p in points:
        assert p.timed["images"] == n and 0 < p.timed["macs_ratio"] <= 1.01
        assert p.timed["same_exit_as_replay"] >= 11 / 12
    plain = sv.payload(net.rows, net.rows[0].macs, notes, {"command": "c"})
    assert plain["rows"][0]["macs_percent_of_default"] == pytest.approx(100)
    assert all(np.isfinite(r["ms_b1"]) for r in plain["rows"])


def test_spread_among_rows_running_the_same_computation():
    same = [
        row("s", sv.STATIC, 0.9, 1.0, 100),
        row("m:final", sv.FINAL, 0.9, 1.2, 150),
        row("k", sv.FINAL, 0.9, 1.1, 120),
    ]
    other = row("small", sv.STATIC, 0.9, 0.1, 9000)
    other.macs = 0.5e6
    n, b1, b256 = sv.same_network_spread([*same, other, row("m:p", sv.POINT, 0.9, 5.0, 10)])
    assert n == 3 and b1 == pytest.approx(0.2) and b256 == pytest.approx(0.5)
    assert sv.same_network_spread([same[0], other]) is None
