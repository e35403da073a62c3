"""Shipped numbers cannot drift from shipped weights: every checkpoint in assets/models is re-run on the
shipped Fashion-MNIST test slice and must reproduce the rows of its own test evaluation file."""
from pathlib import Path

import numpy as np
import pytest
import torch

from aep_core.checkpoint import load_checkpoint
from aep_core.data import TensorImageDataset, load_slice
from aep_core.evaluation import collect_outputs, evaluation_path, load_evaluation

SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[1] / "assets" / "models").glob("*.pt")
                 if not p.name.endswith(".resume.pt"))


def test_the_default_model_is_shipped():
    assert any(p.name == "aep_hybrid.pt" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reproduces_its_evaluation_file(path):
    torch.set_num_threads(1)
    model, meta = load_checkpoint(path)
    assert meta["dataset"]["name"] == "fashion-mnist"
    rec = load_evaluation(evaluation_path(path, "test"))
    assert rec.num_samples == 10000 and rec.num_exits == model.num_exits
    sl = load_slice()
    ds = TensorImageDataset(torch.from_numpy(sl["images"][:, None]), torch.from_numpy(sl["labels"]),
                            meta["dataset"]["mean"], meta["dataset"]["std"])
    again = collect_outputs(model, ds, list(rec.cum_macs), rec.full_macs)
    rows = sl["indices"]
    np.testing.assert_array_equal(rec.labels[rows], sl["labels"])
    np.testing.assert_allclose(again.logits, rec.logits[:, rows], atol=2e-4, rtol=1e-4)
    if rec.confidences is not None:
        np.testing.assert_allclose(again.confidences, rec.confidences[:, rows], atol=1e-5)
    # The headline figures stored in the metadata are those of the evaluation file.
    stored = meta["metrics"]["test"]["exit_acc"]
    np.testing.assert_allclose(stored, rec.exit_accuracy(), atol=1e-6)
