"""Shipped numbers cannot drift from shipped weights: every checkpoint in assets/models is re-run on the
shipped Fashion-MNIST test slice and must reproduce the rows of its own test evaluation file."""

from pathlib import Path

import numpy as np
import pytest
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.checkpoint.discovery import DEFAULT_MODEL, discover_models
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.data import load_slice, slice_dataset
from aep_core.evaluation import collect_outputs, load_evaluation
from aep_core.paths import shipped_models_dir

SHIPPED_LABELS = discover_models([shipped_models_dir()])
SHIPPED = [Path(p) for p in SHIPPED_LABELS.values()]


def test_the_default_model_is_shipped():
    assert DEFAULT_MODEL in SHIPPED_LABELS


def test_slice_dataset_is_normalised_with_the_given_statistics():
    pixels = torch.from_numpy(load_slice()["images"][:3, None]).float() / 255  # (3, 1, 28, 28)
    own, other = slice_dataset([0.5], [0.25]), slice_dataset([0.2], [0.4])
    torch.testing.assert_close(own[[0, 1, 2]][0], (pixels - 0.5) / 0.25)
    torch.testing.assert_close(other[[0, 1, 2]][0], (pixels - 0.2) / 0.4)  # each dataset keeps its own statistics


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reproduces_its_evaluation_file(path):
    torch.set_num_threads(1)
    model, meta = load_checkpoint(path)
    assert meta.dataset.name == "fashion-mnist"
    rec = load_evaluation(evaluation_path(path, "test"))
    assert rec.num_samples == 10000 and rec.num_exits == model.num_exits
    shipped_slice = load_slice()
    dataset = slice_dataset(meta.dataset.mean, meta.dataset.std)  # normalised as the model was trained
    again = collect_outputs(model, dataset, list(rec.cum_macs), rec.full_macs)
    rows = shipped_slice["indices"]
    np.testing.assert_array_equal(rec.labels[rows], shipped_slice["labels"])
    np.testing.assert_allclose(again.logits, rec.logits[:, rows], atol=2e-4, rtol=1e-4)
    if rec.confidences is not None:
        np.testing.assert_allclose(again.confidences, rec.confidences[:, rows], atol=1e-5)
    # The headline figures stored in the metadata are those of the evaluation file.
    stored = meta.metrics["test"].exit_acc
    np.testing.assert_allclose(stored, rec.exit_accuracy(), atol=1e-6)
