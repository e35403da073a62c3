"""Metadata that disagrees with its weights or with itself is refused at load with one message naming what is
wrong; every shipped checkpoint passes; an evaluation file left from another model is ignored with a note."""

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest

from aep_core.checkpoint.format import _serialise, load_checkpoint, read_checkpoint
from aep_core.checkpoint.meta import CalibrationMeta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.errors import AepError, CheckpointError
from aep_core.evaluation import ExitRecord, load_evaluation, record_disagreement, save_evaluation
from aep_core.paths import PROJECT_DIR
from tests.app_helpers import assert_no_exception, run_app, small_model_dir

SHIPPED = sorted((PROJECT_DIR / "assets" / "models").glob("*.pt"))


def _set(path: str, value):
    def edit(meta):
        *parents, last = path.split(".")
        target = meta
        for p in parents:
            target = getattr(target, p)
        setattr(target, last, value(target) if callable(value) else value)

    return edit


CASES = {
    "fewer class names": (_set("dataset.class_names", lambda d: d.class_names[:9]), "names 9 classes"),
    "repeated class names": (_set("dataset.class_names", ["shirt"] * 10), "repeat a name"),
    "empty class name": (_set("dataset.class_names", lambda d: ["", *d.class_names[1:]]), "non-empty names"),
    "ensemble weights per exit": (_set("training.ensemble_weights", [0.5, 0.5]), "ensemble weights (2)"),
    "negative ensemble weight": (_set("training.ensemble_weights", lambda t: [-1.0] * 5), "non-negative"),
    "temperatures per exit": (_set("calibration", CalibrationMeta([1.0, 2.0])), "temperatures (2)"),
    "temperature not positive": (_set("calibration", CalibrationMeta([0.0] * 5)), "one positive number"),
    "accuracies per exit": (lambda m: setattr(m.metrics["test"], "exit_acc", [0.5]), "'test' accuracies (1)"),
    "normalisation channels": (_set("dataset.mean", [0.1, 0.2, 0.3]), "mean has 3 values for 1 channels"),
    "zero std": (_set("dataset.std", [0.0]), "std is not positive"),
    "channels vs first layer": (_set("dataset.in_channels", 3), "first layer reads 1"),
    "input size vs model": (_set("dataset.image_size", 32), "reads 32x32 images but the model was built for 28x28"),
    "input too small to run": (
        lambda m: (_set("dataset.image_size", 2)(m), _set("model.image_size", 2)(m)),
        "cannot read 2x2 inputs",
    ),
    "costs missing": (_set("cost.full_macs", 0), "costs are missing or not increasing"),
    "costs not increasing": (_set("cost.exits", lambda c: [c.exits[1], c.exits[0], *c.exits[2:]]), "exits"),
}


@pytest.fixture(scope="module")
def stored():
    return read_checkpoint(PROJECT_DIR / "assets" / "models" / "aep_hybrid.pt")


@pytest.mark.parametrize("case", list(CASES))
def test_disagreeing_metadata_is_refused_with_one_message(stored, case):
    edit, words = CASES[case]
    meta = copy.deepcopy(stored.meta)
    edit(meta)
    with pytest.raises(CheckpointError, match="uploaded file: ") as refused:
        load_checkpoint(_serialise(meta, stored.state_dict, {}))
    assert words in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_unedited_checkpoint_loads(stored):
    model, meta = load_checkpoint(_serialise(stored.meta, stored.state_dict, {}))
    assert model.num_exits == len(meta.cost.exits)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_checkpoint_and_its_records_agree(path):
    model, meta = load_checkpoint(path)
    for split in ("val", "test"):
        record = load_evaluation(evaluation_path(path, split))
        assert record_disagreement(record, model.num_classes, meta.cost.cum_macs) is None


def _record(exits: int, classes: int, labels: list[int]) -> ExitRecord:
    n = len(labels)
    return ExitRecord(np.zeros((exits, n, classes), np.float32), np.array(labels), np.arange(1, exits + 1), exits)


def test_evaluation_file_with_labels_out_of_range_is_refused(tmp_path):
    save_evaluation(tmp_path / "bad.npz", _record(2, 3, [0, 1, 3]))
    with pytest.raises(AepError, match="labels are not class indices below 3"):
        load_evaluation(tmp_path / "bad.npz")


def test_a_record_left_from_another_model_is_ignored_with_a_note(tmp_path, monkeypatch):
    models = small_model_dir()
    shutil.copy(models / "tiny.pt", tmp_path / "tiny.pt")
    shutil.copy(evaluation_path(models / "tiny.pt", "val"), evaluation_path(tmp_path / "tiny.pt", "val"))
    save_evaluation(evaluation_path(tmp_path / "tiny.pt", "test"), _record(2, 4, [0, 1, 2, 3]))
    monkeypatch.setenv("AEP_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "runs"))
    for page in ("overview", "thresholds", "try_image"):
        at = run_app(page)
        assert_no_exception(at)
    at = run_app("overview")
    notes = " ".join(str(e.value) for e in [*at.warning, *at.info, *at.caption, *at.markdown])
    assert "was ignored: it holds 2 exits but the model has" in notes, notes
    assert Path(evaluation_path(tmp_path / "tiny.pt", "test")).exists()  # the user's file is left in place
