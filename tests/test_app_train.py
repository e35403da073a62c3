"""The Train page and what it relies on: a model name is claimed atomically before a run writes (a taken name is
refused with a free one offered, a name being trained is never replaced), and the expected time and accuracy
come from measurement (earlier runs of the same settings, or batches timed just now), saying what they rest on.
A torchvision classifier trains exits from the user's own weights file, checked before the run starts."""

import functools
import hashlib
import io
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
import zipfile
from dataclasses import replace

import pytest
import torch
import torchvision
from app_helpers import assert_no_exception, run_app, small_model_dir

from aep_core.checkpoint import read_checkpoint
from aep_core.data import load_dataset
from aep_core.errors import ConfigError
from aep_core.models.torchvision_backbones import TorchvisionBackbone
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


# ---- torchvision classifiers ------------------------------------------------------------------------------------

TORCHVISION_RUN = {**SLICE_RUN, "tr_backbone": "torchvision", "tr_weights_source": "file"}
EXITS_KEY = "tr_exits_mobilenet_v3_small"


@pytest.fixture
def uploads(runs, monkeypatch, tmp_path):
    """The app's upload folder (empty), beside the Train page's output folder."""
    monkeypatch.setenv("AEP_APP_DATA_DIR", str(tmp_path / "uploads"))
    return tmp_path / "uploads"


def _state_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@functools.cache
def _mobilenet_weights() -> tuple[dict, bytes]:
    """A mobilenet_v3_small state_dict with 10 classes (seeded) and its file's bytes."""
    torch.manual_seed(7)
    state = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()
    return state, _state_bytes(state)


def _upload_weights(at, data: bytes, name: str = "my.pt"):
    return at.file_uploader(key="tr_weights_upload").set_value((name, data, "application/octet-stream")).run()


def _info(at) -> str:
    return " ".join(i.value for i in at.info)


def test_run_settings_count_a_weights_file_by_its_content(tmp_path):
    a, b, other = tmp_path / "a" / "my.pt", tmp_path / "b" / "my.pt", tmp_path / "c" / "my.pt"
    for path, data in ((a, b"same"), (b, b"same"), (other, b"other")):
        path.parent.mkdir()
        path.write_bytes(data)

    def job(**kw) -> TrainJob:
        settings = {"model": "torchvision", "model_config": {"arch": "mobilenet_v3_small"}, "weights": str(a)}
        return replace(_slice_job(tmp_path / "m.pt"), **{**settings, **kw})

    assert run_settings(job()) == run_settings(job(weights=str(b)))  # where the file lies does not matter
    assert run_settings(job())["weights"].startswith("sha256:")
    assert run_settings(job()) != run_settings(job(weights=str(other)))
    assert run_settings(job(weights="DEFAULT"))["weights"] == "DEFAULT"
    assert run_settings(job()) != run_settings(job(model_config={"arch": "resnet18"}))
    assert run_settings(job()) != run_settings(job(image_size=64))
    frozen = MethodSettings(method="classifier-wise", weighting="linear", freeze_epochs=0)
    assert run_settings(job()) != run_settings(job(method=frozen))
    assert run_settings(job()) != run_settings(_slice_job(tmp_path / "m.pt"))


def test_run_settings_count_an_image_folder_by_its_files(tmp_path):
    for top in ("one", "two", "three"):
        for c in ("cat", "dog"):
            (tmp_path / top / c).mkdir(parents=True)
            (tmp_path / top / c / "0.png").write_bytes(b"png")
    (tmp_path / "three" / "dog" / "1.png").write_bytes(b"png")

    def job(folder: str) -> TrainJob:
        return replace(_slice_job(tmp_path / "m.pt"), dataset="folder", data_dir=str(tmp_path / folder))

    # a folder uploaded again lands elsewhere: its runs still count as the same settings
    assert run_settings(job("one")) == run_settings(job("two"))
    assert run_settings(job("one"))["data_dir"].startswith("files-sha256:")
    assert run_settings(job("one")) != run_settings(job("three"))  # one more image
    assert run_settings(job("missing"))["data_dir"] == str(tmp_path / "missing")


