"""Per-exit outputs files from any framework: the example script's file read back as the records it holds and
solved on like evaluation files, import-outputs writing evaluation files, one clear message per malformed file,
probabilities and logits replaying alike, CSV and Parquet equal to .npz, costs in milliseconds reported as time,
and calibrate and deploy on such files."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aep_core.checkpoint import outputs_import as oi
from aep_core.checkpoint.outputs_import import OutputsFileError, is_outputs_file, read_outputs
from aep_core.cli.main import main
from aep_core.evaluation import ExitRecord, load_evaluation
from aep_core.exits.certify import certify
from aep_core.exits.rules import list_rules, replay_rule
from aep_core.paths import PROJECT_DIR

SCRIPT = PROJECT_DIR / "docs" / "examples" / "dump_exit_outputs.py"
SHIPPED_VAL = PROJECT_DIR / "assets" / "models" / "aep_hybrid.val.npz"


def load_script():
    spec = importlib.util.spec_from_file_location("dump_exit_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The example script's outputs file (MACs, logits) and the arrays it wrote."""
    path = tmp_path_factory.mktemp("example") / "outputs.npz"
    threads = torch.get_num_threads()
    try:
        arrays = load_script().main(["--out", str(path)])
    finally:
        torch.set_num_threads(threads)
    return path, arrays


def synthetic(n_val: int = 1500, n_test: int = 1000, exits: int = 3, classes: int = 5, seed: int = 0, **extra):
    """A valid outputs file's arrays: exits that grow more accurate, MACs costs, confidences."""
    rng = np.random.default_rng(seed)
    n = n_val + n_test
    labels = rng.integers(0, classes, n)
    signal = np.linspace(1.0, 3.0, exits)[:, None, None] * np.eye(classes)[labels][None]
    logits = (rng.normal(size=(exits, n, classes)) + signal).astype(np.float32)
    arrays = {
        "logits": logits,
        "labels": labels,
        "split": np.array(["val"] * n_val + ["test"] * n_test),
        "cum_cost": np.array([100_000 * (k + 1) for k in range(exits)]),
        "cost_unit": np.asarray("macs"),
        "full_cost": np.asarray(100_000 * exits - 5_000),
        "confidences": rng.uniform(size=(exits, n)).astype(np.float32),
        "class_names": np.array([f"c{i}" for i in range(classes)]),
    }
    arrays.update(extra)
    return arrays


def save(path: Path, arrays: dict, allow_pickle: bool = False) -> Path:
    np.savez(path, **arrays) if allow_pickle else np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def records_equal(a: ExitRecord, b: ExitRecord, exact: bool = True) -> None:
    if exact:
        np.testing.assert_array_equal(a.logits, b.logits)
    else:
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.cum_macs, b.cum_macs)
    assert a.full_macs == b.full_macs
    if a.confidences is None:
        assert b.confidences is None
    else:
        np.testing.assert_allclose(a.confidences, b.confidences, rtol=1e-6)
    assert {k: v for k, v in a.info.items() if k != "outputs_file"} == {
        k: v for k, v in b.info.items() if k != "outputs_file"
    }


