"""The Train page and what it relies on: a model name is claimed atomically before a run writes (a taken name is
refused with a free one offered, a name being trained is never replaced), and the expected time and accuracy
come from measurement (earlier runs of the same settings, or batches timed just now), saying what they rest on."""

import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from app_helpers import assert_no_exception, run_app, small_model_dir

from aep_core.checkpoint import read_checkpoint
from aep_core.data import load_dataset
from aep_core.errors import ConfigError
from aep_core.training import MethodSettings, TrainConfig
from aep_core.training.estimate import (
    estimate_run,
    format_seconds,
    read_runs,
    record_run,
    run_settings,
    time_steps,
)
from aep_core.training.job import TrainJob
from aep_core.training.names import NameTaken, claim_name, claim_path, clean_model_name, free_name, name_state

SLICE_RUN = {"tr_dataset": "fashion-mnist-slice", "tr_limit": 200, "tr_epochs": 1}


@pytest.fixture(scope="module")
def models():
    return small_model_dir()


@pytest.fixture
def runs(models, monkeypatch, tmp_path):
    """The folder the Train page writes to (empty), with the tiny test models in the picker."""
    monkeypatch.setenv("AEP_MODELS_DIR", str(models))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    return tmp_path / "app_runs"


def _start(at):
    return next(b for b in at.button if b.label == "Start training").click().run()


def _slice_job(out, epochs: int = 1, batch_size: int = 64) -> TrainJob:
    return TrainJob(
        out=str(out),
        dataset="fashion-mnist-slice",
        limit=200,
        method=MethodSettings(method="aep", weighting="linear"),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=0.003, progress=False),
    )


# ---- names ----------------------------------------------------------------------------------------------


def test_only_one_of_many_threads_claims_a_name(tmp_path):
    barrier, won, refused = threading.Barrier(16), [], []

    def attempt() -> None:
        barrier.wait()
        try:
            won.append(claim_name(tmp_path, "same"))
        except NameTaken as e:
            refused.append(e.state)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and refused == ["training"] * 15
    won[0].release()
    assert not claim_path(tmp_path, "same").exists()
    with claim_name(tmp_path, "same"):  # free again once released
        pass


def _claim_in_child(folder: str, start, done, results) -> None:
    start.wait()
    try:
        claim_name(folder, "same")
        results.put("won")
    except NameTaken as e:
        results.put(e.state)
    done.wait()  # hold the claim until every process has tried


