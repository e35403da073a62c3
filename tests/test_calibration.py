"""Calibration: ECE and friends against hand-computed values, temperature scaling recovering a known
temperature, replay on scaled records, temperatures stored in a checkpoint, and the calibrate command."""

import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from aep_core.analysis import calibration as cal
from aep_core.checkpoint import CalibrationMeta, read_checkpoint, rewrite_meta
from aep_core.checkpoint.sidecars import evaluation_path
from aep_core.cli.main import main
from aep_core.errors import CheckpointError, ConfigError
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.rules import ModelExits, get_rule, list_rules, replay_rule
from aep_core.paths import PROJECT_DIR

ROOT = PROJECT_DIR
SHIPPED = ROOT / "assets" / "models" / "aep_hybrid.pt"


def _logits_for(probs: np.ndarray) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64))


def test_ece_mce_nll_brier_match_a_hand_computed_example():
    # 4 samples, 2 classes, 2 bins: (0, 0.5] and (0.5, 1].
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 0])
    m = cal.calibration_metrics(_logits_for(probs), labels, n_bins=2)
    # every top probability is > 0.5: one bin, confidence (0.9+0.8+0.6+0.7)/4 = 0.75, accuracy 2/4
    assert m.bins.count.tolist() == [0, 4]
    assert m.bins.confidence[1] == pytest.approx(0.75)
    assert m.bins.accuracy[1] == pytest.approx(0.5)
    assert math.isnan(m.bins.accuracy[0])
    assert m.ece == pytest.approx(0.25)
    assert m.mce == pytest.approx(0.25)
    assert m.nll == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.3)) / 4)
    brier = ((0.1**2 + 0.1**2) + (0.8**2 + 0.8**2) + (0.4**2 + 0.4**2) + (0.7**2 + 0.7**2)) / 4
    assert m.brier == pytest.approx(brier)
    assert m.accuracy == pytest.approx(0.5)

    # 10 bins: confidences 0.9, 0.8, 0.6, 0.7 land in bins 8, 7, 5, 6 (upper edges included)
    m10 = cal.calibration_metrics(_logits_for(probs), labels, n_bins=10)
    assert m10.bins.count.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    # |acc - conf| per sample: 0.1 (right), 0.8 (wrong), 0.4 (right), 0.7 (wrong)
    assert m10.ece == pytest.approx((0.1 + 0.8 + 0.4 + 0.7) / 4)
    assert m10.mce == pytest.approx(0.8)
    rows = m10.bins.rows()
    assert rows[5]["lo"] == pytest.approx(0.5) and rows[5]["hi"] == pytest.approx(0.6) and rows[5]["count"] == 1
    assert rows[0]["accuracy"] is None


def test_bins_must_be_at_least_one():
    with pytest.raises(ConfigError, match="bins"):
        cal.calibration_metrics(np.zeros((2, 3)), np.array([0, 1]), n_bins=0)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    n, c = 20000, 10
    z = rng.normal(0, 2.0, size=(n, c))  # calibrated logits: labels are drawn from softmax(z)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    t = cal.fit_temperature(z * true_t, labels)  # the model's logits are z * T: dividing by T recovers z
    assert t == pytest.approx(true_t, rel=0.05)
    before = cal.calibration_metrics(z * true_t, labels)
    after = cal.calibration_metrics(z * true_t / t, labels)
    assert after.nll < before.nll and after.ece < before.ece


def _record(seed: int = 0, e: int = 3, n: int = 400, c: int = 5) -> ExitRecord:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (e, n, c)).astype(np.float32)
    logits[np.arange(e)[:, None], np.arange(n)[None], labels[None]] += np.array([0.5, 2.0, 4.0])[:e, None]
    return ExitRecord(
        logits, labels, np.array([10, 20, 30][:e]), 30, None, {"split": "val", "ensemble_weights": [0.2, 0.3, 0.5][:e]}
    )


def test_fit_temperatures_one_per_exit_and_scaling_keeps_predictions():
    rec = _record()
    t = cal.fit_temperatures(rec)
    assert t.shape == (3,) and (t > 0).all()
    scaled = cal.scale_record(rec, t)
    assert (scaled.logits.argmax(-1) == rec.logits.argmax(-1)).all()
    assert scaled.info["temperatures"] == pytest.approx(t.tolist())
    assert rec.info.get("temperatures") is None  # the input record is untouched
    for k in range(3):
        assert (
            cal.calibration_metrics(scaled.logits[k], rec.labels).nll
            <= cal.calibration_metrics(rec.logits[k], rec.labels).nll + 1e-9
        )
    with pytest.raises(ConfigError, match="one per exit"):
        cal.scale_record(rec, [1.0, 2.0])
    with pytest.raises(ConfigError, match="positive"):
        cal.scale_record(rec, [1.0, 0.0, 2.0])


