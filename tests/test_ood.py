"""The "I don't know" signal: its parts, AUROC against hand-computed values, the shifted-input
generators, the score separating noise from test images on the shipped model, the feature-space flag
(blank, near-blank and strip uploads flagged, test images mostly not, its false-flag rate on held-out
images), and the badge Try an image shows."""

import io
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from aep_core.analysis import ood
from aep_core.checkpoint import load_checkpoint, read_checkpoint, rewrite_meta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.data import load_slice
from aep_core.errors import ConfigError
from aep_core.evaluation import load_evaluation
from aep_core.paths import PROJECT_DIR
from aep_core.preprocess import prepare_image

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


# ---- the feature-space score, the input's own statistics, and the flag the app shows ---------------------


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def _prepared(a: np.ndarray, meta) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """An upload prepared as Try an image prepares it: (model input, what the model sees, (width, height))."""
    d = meta.dataset
    p = prepare_image(_png(a), d.image_size, d.in_channels, d.mean, d.std)
    return p.tensor, p.preview, p.original_size


def _exit_logits(model, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.stack(model(x).logits)[:, 0].numpy()  # (exits, classes)


def test_class_gaussians_distance_is_the_mahalanobis_distance_to_the_nearest_mean():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 300, 3)) + np.repeat(np.eye(3), 100, axis=0)[None] * 4  # (exits, n, classes)
    labels = np.repeat(np.arange(3), 100)
    g = ood.fit_class_gaussians(logits, labels, shrinkage=0.0)
    f = logits.transpose(1, 0, 2).reshape(300, 6)
    means = np.stack([f[labels == c].mean(0) for c in range(3)])
    r = f - means[labels]
    precision = np.linalg.inv(r.T @ r / len(f))
    new = rng.normal(size=(2, 5, 3)) * 3
    fn = new.transpose(1, 0, 2).reshape(5, 6)
    brute = [min(np.sqrt((x - m) @ precision @ (x - m)) for m in means) for x in fn]
    assert g.distance(new) == pytest.approx(brute, rel=1e-6)
    with pytest.raises(ConfigError, match="fitted on 6 logits"):
        g.distance(new[:1])


def test_input_reasons_flag_blank_images_and_thin_strips_only():
    assert ood.input_reasons(np.full((28, 28), 128, np.uint8))
    near = np.clip(100 + 3 * np.random.default_rng(0).standard_normal((28, 28)), 0, 255).astype(np.uint8)
    assert "nearly blank" in " ".join(ood.input_reasons(near))
    assert "4000x10" in " ".join(ood.input_reasons(load_slice()["images"][0], (4000, 10)))
    # no shipped Fashion-MNIST image trips it, and a photo of ordinary shape neither
    assert not any(ood.input_reasons(im, (640, 480)) for im in load_slice()["images"])


def test_synthetic_generators():
    x = torch.zeros((6, 1, 28, 28), dtype=torch.uint8)
    for kind in ood.SYNTHETIC:
        a, b = ood.synthetic_images(x, kind, seed=3), ood.synthetic_images(x, kind, seed=3)
        assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b), kind
    u = ood.synthetic_images(x, "uniform")
    assert [int(im.min()) for im in u] == [int(im.max()) for im in u] and int(u[0].max()) == 0 and u[-1].min() == 255
    with pytest.raises(ConfigError, match="Unknown synthetic"):
        ood.synthetic_images(x, "blur")
    strips, sizes = ood.thin_strips(4)
    assert strips.shape == (4, 28, 28) and all(max(s) / min(s) >= 25 for s in sizes)


@pytest.fixture(scope="module")
def shipped():
    """The shipped model, its metadata, its flag (fitted on its validation outputs) and the test slice's logits."""
    torch.set_num_threads(1)
    model, meta = load_checkpoint(SHIPPED)
    flag = ood.flag_threshold(load_evaluation(evaluation_path(SHIPPED, "val")), None)
    images = torch.from_numpy(load_slice()["images"])
    return model, meta, flag, images, ood.exit_logits(model, images, meta.dataset.mean, meta.dataset.std)


@pytest.mark.parametrize(
    "name,array",
    [
        ("uniform grey", np.full((300, 300), 128)),
        ("uniform black", np.zeros((64, 64))),
        ("uniform light", np.full((50, 80), 230)),
        ("uniform strip 4000x10", np.full((10, 4000), 128)),
        ("uniform strip 10x4000", np.full((4000, 10), 40)),
        ("near-uniform", 128 + 3 * np.random.default_rng(1).standard_normal((200, 200))),
        ("near-uniform dark", np.clip(20 + 5 * np.random.default_rng(2).standard_normal((120, 90)), 0, 255)),
    ],
)
def test_blank_and_near_blank_uploads_are_flagged(shipped, name, array):
    model, meta, flag, _, _ = shipped
    x, preview, size = _prepared(np.clip(array, 0, 255), meta)
    logits = _exit_logits(model, x)
    verdict = flag.judge(logits, preview, size)
    assert verdict.flagged and verdict.reasons, name
    # the exits' logits alone already give them away, the old score did not
    assert verdict.score > flag.value, f"{name}: distance {verdict.score:.1f} <= threshold {flag.value:.1f}"