def test_torchvision_classifier_trains_exits_on_uploaded_weights(uploads):
    state, data = _mobilenet_weights()
    at = run_app("train", **TORCHVISION_RUN, tr_name="mobile")
    assert_no_exception(at, errors_too=True)
    arch = at.selectbox(key="tr_arch")
    assert arch.value == "mobilenet_v3_small" and {"resnet18 (resnet)", "efficientnet_b0 (efficientnet)"} <= set(
        arch.options
    )
    exits = at.multiselect(key=EXITS_KEY)
    assert exits.value == ["features.1", "features.3", "features.8"]  # one per stage
    assert "features.12" not in exits.options  # the network's own classifier follows the last block
    _upload_weights(at, data)
    assert_no_exception(at, errors_too=True)
    assert any("kept as the final exit" in s.value for s in at.success)
    assert at.radio(key="tr_mode").value == "frozen"
    assert "tr_method" not in [s.key for s in at.selectbox]  # the training mode stands for the method
    at.multiselect(key=EXITS_KEY).set_value(["features.8", "features.3"])
    _start(at)
    assert_no_exception(at, errors_too=True)
    job = at.session_state["train_job"]
    _wait(job)
    assert job.estimate is not None and "timed on this machine just now" in job.estimate.seconds_basis
    at.run()
    assert_no_exception(at, errors_too=True)
    assert any("Saved mobile" in s.value for s in at.success) and any(b.label == "Use mobile now" for b in at.button)

    stored = read_checkpoint(uploads.parent / "app_runs" / "mobile.pt")
    meta = stored.meta
    assert meta.model.backbone == "torchvision" and meta.model.backbone_config == {"arch": "mobilenet_v3_small"}
    assert meta.model.exit_blocks == [2, 7, 11]
    assert meta.training.method == "classifier-wise" and meta.training.settings["freeze_epochs"] == 0
    (saved,) = (uploads / "weights").glob("*/my.pt")
    # the file is recorded by its name and content, not by its path on the server
    assert meta.training.weights == f"my.pt (sha256:{hashlib.sha256(data).hexdigest()})"
    assert saved.read_bytes() == data
    net = torchvision.models.mobilenet_v3_small(num_classes=10)
    net.load_state_dict(state)
    uploaded = TorchvisionBackbone("mobilenet_v3_small", 1, net)  # grey images: the colour weights summed
    for k, v in uploaded.state_dict().items():  # frozen: the backbone is the upload's, BatchNorm statistics too
        assert torch.equal(stored.state_dict[f"backbone.{k}"], v), k
    for k, v in uploaded.native_classifier(10).state_dict().items():  # its classifier is the final exit, unchanged
        assert torch.equal(stored.state_dict[f"heads.2.classifier.{k}"], v), k

    # Another session uploads the same file: its estimate is the run measured above, compact_cnn's is not.
    final = job.history[-1].val_acc[-1]
    again = run_app("train", **TORCHVISION_RUN, **{EXITS_KEY: ["features.3", "features.8"]})
    _upload_weights(again, data)
    assert_no_exception(again, errors_too=True)
    assert "the one earlier run of these settings on this server" in _info(again) and f"{100 * final:.1f}%" in _info(
        again
    )
    again.selectbox(key="tr_backbone").set_value("compact_cnn").run()
    assert_no_exception(again, errors_too=True)
    assert "unknown until the first run of these settings" in _info(again)


def test_weights_of_another_architecture_give_one_error_and_no_run(uploads):
    at = run_app("train", **TORCHVISION_RUN, tr_name="wrong")
    _upload_weights(at, _state_bytes(torchvision.models.resnet18(num_classes=10).state_dict()), "resnet.pt")
    assert_no_exception(at)
    (error,) = at.error
    assert "does not hold mobilenet_v3_small weights" in error.value and "missing" in error.value
    _start(at)
    assert_no_exception(at)
    assert [e.value for e in at.error] == [error.value] and "train_job" not in at.session_state
    assert not (uploads.parent / "app_runs" / "wrong.pt").exists()


