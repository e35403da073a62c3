"""Every page with an early-exit model on a torchvision classifier trained on an image folder (RGB, 32x32): the
pages that replay its outputs, the ones that run its network, and the real speed-up measured on its own test
images (it does not read the shipped 28x28 grayscale slice)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from app_helpers import PAGES, assert_no_exception, run_app
from PIL import Image


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    from aep_core.training import MethodSettings, TrainConfig
    from aep_core.training.job import TrainJob, run_train_job

    root = tmp_path_factory.mktemp("tv_app")
    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        (root / "images" / f"class{c}").mkdir(parents=True)
        for i in range(14):
            a = np.clip(rng.normal(colour, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / "images" / f"class{c}" / f"{i}.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), root / "own.pt")
    models = root / "models"
    job = TrainJob(
        out=str(models / "tv.pt"),
        dataset="folder",
        data_dir=str(root / "images"),
        image_size=32,
        in_channels=3,
        model="torchvision",
        model_config={"arch": "mobilenet_v3_small"},
        placement=["features.3", "features.8"],
        weights=str(root / "own.pt"),
        method=MethodSettings(method="classifier-wise", freeze_epochs=0),
        train=TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=0.003, progress=False),
    )
    run_train_job(job, log=lambda s: None)
    return models


@pytest.fixture
def env(folder_model, monkeypatch, tmp_path):
    monkeypatch.setenv("AEP_MODELS_DIR", str(folder_model))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    return folder_model


@pytest.mark.parametrize("page", [p for p in PAGES if p not in ("learn", "train")])
def test_every_page_works_with_a_torchvision_model(env, page):
    at = run_app(page, model="tv")
    assert_no_exception(at, errors_too=True)
    assert at.session_state["model"] == "tv"


def test_real_speed_up_is_measured_on_the_models_own_test_images(env):
    at = run_app("thresholds", model="tv")
    at.button(key="measure_speed").click().run()
    assert_no_exception(at, errors_too=True)
    table = at.dataframe[-1].value
    assert list(table["batch size"]) == [1, 256]
    # the folder's test split: 10% of 42 images
    assert list(table["images"]) == [4, 4]
    assert (table["early exit (images/s)"] > 0).all()
    captions = "\n".join(c.value for c in at.caption)
    assert "the first 4 images of its own test split" in captions


def test_deploy_page_exports_the_segments_as_a_zip(env):
    import io
    import json
    import zipfile

    import onnxruntime

    at = run_app("deploy", model="tv")
    at.button(key="dep_export").click().run()
    assert_no_exception(at, errors_too=True)
    assert any("reproduces PyTorch within tolerance" in s.value for s in at.success)
    button = at.get("download_button")[0]
    data = at.session_state["dep_export_zip"][1]
    assert button.proto.label == "Download the segments (.zip)"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        segments = [n for n in names if n.endswith(".onnx")]
        assert len(segments) == len(manifest["segments"]) >= 1
        for name in segments:  # each file is a model ONNX Runtime opens
            onnxruntime.InferenceSession(archive.read(name), providers=["CPUExecutionProvider"])