def test_only_one_of_several_processes_claims_a_name(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 4
    start, done, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(str(tmp_path), start, done, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["training"] * (n - 1) + ["won"]


def test_a_finished_model_is_replaced_only_when_asked(tmp_path):
    (tmp_path / "mine.pt").write_bytes(b"weights")
    with pytest.raises(NameTaken) as e:
        claim_name(tmp_path, "mine")
    assert e.value.state == "exists" and e.value.suggestion == "mine-2" and "'mine-2' is free" in str(e.value)
    assert not claim_path(tmp_path, "mine").exists(), "a refused claim leaves nothing behind"
    claim = claim_name(tmp_path, "mine", replace=True)
    assert claim.replaces and claim.checkpoint == (tmp_path / "mine.pt").resolve()
    with pytest.raises(NameTaken) as e:  # being trained: never replaced, even when asked
        claim_name(tmp_path, "mine", replace=True)
    assert e.value.state == "training" and e.value.suggestion == "mine-2"
    claim.release()
    with pytest.raises(NameTaken) as e:
        claim_name(tmp_path, "tiny", reserved={"tiny"})
    assert e.value.state == "reserved"


def test_free_name_counts_past_taken_and_claimed_names(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "m-2.pt").write_bytes(b"")
    with claim_name(tmp_path, "m-3"):
        assert name_state(tmp_path, "m-3") == "training"
        assert free_name(tmp_path, "m") == "m-4"
    assert free_name(tmp_path, "run-7") == "run-8"
    assert free_name(tmp_path, "x" * 40) == "x" * 38 + "-2"
    assert free_name(tmp_path, "m", reserved={"m-3"}) == "m-4"  # m-3 is free again, but reserved
    assert clean_model_name("my model!") == "mymodel"
    with pytest.raises(ConfigError):
        clean_model_name("!!")


def test_a_folder_that_cannot_be_written_gives_one_message(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="Cannot create the model folder"):
        claim_name(tmp_path / "file" / "models", "m")


def _write_claim(folder, name: str, **info) -> None:
    claim_path(folder, name).write_text(json.dumps({"host": socket.gethostname(), "started": time.time(), **info}))


def test_claims_of_processes_that_are_gone_are_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_claim(tmp_path, "crashed", pid=gone.pid)
    _write_claim(tmp_path, "restarted", pid=os.getpid())  # this process, but not a claim it holds
    _write_claim(tmp_path, "running", pid=os.getppid())  # a live process on this host
    claim_path(tmp_path, "elsewhere").write_text(json.dumps({"host": "another-host", "pid": 1}))
    for name in ("crashed", "restarted"):
        assert name_state(tmp_path, name) == "free"
        claim_name(tmp_path, name).release()
    for name in ("running", "elsewhere"):
        with pytest.raises(NameTaken):
            claim_name(tmp_path, name)


# ---- estimates --------------------------------------------------------------------------------------------


def test_estimate_comes_from_logged_runs_of_the_same_settings(tmp_path, models):
    model = tmp_path / "a.pt"
    shutil.copy(models / "tiny.pt", model)
    job = _slice_job(model)
    none_yet = estimate_run(tmp_path, job, measure=False)
    assert none_yet.seconds is None and none_yet.accuracy is None
    assert "unknown until the first run" in none_yet.accuracy_text()
    entry = record_run(tmp_path, job, 12.0, model)
    val_final = read_checkpoint(model).meta.metrics["val"].exit_acc[-1]
    assert entry["val_exit_acc"][-1] == pytest.approx(val_final)
    one = estimate_run(tmp_path, _slice_job(tmp_path / "other_name.pt"), measure=False)  # the name does not matter
    assert one.seconds == 12.0 and one.accuracy == pytest.approx(val_final)
    assert "the one earlier run of these settings on this server" in one.time_text()
    assert f"{100 * val_final:.1f}%" in one.accuracy_text()
    record_run(tmp_path, job, 16.0, model)
    two = estimate_run(tmp_path, job, measure=False)
    assert two.seconds == 14.0 and "median of 2 earlier runs" in two.time_text() and "12 s to 16 s" in two.time_text()
    assert len(read_runs(tmp_path)) == 2
    other = estimate_run(tmp_path, _slice_job(model, epochs=2), measure=False)  # other settings: nothing known
    assert other.seconds is None and other.accuracy is None
    assert run_settings(job) != run_settings(_slice_job(model, epochs=2))
    assert format_seconds(13.2) == "13 s" and format_seconds(245) == "4 min 05 s"


def test_time_steps_measures_this_configuration(tmp_path):
    job = _slice_job(tmp_path / "t.pt", epochs=3, batch_size=32)
    timing = time_steps(job)
    assert timing.step_seconds > 0 and timing.image_seconds > 0 and timing.batches_timed == 2
    assert timing.epochs == 3 and timing.steps_per_epoch == math.ceil(
        len(load_dataset("fashion-mnist-slice", limit=200).train) / 32
    )
    estimate = estimate_run(tmp_path, job)  # no earlier run: measured
    assert estimate.seconds is not None and estimate.seconds > 0 and estimate.accuracy is None
    assert "timed on this machine just now" in estimate.time_text()
    assert "unknown until the first run" in estimate.accuracy_text()


# ---- the page -----------------------------------------------------------------------------------------------


def test_page_promises_nothing_it_has_not_measured(runs):
    at = run_app("train")
    assert_no_exception(at, errors_too=True)
    info = " ".join(i.value for i in at.info)
    assert "40-50%" not in info and "about a minute" not in info
    assert "unknown until the first run of these settings" in info and "timing a few training batches" in info


def test_taken_name_is_refused_with_a_free_name_offered(runs, models):
    runs.mkdir(parents=True)
    shutil.copy(models / "tiny.pt", runs / "taken.pt")
    before = (runs / "taken.pt").read_bytes()
    at = run_app("train", **SLICE_RUN, tr_name="taken")
    assert_no_exception(at)
    _start(at)
    assert_no_exception(at)
    assert "train_job" not in at.session_state, "no run may start on a taken name"
    assert any("already exists" in e.value and "'taken-2' is free" in e.value for e in at.error)
    assert (runs / "taken.pt").read_bytes() == before
    next(b for b in at.button if b.label == "Use the name taken-2").click().run()
    assert at.text_input(key="tr_name").value == "taken-2"
    assert any("taken-2" in i.value for i in at.info)
    at.text_input(key="tr_name").set_value("tiny")  # a model elsewhere in the picker
    _start(at)
    assert "train_job" not in at.session_state
    assert any("another model" in e.value and "'tiny-2' is free" in e.value for e in at.error)


def _wait(job, limit_s: float = 180) -> None:
    t0 = time.time()
    while not job.done and time.time() - t0 < limit_s:
        time.sleep(0.3)
    assert job.done and job.error is None, job.error


def test_second_session_cannot_take_a_name_in_training_and_times_are_measured(runs):
    first = run_app("train", **SLICE_RUN, tr_name="shared")
    _start(first)
    assert_no_exception(first, errors_too=True)
    job = first.session_state["train_job"]
    try:
        assert claim_path(runs, "shared").exists()
        second = run_app("train", **SLICE_RUN, tr_name="shared", tr_replace=True)
        _start(second)
        assert_no_exception(second)
        assert "train_job" not in second.session_state
        assert any("being trained right now" in e.value and "'shared-2' is free" in e.value for e in second.error)
        second.text_input(key="tr_name").set_value("another")
        _start(second)
        assert "train_job" not in second.session_state
        assert any("Another session is training" in w.value for w in second.warning)
    finally:
        _wait(job)
    assert not claim_path(runs, "shared").exists() and (runs / "shared.pt").exists()
    assert job.estimate is not None and job.estimate.seconds > 0
    assert "timed on this machine just now" in job.estimate.seconds_basis
    first.run()
    assert_no_exception(first, errors_too=True)
    assert any(f"Saved shared in {format_seconds(job.seconds)}" in s.value for s in first.success)
    (logged,) = read_runs(runs)
    assert logged["name"] == "shared" and logged["seconds"] == pytest.approx(job.seconds, abs=0.01)
    final = logged["val_exit_acc"][-1]
    assert final == pytest.approx(job.history[-1].val_acc[-1])

    second.run()  # same settings, another name: the page now knows what to expect from the measured run
    info = " ".join(i.value for i in second.info)
    assert "the one earlier run of these settings on this server" in info and f"{100 * final:.1f}%" in info
    second.text_input(key="tr_name").set_value("shared")
    second.checkbox(key="tr_replace").uncheck()
    _start(second)
    assert "train_job" not in second.session_state
    assert any("already exists" in e.value and "Replace a model of this name" in e.value for e in second.error)
