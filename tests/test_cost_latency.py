"""compare_latency: functions timed in alternation, warm-up rounds untimed, per-round samples summarised by
median, quartiles and extremes; latency_ratio pairs the rounds of two functions."""

import time

import pytest
import torch
from app_helpers import assert_no_exception, run_app, small_model_dir

import aep_core.cost
from aep_core.cost import LatencyStats, compare_latency, latency_ratio


class FakeClock:
    """A clock that only moves when a fake function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def taking(self, durations: list[float]):
        """A function whose successive calls take `durations` seconds on this clock."""
        it = iter(durations)

        def fn() -> None:
            self.now += next(it)

        return fn


def test_functions_are_timed_in_rotating_alternation():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    stats = compare_latency(fns, rounds=4, warmup=2)
    assert len(calls) == 3 * (4 + 2)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds), rounds
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]
    assert all(len(s.samples) == 4 for s in stats.values())


def test_two_functions_alternate_in_abba_order():
    calls: list[str] = []
    compare_latency({"cut": lambda: calls.append("cut"), "all": lambda: calls.append("all")}, rounds=3, warmup=1)
    assert calls == ["cut", "all", "all", "cut", "cut", "all", "all", "cut"]


def test_warm_up_rounds_are_not_timed_and_stats_summarise_the_rest():
    clock = FakeClock()
    # warm-up calls take 100 s (a cold first call); the timed rounds take 1..5 s, out of order
    fn = clock.taking([100.0, 100.0, 3.0, 1.0, 5.0, 2.0, 4.0])
    stats = compare_latency({"f": fn}, rounds=5, warmup=2, clock=clock)["f"]
    assert stats.samples == (3.0, 1.0, 5.0, 2.0, 4.0)
    assert (stats.min, stats.q1, stats.median, stats.q3, stats.max) == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_each_function_gets_its_own_samples():
    clock = FakeClock()
    fns = {"slow": clock.taking([9.0, 10.0, 10.0, 12.0]), "fast": clock.taking([9.0, 1.0, 2.0, 1.0])}
    stats = compare_latency(fns, rounds=3, warmup=1, clock=clock)
    assert stats["slow"].samples == (10.0, 10.0, 12.0)
    assert stats["fast"].samples == (1.0, 2.0, 1.0)
    assert stats["slow"].median == 10.0 and stats["fast"].median == 1.0
    assert not stats["slow"].overlaps(stats["fast"])


def test_real_sleeps_are_measured():
    stats = compare_latency({"sleep": lambda: time.sleep(0.002), "nothing": lambda: None}, rounds=5, warmup=1)
    assert stats["sleep"].min >= 0.002
    assert stats["nothing"].median < stats["sleep"].median


def test_functions_run_without_autograd():
    seen: list[bool] = []
    compare_latency({"f": lambda: seen.append(torch.is_inference_mode_enabled())}, rounds=2, warmup=1)
    assert seen == [True, True, True]


def test_latency_ratio_pairs_the_rounds():
    a = LatencyStats.of([1.0, 2.0, 4.0])
    b = LatencyStats.of([2.0, 4.0, 8.0])  # each round twice as slow: the ratio is exactly 0.5 despite the spread
    ratio = latency_ratio(a, b)
    assert ratio.samples == (0.5, 0.5, 0.5)
    assert ratio.q1 == ratio.median == ratio.q3 == 0.5
    assert a.overlaps(b)
    with pytest.raises(ValueError):
        latency_ratio(a, LatencyStats.of([1.0]))


def test_quartiles_interpolate_and_one_sample_is_its_own_spread():
    stats = LatencyStats.of([4.0, 1.0, 2.0, 3.0])
    assert (stats.q1, stats.median, stats.q3) == (1.75, 2.5, 3.25)
    one = LatencyStats.of([0.5])
    assert one.min == one.q1 == one.median == one.q3 == one.max == 0.5


@pytest.mark.parametrize(("fns", "rounds", "warmup"), [({}, 3, 1), ({"f": lambda: None}, 0, 1), ({"f": print}, 2, -1)])
def test_bad_arguments_are_refused(fns, rounds, warmup):
    with pytest.raises(ValueError):
        compare_latency(fns, rounds=rounds, warmup=warmup)


# ---- the Pruning page --------------------------------------------------------------------------------


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(small_model_dir()))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))


def _latency_column(at) -> list[float]:
    return at.dataframe[0].value["latency (ms)"].tolist()


def test_pruning_page_shows_latency_with_its_spread(app_env):
    at = run_app("pruning")
    assert_no_exception(at, errors_too=True)
    table = at.dataframe[0].value
    assert "latency IQR (ms)" in table.columns
    for median, spread in zip(table["latency (ms)"], table["latency IQR (ms)"], strict=True):
        q1, q3 = (float(v) for v in spread.split("–"))
        assert q1 <= median + 1e-3 and median <= q3 + 1e-3
    latency = next(m for m in at.metric if m.label.startswith("Latency"))
    assert "vs all exits" in latency.delta
    assert any("rounds" in c.value and "warm-up" in c.value for c in at.caption)


def test_two_sessions_time_the_cuts_themselves_and_can_time_again(app_env):
    a, b = run_app("pruning"), run_app("pruning")
    assert_no_exception(a)
    assert_no_exception(b)
    assert _latency_column(a) != _latency_column(b), "two sessions show one shared timing"
    before = _latency_column(a)
    a.button(key="prune_remeasure").click().run()
    assert_no_exception(a)
    assert _latency_column(a) != before, "measuring again gave the same timing"


def _fake_timings(per_cut: list[list[float]]):
    """A compare_latency that returns these per-round timings (seconds), one list per cut, in order."""

    def fake(fns, rounds, warmup, clock=None):
        return {name: LatencyStats.of(samples) for name, samples in zip(fns, per_cut, strict=True)}

    return fake


def test_pruning_page_gives_the_saving_as_a_range_or_says_it_is_within_the_spread(app_env, monkeypatch):
    full = [0.002, 0.003, 0.004, 0.005]
    clear = [[t / 4 for t in full]] + [full] * 4  # exit 0 a quarter of the full model's time in every round
    monkeypatch.setattr(aep_core.cost, "compare_latency", _fake_timings(clear))
    at = run_app("pruning")
    at.selectbox(key=at.selectbox[0].key).set_value(0).run()
    assert_no_exception(at)
    latency = next(m for m in at.metric if m.label.startswith("Latency"))
    assert latency.value == "0.88 ms" and latency.delta == "-75% (-75% to -75%) vs all exits"
    assert not at.info

    noisy = [[0.004, 0.001, 0.003, 0.002]] + [full] * 4  # a faster median, but the spreads overlap
    monkeypatch.setattr(aep_core.cost, "compare_latency", _fake_timings(noisy))
    at = run_app("pruning")
    at.selectbox(key=at.selectbox[0].key).set_value(0).run()
    assert_no_exception(at)
    assert any("overlap" in i.value and "within the measurement's spread" in i.value for i in at.info)
