"""Measurements that run on their own thread count, started from many threads at once, leave the process on its
default count: a later thread (a later session's script run) starts with it."""

import threading

import pytest
import torch

from aep_core.deploy.simulator import measure_macs_per_second
from aep_core.models import ModelSpec, build_model
from aep_core.threads import cpu_threads, default_threads, set_default_threads


def _in_a_new_thread() -> int:
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


@pytest.fixture
def two_threads():
    """A process default of two threads (so a measurement's one thread can be told apart), restored after."""
    before = default_threads()
    set_default_threads(2)
    yield
    set_default_threads(before)


def test_overlapping_measurements_leave_the_default_thread_count(monkeypatch, two_threads):
    model = build_model(ModelSpec(backbone_config={"widths": (4, 8, 8)}))
    first = threading.current_thread()
    second_inside, first_done = threading.Event(), threading.Event()
    second: list[threading.Thread] = []

    def measure() -> None:
        measure_macs_per_second(model, (1, 28, 28), repeats=2, threads=1)

    def timed(fn, repeats: int, warmup: int) -> float:
        if threading.current_thread() is first:
            # While this measurement runs on one thread, another session's script thread starts one too, and
            # ends after this one (it waits for it as long as the two can overlap).
            second.append(threading.Thread(target=measure))
            second[0].start()
            second_inside.wait(1)
        else:
            second_inside.set()
            first_done.wait(5)
        return 1e-3

    monkeypatch.setattr("aep_core.deploy.simulator.measure_latency", timed)
    measure()
    first_done.set()
    second[0].join()
    assert torch.get_num_threads() == default_threads()
    assert _in_a_new_thread() == default_threads()


def test_a_block_runs_on_its_own_count_and_refuses_none_below_one():
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == default_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"), cpu_threads(0):
        pass
