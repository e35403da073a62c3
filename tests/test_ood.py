"""The "I don't know" signal: its parts, AUROC against hand-computed values, the shifted-input
generators, and the score separating noise from test images on the shipped model."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from aep_core.analysis import ood
from aep_core.checkpoint import load_checkpoint, read_checkpoint, rewrite_meta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.data import load_slice
from aep_core.errors import ConfigError
from aep_core.evaluation import load_evaluation
from aep_core.paths import PROJECT_DIR

ROOT = PROJECT_DIR
SHIPPED = ROOT / "assets" / "models" / "aep_hybrid.pt"


def test_auroc_hand_computed_with_ties():
    assert ood.auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert ood.auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert ood.auroc([0.5, 0.5], [0.5]) == 0.5
    # pairs (in, out): (0.1, 0.2) > ; (0.1, 0.3) > ; (0.3, 0.2) < ; (0.3, 0.3) tie -> (1 + 1 + 0 + 0.5) / 4
    assert ood.auroc([0.1, 0.3], [0.2, 0.3]) == pytest.approx(0.625)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(1, 7, 40).astype(float)
    brute = np.mean([(y > x) + 0.5 * (y == x) for x in a for y in b])
    assert ood.auroc(a, b) == pytest.approx(brute)
    with pytest.raises(ConfigError):
        ood.auroc([], [1.0])


def test_score_parts():
    # 3 exits, 2 samples, 3 classes: sample 0 keeps class 0 throughout; sample 1 goes 0 -> 1 -> 0
    logits = np.array([[[5, 0, 0], [5, 0, 0]], [[5, 0, 0], [0, 5, 0]], [[9, 0, 0], [0, 0, 0]]], dtype=float)
    assert ood.disagreement(logits).tolist() == [0.0, 1.0]
    conf = ood.final_confidence(logits)
    assert conf[0] == pytest.approx(np.exp(9) / (np.exp(9) + 2))
    assert conf[1] == pytest.approx(1 / 3)
    s = ood.ood_score(logits, 0.5)
    assert s.tolist() == pytest.approx([0.5 * (1 - conf[0]), 0.5 * 1 + 0.5 * (2 / 3)])
    assert ood.ood_score(logits, 1.0).tolist() == [0.0, 1.0]
    assert ood.disagreement(logits[:1]).tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError):
        ood.ood_score(logits, 1.5)
    assert ood.ood_threshold(np.arange(101.0), 0.95) == pytest.approx(95.0)


def test_shift_generators():
    x = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 1, 3, 4)
    r = ood.shift_images(x, "rotated")
    assert r.shape == (2, 1, 4, 3)
    assert r[0, 0, 0, 0] == x[0, 0, 0, 3]  # counter-clockwise: the top-right pixel goes top-left
    assert torch.equal(ood.shift_images(x, "inverted"), 255 - x)
    n1, n2 = ood.shift_images(x, "noise", seed=1), ood.shift_images(x, "noise", seed=1)
    assert torch.equal(n1, n2) and n1.shape == x.shape and n1.dtype == torch.uint8
    assert not torch.equal(n1, ood.shift_images(x, "noise", seed=2))
    with pytest.raises(ConfigError, match="Unknown shift"):
        ood.shift_images(x, "blur")
    with pytest.raises(ConfigError, match="uint8"):
        ood.shift_images(x.float(), "noise")


@pytest.fixture(scope="module")
def shipped_logits():
    torch.set_num_threads(1)
    model, meta = load_checkpoint(SHIPPED)
    d = meta.dataset
    images = torch.from_numpy(load_slice()["images"][:400])
    return {
        kind: ood.exit_logits(model, images if kind == "test" else ood.shift_images(images, kind), d.mean, d.std)
        for kind in ("test", "noise")
    }


def test_score_separates_noise_from_test_images_on_the_shipped_model(shipped_logits):
    a = ood.auroc(ood.ood_score(shipped_logits["test"]), ood.ood_score(shipped_logits["noise"]))
    assert a > 0.75, f"AUROC {a:.3f}"
    # the threshold from the validation file flags noise far more often than test images
    thr = ood.ood_threshold(ood.ood_score(load_evaluation(evaluation_path(SHIPPED, "val")).logits))
    flagged_test = (ood.ood_score(shipped_logits["test"]) > thr).mean()
    flagged_noise = (ood.ood_score(shipped_logits["noise"]) > thr).mean()
    assert flagged_noise > flagged_test + 0.2


def test_ood_command_prints_an_auroc_per_shift(tmp_path, capsys):
    src = tmp_path / "m.pt"
    shutil.copy(SHIPPED, src)
    rewrite_meta(src, replace(read_checkpoint(SHIPPED).meta, calibration=None))  # no stored temperatures
    shutil.copy(evaluation_path(SHIPPED, "val"), evaluation_path(src, "val"))
    assert main(["ood", str(src), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ood.SHIFTS}
    assert set(rows) == set(ood.SHIFTS)
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows.values())
    val_n = load_evaluation(evaluation_path(src, "val")).num_samples
    assert f"95th percentile on {val_n} validation images" in out
    assert main(["ood", str(src), "--calibrated"]) == 2  # no stored temperatures yet
    assert "calibrate" in capsys.readouterr().err
    assert main(["ood", str(src), "--quantile", "1.5"]) == 2