def solve_json(capsys, *args: str) -> dict:
    assert main(["solve", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# ---- the example script's file ---------------------------------------------------------------------


def test_example_file_reads_back_as_the_records_it_holds(example):
    path, arrays = example
    assert is_outputs_file(path) and not is_outputs_file(SHIPPED_VAL)
    recs = read_outputs(path)
    assert set(recs) == {"val", "test"}
    for split, rec in recs.items():
        rows = arrays["split"] == split
        direct = ExitRecord(
            arrays["logits"][:, rows],
            arrays["labels"][rows],
            arrays["cum_cost"],
            int(arrays["full_cost"]),
            None,
            {
                "split": split,
                "cost_unit": "macs",
                "full_cost": int(arrays["full_cost"]),
                "scores": "logits",
                "class_names": list(arrays["class_names"]),
                "feature_sizes": arrays["feature_sizes"].tolist(),
                "input_size": 784,
            },
        )
        records_equal(rec, direct)
        assert rec.cum_macs.dtype == np.int64 and isinstance(rec.full_macs, int)
    # the heads of the earlier exits are part of the last exit's cost, not of the network without exits
    assert arrays["cum_cost"][-1] > arrays["full_cost"] > arrays["cum_cost"][-2]


def test_solve_on_the_example_file_equals_its_imported_evaluation_files_and_a_direct_certificate(
    example, tmp_path, capsys
):
    path, _ = example
    op = solve_json(capsys, str(path), "--max-drop", "2")
    assert main(["import-outputs", str(path), "--out", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    assert "ex.val.npz (300 samples)" in out and "ex.test.npz (300 samples)" in out and "M MACs" in out
    val, test = tmp_path / "ex.val.npz", tmp_path / "ex.test.npz"
    assert solve_json(capsys, str(val), "--test", str(test), "--max-drop", "2") == op
    recs = read_outputs(path)
    direct = certify(recs["val"], "max_probability", max_drop_points=2, test=recs["test"])
    assert op["settings"]["thresholds"] == pytest.approx(direct.settings["thresholds"])
    assert op["test"]["accuracy"] == pytest.approx(direct.test.accuracy) and op["cost_unit"] == "macs"


def test_import_outputs_writes_evaluation_files_every_reader_takes(example, tmp_path, capsys):
    path, _ = example
    assert main(["import-outputs", str(path), "--out", str(tmp_path / "sub" / "m")]) == 0
    capsys.readouterr()
    for split, rec in read_outputs(path).items():
        records_equal(load_evaluation(tmp_path / "sub" / f"m.{split}.npz"), rec)
    assert main(["policy", str(tmp_path / "sub" / "m.test.npz"), "--thresholds", "0.8"]) == 0
    assert "expected MACs" in capsys.readouterr().out


def test_policy_and_sweep_take_an_outputs_file(example, capsys):
    path, _ = example
    test = read_outputs(path)["test"]
    assert main(["policy", str(path), "--thresholds", "0.7", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = json.loads(json.dumps(replay_rule(test, "max_probability", thresholds=0.7).summary()))
    assert got == {**want, "cost_unit": "macs"}
    assert main(["sweep", str(path), "--points", "5"]) == 0
    assert "MACs %" in capsys.readouterr().out
    assert main(["policy", str(path), "--split", "train"]) == 2
    assert "holds val and test samples only; it has no train split" in capsys.readouterr().err


# ---- malformed files -------------------------------------------------------------------------------


def _nan_logits(a):
    a["logits"] = a["logits"].copy()
    a["logits"][1, 7, 2] = np.nan


def _bad_sums(a):
    a["probs"] = softmax(a.pop("logits")) * 0.97


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda a: a.update(labels=a["labels"][:-1]), "labels has shape (2499,); expected (2500,)"),
        (lambda a: a.update(confidences=a["confidences"][:2]), "confidences has shape (2, 2500); expected (3, 2500)"),
        (lambda a: a.update(cum_cost=np.array([1, 2])), "cum_cost has shape (2,); expected (3,)"),
        (lambda a: a.update(logits=a["logits"][0]), "expected (exits, samples, classes), 3 dimensions"),
        (_nan_logits, "logits holds 1 NaN or infinite values (the first at index (1, 7, 2))"),
        (lambda a: a.update(cum_cost=np.array([1.0, np.inf, 3.0])), "cum_cost holds 1 NaN or infinite values"),
        (lambda a: a.update(labels=np.where(a["labels"] == 0, 5, a["labels"])), "labels are out of range"),
        (lambda a: a.update(labels=a["labels"] - 1), "labels are class indices 0 to 4"),
        (_bad_sums, "sum to 0.97; each exit's probabilities over the classes must sum to 1"),
        (lambda a: a.update(probs=softmax(a["logits"])), "not both"),
        (lambda a: a.update(cum_cost=np.array([300, 200, 400])), "must be positive and strictly increasing"),
        (lambda a: a.update(cum_cost=np.array([100, 100, 400])), "must be positive and strictly increasing"),
        (lambda a: a.update(split=np.array(["test"] * 2500)), 'no sample has split "val"'),
        (lambda a: a.update(split=np.array(["train"] * 2500)), "split holds 'train'"),
        (lambda a: a.update(extra=np.zeros(3)), "unknown keys 'extra'"),
        (lambda a: a.update(cost_unit=np.asarray("flops")), "cost_unit must be one of macs, ms"),
        (lambda a: a.pop("cum_cost"), "cum_cost is missing"),
        (lambda a: a.update(version=np.asarray(2)), "version 2 is not supported"),
        (lambda a: a.update(confidences=a["confidences"] + 1), "confidences must lie in [0, 1]"),
        (lambda a: a.update(class_names=np.array(["a", "b"])), "class_names has shape (2,); expected (5,)"),
        (lambda a: a.update(feature_sizes=np.array([1, 0, 2])), "feature_sizes must be positive"),
    ],
)
def test_a_malformed_file_gets_one_clear_message(tmp_path, capsys, mutate, message):
    arrays = synthetic()
    mutate(arrays)
    path = save(tmp_path / "bad.npz", arrays)
    with pytest.raises(OutputsFileError) as e:
        read_outputs(path)
    assert message in str(e.value) and str(e.value).startswith("bad.npz: ")
    assert main(["solve", str(path), "--max-drop", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_pickled_objects_are_never_loaded(tmp_path, monkeypatch):
    arrays = synthetic(class_names=np.array([{"name": "x"}] * 5, dtype=object))
    path = save(tmp_path / "pickled.npz", arrays, allow_pickle=True)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    with pytest.raises(OutputsFileError, match="class_names hold Python objects"):
        read_outputs(path)


def test_a_file_too_large_is_refused_before_loading(tmp_path, monkeypatch):
    path = save(tmp_path / "big.npz", synthetic())
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    monkeypatch.setattr(oi, "MAX_VALUES", 10_000)
    with pytest.raises(OutputsFileError) as e:
        read_outputs(path)
    assert "holds 3 x 2,500 x 5 = 37,500 per-exit scores; the most this tool loads is 10,000" in str(e.value)
    monkeypatch.setattr(oi, "MAX_FILE_BYTES", 1000)
    with pytest.raises(OutputsFileError, match=r"big.npz is 2.. kB; the most this tool reads is 1000 bytes"):
        read_outputs(path)


def test_a_compressed_file_is_refused_by_the_size_it_decompresses_to(tmp_path, monkeypatch):
    arrays = synthetic(n_val=30_000, n_test=0)
    arrays["logits"] = np.zeros_like(arrays["logits"])  # compresses to almost nothing
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    assert (tmp_path / "bomb.npz").stat().st_size < 500_000
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was reached"))
    monkeypatch.setattr(oi, "MAX_FILE_BYTES", 1024**2)
    with pytest.raises(OutputsFileError, match=r"bomb.npz decompresses to 2\.63 MB; the most this tool loads is 1 MB"):
        read_outputs(tmp_path / "bomb.npz")


def test_a_file_that_is_not_an_outputs_file(tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OutputsFileError, match=r"not a readable \.npz file"):
        read_outputs(tmp_path / "junk.npz")
    with pytest.raises(OutputsFileError, match="does not exist"):
        read_outputs(tmp_path / "missing.npz")
    assert main(["import-outputs", str(SHIPPED_VAL), "--out", str(tmp_path / "x")]) == 2
    assert "is not a per-exit outputs file" in capsys.readouterr().err


# ---- probabilities, CSV and Parquet ----------------------------------------------------------------


def test_probabilities_and_logits_replay_every_rule_alike(tmp_path, capsys):
    arrays = synthetic(ensemble_weights=np.array([0.2, 0.3, 0.5]))
    from_logits = save(tmp_path / "logits.npz", arrays)
    arrays["probs"] = softmax(arrays.pop("logits").astype(np.float64))
    from_probs = save(tmp_path / "probs.npz", arrays)
    a, b = read_outputs(from_logits), read_outputs(from_probs)
    assert b["val"].info["scores"] == "probabilities"
    np.testing.assert_allclose(b["val"].probs(), a["val"].probs(), rtol=1e-5, atol=1e-7)
    for name in list_rules():
        for split in ("val", "test"):
            ra, rb = replay_rule(a[split], name), replay_rule(b[split], name)
            np.testing.assert_array_equal(ra.exit_index, rb.exit_index, err_msg=name)
            np.testing.assert_array_equal(ra.prediction, rb.prediction, err_msg=name)
    for goal in (["--max-drop", "1"], ["--budget", "0.8"]):
        op_logits, op_probs = solve_json(capsys, str(from_logits), *goal), solve_json(capsys, str(from_probs), *goal)
        # the per-exit thresholds come from a fitted curve: equal up to the float32 rounding of the scores
        t_logits, t_probs = op_logits["settings"].pop("thresholds"), op_probs["settings"].pop("thresholds")
        assert t_probs == pytest.approx(t_logits, abs=1e-6) and op_probs == op_logits


def write_table(path: Path, arrays: dict, kind: str = "logit") -> Path:
    """The arrays as a CSV or Parquet outputs file written with pandas, plus its JSON sidecar."""
    import pandas as pd

    scores = arrays["logits"] if kind == "logit" else arrays["probs"]
    e, _, c = scores.shape
    table = {"split": arrays["split"], "label": arrays["labels"]}
    table |= {f"{kind}_{i}_{j}": scores[i, :, j] for i in range(e) for j in range(c)}
    table |= {f"confidence_{i}": arrays["confidences"][i] for i in range(e)}
    df = pd.DataFrame(table)
    df.to_parquet(path) if path.suffix == ".parquet" else df.to_csv(path)  # with the index column, as by default
    per_file = ("cum_cost", "cost_unit", "full_cost", "class_names")
    path.with_suffix(".json").write_text(json.dumps({k: np.asarray(arrays[k]).tolist() for k in per_file}))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_equal_npz(tmp_path, capsys, suffix):
    arrays = synthetic(n_val=300, n_test=200)
    npz = read_outputs(save(tmp_path / "o.npz", arrays))
    table = read_outputs(write_table(tmp_path / f"o{suffix}", arrays))
    for split in ("val", "test"):
        records_equal(npz[split], table[split])
    assert solve_json(capsys, str(tmp_path / "o.npz"), "--max-drop", "3") == solve_json(
        capsys, str(tmp_path / f"o{suffix}"), "--max-drop", "3"
    )


def test_the_example_scripts_writer_gives_the_same_records_in_every_format(tmp_path):
    writer = load_script().write
    arrays = synthetic(n_val=50, n_test=30)
    arrays.pop("confidences")
    got = {}
    for suffix in (".npz", ".csv", ".parquet"):
        writer(tmp_path / f"o{suffix}", arrays)
        got[suffix] = read_outputs(tmp_path / f"o{suffix}")
    for suffix in (".csv", ".parquet"):
        for split in ("val", "test"):
            records_equal(got[".npz"][split], got[suffix][split])


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p: p.with_suffix(".json").unlink(), "needs o.json beside it"),
        (lambda p: p.write_text(p.read_text().replace("logit_1_2", "logit_1_x", 1)), "unknown column 'logit_1_x'"),
        (lambda p: p.write_text(p.read_text().replace(",logit_2_4", "", 1)), "the column 'logit_2_4' is missing"),
        (lambda p: p.with_suffix(".json").write_text('{"cum_cost": [1, 2, 3], "unit": "ms"}'), "unknown keys 'unit'"),
        (lambda p: _edit_line(p, 3, lambda v: [*v[:5], "abc", *v[6:]]), "o.csv, line 3: 'abc' is not a number"),
        (lambda p: _edit_line(p, 2, lambda v: [*v[:5], "", *v[6:]]), "logits holds 1 NaN or infinite values"),
        (lambda p: _edit_line(p, 2, lambda v: v[:-1]), "o.csv, line 2: 19 values for 20 columns"),
        (lambda p: _edit_line(p, 4, lambda v: [*v[:2], "1.5", *v[3:]]), "labels must be whole numbers, got 1.5"),
    ],
)
def test_a_malformed_csv_gets_one_clear_message(tmp_path, edit, message):
    path = write_table(tmp_path / "o.csv", synthetic(n_val=20, n_test=10))
    edit(path)
    with pytest.raises(OutputsFileError) as e:
        read_outputs(path)
    assert message in str(e.value)


def _edit_line(path: Path, number: int, change) -> None:
    """Replace the values of line `number` (1: the header) of a CSV file by `change(values)`."""
    lines = path.read_text().splitlines()
    lines[number - 1] = ",".join(change(lines[number - 1].split(",")))
    path.write_text("\n".join(lines) + "\n")


# ---- costs in milliseconds -------------------------------------------------------------------------


def ms_file(tmp_path: Path, **extra) -> Path:
    arrays = synthetic(cum_cost=np.array([1.25, 2.5, 4.75]), cost_unit=np.asarray("ms"), **extra)
    arrays["full_cost"] = np.asarray(4.5)
    return save(tmp_path / "ms.npz", arrays)


def test_costs_in_milliseconds_are_reported_as_time(tmp_path, capsys):
    path = ms_file(tmp_path)
    rec = read_outputs(path)["val"]
    assert rec.info["cost_unit"] == "ms" and rec.full_macs == 4.5 and rec.cum_macs.dtype == np.float64
    assert main(["solve", str(path), "--budget", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "time ratio <= 0.8 with 90% confidence" in out and "expected time ratio <=" in out
    assert "expected time " in out and " ms (" in out and "MACs" not in out
    assert main(["policy", str(path), "--thresholds", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "expected time " in out and "MACs" not in out
    assert main(["sweep", str(path), "--points", "5"]) == 0
    assert "time %" in capsys.readouterr().out
    assert main(["import-outputs", str(path), "--out", str(tmp_path / "imp")]) == 0
    assert "1.250 ms, 2.500 ms, 4.750 ms; the network without exits 4.500 ms" in capsys.readouterr().out
    assert (
        main(["solve", str(tmp_path / "imp.val.npz"), "--test", str(tmp_path / "imp.test.npz"), "--budget", "0.8"]) == 0
    )
    assert capsys.readouterr().out == out_of(capsys, path)


def out_of(capsys, path: Path) -> str:
    assert main(["solve", str(path), "--budget", "0.8"]) == 0
    return capsys.readouterr().out


def test_a_fractional_full_cost_gives_the_right_ratio(tmp_path, capsys):
    path = ms_file(tmp_path)
    r = replay_rule(read_outputs(path)["test"], "max_probability", thresholds=0.9)
    assert r.macs_ratio == pytest.approx(r.expected_macs / 4.5)
    arrays = dict(np.load(path))
    arrays.update(cum_cost=np.array([0.125, 0.25, 0.475]), full_cost=np.asarray(0.45))  # a model under 1 ms
    assert main(["solve", str(save(tmp_path / "fast.npz", arrays)), "--budget", "0.8"]) == 0
    assert "time ratio" in capsys.readouterr().out


# ---- calibrate and deploy --------------------------------------------------------------------------


def test_calibrate_fits_on_val_reports_on_test_and_writes_only_the_json(example, tmp_path, capsys):
    from aep_core.analysis.calibration import fit_temperatures

    path, _ = example
    copy = Path(shutil.copy(path, tmp_path / "o.npz"))
    before = copy.read_bytes()
    assert main(["calibrate", str(copy), "--out", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "fitted on 300 validation samples of o.npz, written to" in out
    assert "calibration on the test split (300 samples" in out
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["temperatures"] == pytest.approx(fit_temperatures(read_outputs(copy)["val"]).tolist())
    assert doc["fitted_on"] == "val" and doc["samples"] == 300
    assert copy.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["o.npz", "t.json"]


def test_deploy_on_an_outputs_file(example, tmp_path, capsys):
    path, arrays = example
    assert main(["deploy", str(path), "--speeds-gmacs", "1,20,200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["feature_sizes"]["exit_bytes"]["fp32"] == (4 * arrays["feature_sizes"]).tolist()
    assert out["cost_unit"] == "macs" and out["local_macs_per_s"] is None
    assert main(["deploy", str(path)]) == 2  # no model to time 'local' on
    assert "give every tier's speed in GMAC/s with --speeds-gmacs" in capsys.readouterr().err
    no_sizes = save(tmp_path / "s.npz", synthetic())
    assert main(["deploy", str(no_sizes), "--speeds-gmacs", "1,100"]) == 2
    err = capsys.readouterr().err
    assert "s.npz has no feature_sizes and input_size" in err and "--tiers 1" in err
    assert main(["deploy", str(no_sizes), "--speeds-gmacs", "1"]) == 0
    assert "device" in capsys.readouterr().out


def test_deploy_with_costs_in_milliseconds_takes_speedups(tmp_path, capsys):
    path = ms_file(tmp_path, feature_sizes=np.array([100, 50, 5]), input_size=np.asarray(784))
    assert main(["deploy", str(path)]) == 2
    assert "with --speedups" in capsys.readouterr().err
    assert main(["deploy", str(path), "--speeds-gmacs", "1,10,100"]) == 2
    assert "not --speeds-gmacs" in capsys.readouterr().err
    assert main(["deploy", str(path), "--tiers", "1", "--thresholds", "1", "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)["simulation"]
    assert sim["latency_s"]["mean"] == pytest.approx(4.75e-3)  # every sample runs to the last exit: 4.75 ms
    assert main(["deploy", str(path), "--speedups", "1,2", "--splits", "0", "--thresholds", "1", "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)["simulation"]
    # 1.25 ms on the device, 100 values (400 bytes) over 20 Mbit/s plus 30 ms, then (4.75 - 1.25) / 2 ms
    assert sim["latency_s"]["mean"] == pytest.approx(1.25e-3 + 400 * 8 / 20e6 + 30e-3 + 1.75e-3)
    assert main(["deploy", str(path), "--speedups", "1,2", "--splits", "0"]) == 0
    assert "speed x" in capsys.readouterr().out


def test_a_file_without_test_samples_reports_on_validation(tmp_path, capsys):
    path = save(tmp_path / "v.npz", synthetic(n_test=0))
    assert set(read_outputs(path)) == {"val"}
    assert main(["solve", str(path), "--max-drop", "2"]) == 0
    assert "test:       none (v.npz holds no test samples)" in capsys.readouterr().out
    assert main(["calibrate", str(path)]) == 0
    assert "no test samples in v.npz: the table below is on the validation samples" in capsys.readouterr().out
    assert main(["policy", str(path)]) == 2
    assert "v.npz holds val samples only; it has no test split" in capsys.readouterr().err
    assert main(["import-outputs", str(path), "--out", str(tmp_path / "m")]) == 0
    assert "no test samples in the file" in capsys.readouterr().out
    assert (tmp_path / "m.val.npz").is_file() and not (tmp_path / "m.test.npz").exists()


def test_calibrate_on_a_checkpoint_also_writes_the_json(tmp_path, capsys):
    from aep_core.analysis.calibration import fit_temperatures
    from aep_core.checkpoint.sidecars import evaluation_path

    shipped = PROJECT_DIR / "assets" / "models" / "aep_hybrid.pt"
    assert main(["calibrate", str(shipped), "--no-save", "--out", str(tmp_path / "t.json")]) == 0
    assert f"(not stored: --no-save); written to {tmp_path / 't.json'}" in capsys.readouterr().out
    want = fit_temperatures(load_evaluation(evaluation_path(shipped, "val")))
    assert json.loads((tmp_path / "t.json").read_text())["temperatures"] == pytest.approx(want.tolist())


# ---- uploads (contents, not paths) -------------------------------------------------------------------


def test_an_upload_reads_like_the_file_on_disk(tmp_path):
    arrays = synthetic(n_val=40, n_test=20)
    on_disk = read_outputs(save(tmp_path / "o.npz", arrays))
    table = write_table(tmp_path / "t.csv", arrays)
    table_bytes, sidecar_bytes = table.read_bytes(), table.with_suffix(".json").read_bytes()
    uploads = [
        ({"o.npz": (tmp_path / "o.npz").read_bytes()}, "o.npz"),
        ({"../../elsewhere/o.npz": (tmp_path / "o.npz").read_bytes()}, "o.npz"),  # only the file name is kept
        ({"t.csv": table_bytes, "t.json": sidecar_bytes}, "t.csv"),
        ({"per_file.json": sidecar_bytes, "t.csv": table_bytes}, "t.csv"),  # the only .json, whatever its name
        ({"t;rm -rf.csv": table_bytes, "t;rm -rf.json": sidecar_bytes}, "t;rm -rf.csv"),
    ]
    for files, name in uploads:
        got_name, got = oi.read_uploaded_outputs(files)
        assert got_name == name and set(got) == {"val", "test"}
        for split in ("val", "test"):
            records_equal(on_disk[split], got[split])


@pytest.mark.parametrize(
    "names,message",
    [
        (["t.json"], "t.json alone is not a per-exit outputs file"),
        (["t.csv"], "t.csv needs t.json beside it"),
        (["o.npz", "p.npz"], "one per-exit outputs file at a time, got 2: o.npz, p.npz"),
        (["o.npz", "t.json"], "o.npz holds its per-file values itself; leave out t.json"),
        (["t.csv", "a.json", "b.json"], "t.csv comes with 2 .json files; give only t.json"),
        (["m.pt"], "m.pt is neither a per-exit outputs file"),
        (["nan.npz"], "nan.npz: logits holds 1 NaN or infinite values"),
        ([], "No per-exit outputs file was given"),
    ],
)
def test_an_upload_that_is_not_one_outputs_file_gets_one_message(tmp_path, names, message):
    arrays = synthetic(n_val=20, n_test=10)
    table = write_table(tmp_path / "t.csv", arrays)
    _nan_logits(arrays)
    contents = {
        ".npz": save(tmp_path / "o.npz", synthetic(n_val=20, n_test=10)).read_bytes(),
        ".csv": table.read_bytes(),
        ".json": table.with_suffix(".json").read_bytes(),
        ".pt": b"not an outputs file",
    }
    files = {name: contents[Path(name).suffix] for name in names}
    if "nan.npz" in files:
        files["nan.npz"] = save(tmp_path / "nan.npz", arrays).read_bytes()
    with pytest.raises(OutputsFileError) as e:
        oi.read_uploaded_outputs(files)
    assert message in str(e.value)