class _Payload:
    """An object whose unpickling would create a file: what a malicious weights file does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_weights_file_with_pickled_code_is_refused(uploads, tmp_path):
    marker = tmp_path / "code_ran"
    at = run_app("train", **TORCHVISION_RUN, tr_name="evil")
    _upload_weights(at, _state_bytes({"features.0.0.weight": _Payload(str(marker))}), "evil.pt")
    assert_no_exception(at)
    (error,) = at.error
    assert "not a weights file torch can read safely" in error.value
    _start(at)
    assert [e.value for e in at.error] == [error.value] and "train_job" not in at.session_state
    assert not marker.exists()


def test_pretrained_weights_not_on_this_server_are_not_downloaded(uploads, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty torch cache
    at = run_app("train", **{**TORCHVISION_RUN, "tr_weights_source": "pretrained"}, tr_name="pre")
    assert_no_exception(at)
    (error,) = at.error
    assert "are not on this machine" in error.value and "nothing is downloaded" in error.value
    _start(at)
    assert len(at.error) == 1 and "train_job" not in at.session_state
    assert not (tmp_path / "torch_home").exists()


def test_backbone_first_needs_an_epoch_left_for_the_exits(uploads):
    at = run_app("train", **TORCHVISION_RUN, tr_name="first", tr_mode="backbone_first")
    _upload_weights(at, _mobilenet_weights()[1])
    assert_no_exception(at)
    assert [e.value for e in at.error] == [
        "1 backbone-first epochs leave none of the 1 for the exits: train for more epochs or fewer backbone-first ones."
    ]
    _start(at)
    assert len(at.error) == 1 and "train_job" not in at.session_state


def test_weights_files_of_the_same_name_from_two_sessions_do_not_collide(uploads):
    first, second = run_app("train", **TORCHVISION_RUN), run_app("train", **TORCHVISION_RUN)
    assert first.file_uploader(key="tr_weights_upload").proto.max_upload_size_mb == 600
    _upload_weights(first, b"first session's bytes")
    _upload_weights(second, b"second session's bytes")
    a, b = first.session_state["tr_weights_file"].path, second.session_state["tr_weights_file"].path
    assert a.name == b.name == "my.pt" and a.parent != b.parent
    assert a.read_bytes() == b"first session's bytes" and b.read_bytes() == b"second session's bytes"
    _upload_weights(first, b"first session's new bytes")  # a session's new file replaces its own earlier one only
    c = first.session_state["tr_weights_file"].path
    assert not a.exists() and c.read_bytes() == b"first session's new bytes" and b.exists()
    first.file_uploader(key="tr_weights_upload").set_value(None).run()
    assert not c.exists() and b.exists()


def _folder_zip(per_class: int = 5) -> bytes:
    """A zip of two class folders of slice images (PNG)."""
    from PIL import Image

    images = load_dataset("fashion-mnist-slice").test
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for label, folder in ((1, "trouser"), (8, "bag")):
            picked = [i for i in range(len(images)) if int(images[i][1]) == label][:per_class]
            for n, i in enumerate(picked):
                png = io.BytesIO()
                Image.fromarray(images.images[i, 0].numpy()).save(png, "PNG")
                z.writestr(f"{folder}/{n}.png", png.getvalue())
    return buf.getvalue()


def test_weights_for_other_classes_get_a_new_classifier_on_an_image_folder(uploads):
    data = _mobilenet_weights()[1]  # 10 classes; the folder has 2
    at = run_app("train", **{**TORCHVISION_RUN, "tr_dataset": "folder"}, tr_mode="joint")
    _upload_weights(at, data)
    assert any("checked against the model once the image folder is uploaded" in c.value for c in at.caption)
    at.file_uploader(key="tr_upload").set_value(("clothes.zip", _folder_zip(), "application/zip")).run()
    assert_no_exception(at, errors_too=True)
    assert any("the final classifier is trained new" in i.value for i in at.info)
    assert at.checkbox(key="tr_imagenet_norm").value  # ImageNet normalisation offered with a weights file
