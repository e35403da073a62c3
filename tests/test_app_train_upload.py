"""The Train page with an uploaded image folder: a zip of class folders is checked and shown with its class counts,
trains in the background like the other datasets, and a bad zip gets one clear message."""

import io
import time
import zipfile

import numpy as np
import pytest
from app_helpers import assert_no_exception, run_app
from PIL import Image

from aep_core.checkpoint import read_checkpoint
from aep_core.data import load_slice

CLASSES = {"trouser": 1, "sneaker": 7, "bag": 8}  # folder name -> Fashion-MNIST label in the shipped slice


def _slice_zip(per_class: int = 6, classes: dict[str, int] = CLASSES, junk: bool = True) -> bytes:
    """A zip of `top/<class>/<i>.png`: 28x28 PNGs of the shipped slice, plus a text file that is skipped."""
    s = load_slice()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, label in classes.items():
            for i, k in enumerate(np.flatnonzero(s["labels"] == label)[:per_class]):
                png = io.BytesIO()
                Image.fromarray(s["images"][k]).save(png, "PNG")
                z.writestr(f"clothes/{name}/{i}.png", png.getvalue())
        if junk:
            z.writestr("clothes/trouser/notes.txt", b"not an image")
    return buf.getvalue()


@pytest.fixture
def env(monkeypatch, tmp_path):
    """(trained models folder, upload folder), both empty; no other model in the picker."""
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    monkeypatch.setenv("AEP_APP_DATA_DIR", str(tmp_path / "uploads"))
    return tmp_path / "app_runs", tmp_path / "uploads"


def _upload(at, data: bytes, name: str = "clothes.zip"):
    return at.file_uploader(key="tr_upload").set_value((name, data, "application/zip")).run()


def _start(at):
    return next(b for b in at.button if b.label == "Start training").click().run()


def _wait(job, limit_s: float = 180) -> None:
    t0 = time.time()
    while not job.done and time.time() - t0 < limit_s:
        time.sleep(0.3)
    assert job.done and job.error is None, job.error


def test_an_uploaded_image_folder_is_shown_and_trained(env):
    runs, uploads = env
    at = run_app("train", tr_dataset="folder", tr_epochs=1, tr_name="clothes")
    assert_no_exception(at, errors_too=True)
    _upload(at, _slice_zip())
    assert_no_exception(at, errors_too=True)
    table = at.dataframe[0].value
    assert dict(zip(table["class"], table["images"], strict=True)) == {"bag": 6, "sneaker": 6, "trouser": 6}
    assert any("18 images in 3 classes" in s.value for s in at.success)
    assert any("Skipped 1 file of the archive" in w.value and "not image files" in w.value for w in at.warning)
    (folder,) = uploads.iterdir()
    at.selectbox(key="tr_image_size").set_value(28)
    at.selectbox(key="tr_channels").set_value(1)
    _start(at)
    assert_no_exception(at, errors_too=True)
    job = at.session_state["train_job"]
    _wait(job)
    assert job.estimate is not None and "timed on this machine just now" in job.estimate.seconds_basis
    at.run()
    assert_no_exception(at, errors_too=True)
    assert any("Saved clothes" in s.value for s in at.success)
    meta = read_checkpoint(runs / "clothes.pt").meta
    assert meta.dataset.class_names == ["bag", "sneaker", "trouser"]
    assert (meta.dataset.in_channels, meta.dataset.image_size) == (1, 28)
    assert meta.dataset.name == f"folder:{folder}"
    assert [p.name for p in uploads.iterdir()] == [folder.name]


def test_a_bad_zip_gets_one_clear_message_and_nothing_starts(env):
    _, uploads = env
    at = run_app("train", tr_dataset="folder", tr_epochs=1, tr_name="bad")
    _upload(at, _slice_zip(per_class=3), "few.zip")
    assert_no_exception(at)
    assert [e.value for e in at.error] == [
        "Each class needs at least 5 readable images; too few in 'bag' (3), 'sneaker' (3), 'trouser' (3)."
    ]
    assert not at.dataframe and not list(uploads.iterdir())
    _start(at)
    assert_no_exception(at)
    assert "train_job" not in at.session_state
    assert any("Upload a zip of an image folder first" in e.value for e in at.error)
    _upload(at, b"PK\x03\x04 not really a zip", "broken.zip")
    assert_no_exception(at)
    assert len(at.error) == 1 and "not a zip archive" in at.error[0].value


def test_a_new_upload_replaces_the_sessions_earlier_folder(env):
    _, uploads = env
    at = run_app("train", tr_dataset="folder")
    _upload(at, _slice_zip())
    (first,) = uploads.iterdir()
    _upload(at, _slice_zip(per_class=5, junk=False), "other.zip")
    assert_no_exception(at, errors_too=True)
    (second,) = uploads.iterdir()
    assert second != first and any("15 images in 3 classes" in s.value for s in at.success)
    assert not at.warning or all("Skipped" not in w.value for w in at.warning)
    at.file_uploader(key="tr_upload").set_value(None).run()  # the upload taken back: its folder goes too
    assert_no_exception(at, errors_too=True)
    assert not list(uploads.iterdir()) and not at.dataframe
