"""Chart builders: each returns a chart whose Vega-Lite spec carries the data it was given."""

import numpy as np

from explorer.charts import exits as charts


def _datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def _rows(spec: dict) -> list[dict]:
    return [r for d in _datasets(spec) for r in d]


def test_exit_strip_labels_every_exit_with_macs_and_accuracy():
    spec = charts.exit_strip(5, [0, 2, 4], [0.2, 0.55, 1.0], [0.61, 0.8, 0.9], [0, 0, 1, 1, 2], stop_exit=1).to_dict()
    rows = _rows(spec)
    exits = [r for r in rows if "macs" in r]
    assert [r["exit"] for r in exits] == ["exit 0", "exit 1", "exit 2"]
    assert [r["macs"] for r in exits] == ["20.0% MACs", "55.0% MACs", "100.0% MACs"]
    assert [r["accuracy"] for r in exits] == ["acc 61.0%", "acc 80.0%", "acc 90.0%"]
    assert [r["stop"] for r in exits] == [False, True, False]
    assert len([r for r in rows if "stage" in r]) == 5


def test_exit_strip_shows_the_heads_cost_apart_from_the_network():
    spec = charts.exit_strip(3, [0, 1, 2], [0.25, 0.6, 1.0], [0.8, 0.9, 0.95], heads_fraction=[0.0002, 0.0006, 0.0016])
    exits = [r for r in _rows(spec.to_dict()) if "macs" in r]
    assert [r["macs"] for r in exits] == ["25.0% network", "60.0% network", "100.0% network"]
    assert [r["heads"] for r in exits] == ["+0.02% heads", "+0.06% heads", "+0.16% heads"]
    assert [r["total"] for r in exits] == ["25.0%", "60.1%", "100.2%"]
    assert not any("100.2% MACs" in str(v) for r in exits for v in r.values())


def test_probability_heatmap_marks_stop_exit_and_true_class():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])
    spec = charts.exit_probability_heatmap(probs, ["a", "b", "c"], stop_exit=1, label=2).to_dict()
    rows = _rows(spec)
    cells = [r for r in rows if "p" in r]
    assert len(cells) == 6
    assert {r["exit"] for r in cells} == {"exit 0", "exit 1 (stops)"}
    assert any(r.get("class") == "c" and "p" not in r for r in rows)  # the true-class marker
    assert abs(sum(r["p"] for r in cells if r["exit"] == "exit 0") - 1) < 1e-9


def test_pareto_curve_has_sweep_exits_and_current_point():
    spec = charts.pareto_curve(
        [0.9, 0.3, 0.6],
        [0.8, 0.5, 0.7],
        current=(0.6, 0.7),
        exits=([0.3, 1.0], [0.5, 0.82]),
        frontier=[True, True, False],
    ).to_dict()
    layers = spec["layer"]
    assert len(layers) == 3
    data = _datasets(spec)
    sweep = next(d for d in data if len(d) == 2 and "exit" not in d[0] and "what" not in d[0])
    assert [r["macs"] for r in sweep] == [0.3, 0.9]  # sorted, dominated point dropped
    current = next(d for d in data if d and d[0].get("what") == "current setting")
    assert current == [{"macs": 0.6, "accuracy": 0.7, "what": "current setting"}]
    spec = charts.pareto_curve([0.3], [0.5], current=(0.3, 0.5), oracle=(0.35, 0.9)).to_dict()
    assert any(r.get("what", "").startswith("oracle") and r["accuracy"] == 0.9 for d in _datasets(spec) for r in d)


def test_exit_distribution_and_per_class():
    spec = charts.exit_distribution([0.5, 0.25, 0.25], [0.9, float("nan"), 0.7]).to_dict()
    assert [r["share"] for r in _rows(spec)] == [0.5, 0.25, 0.25]
    spec = charts.per_class_exit(["x", "y"], [0.5, 2.0], 3).to_dict()
    assert [r["mean exit"] for r in _rows(spec)] == [0.5, 2.0]
    assert spec["encoding"]["x"]["scale"]["domain"] == [0, 2]


def test_ensemble_vs_single_and_weights():
    spec = charts.ensemble_vs_single([0.5, 0.7], [0.5, 0.75], [0.4, 1.0]).to_dict()
    rows = _rows(spec)
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"exit alone", "ensemble of exits 0..k"}
    assert rows[-1]["cut"] == "exit 1 (100.0% MACs)" and rows[-1]["accuracy"] == 0.75
    w = [r["weight"] for r in _rows(charts.weights_bar([1, 1, 2]).to_dict())]
    assert np.allclose(w, [0.25, 0.25, 0.5])


def test_pruning_savings_highlights_chosen_cut():
    spec = charts.pruning_savings(
        ["exit 0", "exit 1"], [10, 20], [100, 200], [0.1, 0.2], [0.6, 0.7], chosen=1
    ).to_dict()
    assert len(spec["hconcat"]) == 4
    rows = _rows(spec)
    assert [r["chosen"] for r in rows] == [False, True]


def test_exit_scores_and_training_curve():
    spec = charts.exit_scores([0.2, 0.95], "max probability", 0.9, 1).to_dict()
    assert any(r.get("t") == 0.9 for r in _rows(spec))
    spec = charts.training_curve([1, 2], [[0.3, 0.5], [0.4, 0.6]]).to_dict()
    assert len(_rows(spec)) == 4


def test_cost_comparison_puts_curves_points_and_the_current_point_on_one_plot():
    spec = charts.cost_comparison(
        {"early exits": ([0.3, 0.6], [0.9, 0.94]), "cascade": ([0.1, 0.2], [0.91, 0.93])},
        [("static, 1/4 width", "static network", 0.06, 0.906), ("first exit", "one exit", 0.26, 0.889)],
        ("cascade, t = 0.8", 0.2, 0.93),
    ).to_dict()
    rows = _rows(spec)
    assert {r["series"] for r in rows if r.get("label") == ""} == {"early exits", "cascade"}
    assert {r["label"]: r["macs"] for r in rows if r.get("series") in ("static network", "one exit")} == {
        "static, 1/4 width": 0.06,
        "first exit": 0.26,
    }
    assert any(r.get("label") == "cascade, t = 0.8" and r["series"] == "current" for r in rows)
    scale = next(layer["encoding"]["color"]["scale"] for layer in spec["layer"] if "color" in layer["encoding"])
    assert scale["domain"] == ["early exits", "cascade", "static network", "one exit"]
    assert len(set(scale["range"])) == 4  # each series its own colour