@pytest.mark.parametrize("rule", list_rules(model=ModelExits.of_record(_record(1))))
def test_calibrated_replay_equals_replay_on_prescaled_logits(rule):
    rec = _record(1)
    t = np.array([2.0, 0.7, 1.3])
    pre = ExitRecord(
        rec.logits / t[:, None, None].astype(np.float32), rec.labels, rec.cum_macs, rec.full_macs, None, dict(rec.info)
    )
    a = replay_rule(cal.scale_record(rec, t), rule)
    b = replay_rule(pre, rule)
    assert (a.exit_index == b.exit_index).all() and (a.prediction == b.prediction).all()
    if get_rule(rule).has_thresholds:  # temperatures move the rules that threshold a score of the probabilities
        assert (a.exit_index != replay_rule(rec, rule).exit_index).any()
    else:  # the others read the predicted classes only, which temperatures keep
        assert (a.exit_index == replay_rule(rec, rule).exit_index).all()


def test_calibrate_checkpoint_stores_temperatures_and_keeps_the_rest(tmp_path):
    src = tmp_path / "m.pt"
    shutil.copy(SHIPPED, src)
    shutil.copy(evaluation_path(SHIPPED, "val"), evaluation_path(src, "val"))
    rewrite_meta(src, replace(read_checkpoint(src).meta, calibration=None))
    before = read_checkpoint(src)
    temps = cal.calibrate_checkpoint(src)
    after = read_checkpoint(src)
    val = load_evaluation(evaluation_path(src, "val"))
    assert temps == pytest.approx(cal.fit_temperatures(val).tolist())
    assert before.meta.calibration is None and cal.stored_temperatures(after.meta) == pytest.approx(temps)
    assert replace(after.meta, calibration=None) == before.meta  # only the calibration entry changed
    assert after.state_dict.keys() == before.state_dict.keys() and after.extra == before.extra
    assert all(torch.equal(after.state_dict[k], before.state_dict[k]) for k in before.state_dict)
    assert after.meta.calibration.samples == val.num_samples


def test_stored_temperatures_absent_or_malformed():
    meta = read_checkpoint(SHIPPED).meta
    exits = len(meta.cost.exits)
    assert cal.stored_temperatures(replace(meta, calibration=None)) is None
    temps = [1.0 + k for k in range(exits)]
    assert cal.stored_temperatures(replace(meta, calibration=CalibrationMeta(temps))) == temps
    for bad in (temps[:-1], ["x"] * exits, [0.0] * exits):
        with pytest.raises(CheckpointError, match="malformed"):
            cal.stored_temperatures(replace(meta, calibration=CalibrationMeta(bad)))


def test_calibrate_command_prints_before_and_after_and_stores(tmp_path, capsys):
    src = tmp_path / "m.pt"
    shutil.copy(SHIPPED, src)
    for split in ("val", "test"):
        shutil.copy(evaluation_path(SHIPPED, split), evaluation_path(src, split))
    assert main(["calibrate", str(src), "--bins", "10"]) == 0
    out = capsys.readouterr().out
    test = load_evaluation(evaluation_path(src, "test"))
    temps = cal.stored_temperatures(read_checkpoint(src).meta)
    before = cal.exit_calibration(test, 10)
    after = cal.exit_calibration(cal.scale_record(test, temps), 10)
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == test.num_exits
    for k, ln in enumerate(lines):
        assert f"{100 * before[k].ece:5.2f} -> {100 * after[k].ece:5.2f}" in ln
        assert f"{temps[k]:.3f}" in ln


def test_calibrate_command_bad_inputs(tmp_path, capsys):
    src = tmp_path / "m.pt"
    shutil.copy(SHIPPED, src)
    assert main(["calibrate", str(src)]) == 2  # no validation evaluation file
    assert "no validation evaluation file" in capsys.readouterr().err
    shutil.copy(evaluation_path(SHIPPED, "val"), evaluation_path(src, "val"))
    assert main(["calibrate", str(src), "--bins", "0"]) == 2
    assert "--bins" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["calibrate", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_calibrate_command_refuses_cost_entries_that_do_not_match_the_exits(tmp_path, capsys):
    payload = torch.load(SHIPPED, weights_only=True)
    payload["meta"]["cost"] = {**payload["meta"]["cost"], "exits": []}
    torch.save(payload, tmp_path / "none.pt")
    shutil.copy(evaluation_path(SHIPPED, "val"), evaluation_path(tmp_path / "none.pt", "val"))
    assert main(["calibrate", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "gives the cost of 0 exits" in err and len(err.strip().splitlines()) == 1