def test_in_distribution_images_are_mostly_not_flagged(shipped):
    _, _, flag, images, logits = shipped
    flagged = float((flag.scores(logits, images.numpy()) > flag.value).mean())
    assert flagged < 0.1, f"{100 * flagged:.1f}% of the test slice flagged"


def test_the_new_score_beats_the_old_on_blank_and_near_blank_images(shipped):
    model, meta, flag, images, in_logits = shipped
    d = meta.dataset
    blank = torch.cat([ood.synthetic_images(images[:100], k) for k in ("uniform", "near-uniform")])
    logits = ood.exit_logits(model, blank, d.mean, d.std)
    old = ood.auroc(ood.ood_score(in_logits), ood.ood_score(logits))
    new = ood.auroc(flag.scores(in_logits, images.numpy()), flag.scores(logits, blank.numpy()))
    logits_only = ood.auroc(flag.scores(in_logits), flag.scores(logits))
    bar = max(0.99, old)  # the old score's AUROC on the same images, from the shipped model and slice
    assert new > bar and logits_only > bar, f"new {new:.3f}, logits only {logits_only:.3f}, old {old:.3f}"


def test_false_flag_rate_holds_on_held_out_in_distribution_images():
    val = load_evaluation(evaluation_path(SHIPPED, "val"))
    test = load_evaluation(evaluation_path(SHIPPED, "test"))
    rates = []
    for seed in range(4):  # re-split the validation outputs: fit on 60%, measure on the other 40%
        order = np.random.default_rng(seed).permutation(val.num_samples)
        part, rest = order[: 3 * len(order) // 5], order[3 * len(order) // 5 :]
        flag = ood.flag_threshold(replace(val, logits=val.logits[:, part], labels=val.labels[part]), None)
        rates.append(float((flag.scores(val.logits[:, rest]) > flag.value).mean()))
    flag = ood.flag_threshold(val, None)
    rates.append(float((flag.scores(test.logits) > flag.value).mean()))  # 10,000 test images
    assert all(0.02 < r < 0.09 for r in rates), rates
    assert "2,500 validation images" in flag.description and "95%" in flag.description


def test_flag_threshold_falls_back_to_the_old_score_on_tiny_records():
    val = load_evaluation(evaluation_path(SHIPPED, "val"))
    small = replace(val, logits=val.logits[:, :10], labels=val.labels[:10])
    flag = ood.flag_threshold(small, None)
    assert flag.gaussians is None and flag.value == pytest.approx(ood.ood_threshold(ood.ood_score(small.logits)))
    assert ood.flag_threshold(None, None) is None


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(SHIPPED, d / "shipped.pt")
    for split in ("val", "test"):
        shutil.copy(evaluation_path(SHIPPED, split), evaluation_path(d / "shipped.pt", split))
    monkeypatch.setenv("AEP_MODELS_DIR", str(d))
    monkeypatch.setenv("AEP_MODELS_ONLY", "1")
    monkeypatch.setenv("AEP_APP_RUNS_DIR", str(tmp_path / "app_runs"))
    return d


@pytest.mark.parametrize(
    "name,array", [("grey.png", np.full((200, 200), 128)), ("strip.png", np.full((10, 4000), 128))]
)
def test_try_image_says_a_blank_upload_does_not_look_like_the_training_images(app_env, name, array):
    from app_helpers import assert_no_exception, run_app

    at = run_app("try_image", model="shipped", img_source="Upload")
    assert_no_exception(at)
    at.file_uploader(key="img_upload").set_value((name, _png(array), "image/png")).run()
    assert_no_exception(at, errors_too=True)
    assert any("does not look like anything the model was trained on" in w.value for w in at.warning)
    assert not any("looks like the images the model was trained on" in s.value for s in at.success)
    warning = " ".join(w.value for w in at.warning)
    assert "nearly blank" in warning and ("4000x10" in warning) == (name == "strip.png")


def test_try_image_says_a_familiar_sample_looks_like_the_training_images(app_env, shipped):
    _, _, flag, images, logits = shipped
    familiar = int(np.argmax(flag.scores(logits, images.numpy()) < 0.5 * flag.value))
    from app_helpers import assert_no_exception, run_app

    at = run_app("try_image", model="shipped", img_source="Shipped sample", img_sample=familiar)
    assert_no_exception(at, errors_too=True)
    assert any("looks like the images the model was trained on" in s.value for s in at.success)
    assert not at.warning
