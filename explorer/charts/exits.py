"""Altair chart builders for the app: pure functions from plain values (lists, arrays) to charts.

Every builder returns an `alt.Chart` (or layered/concatenated chart) and touches nothing else, so it
can be tested through `chart.to_dict()`.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

ACCENT = "#e4572e"
BASE = "#4c78a8"
MUTED = "#b8c4d6"
PALETTE = [BASE, "#2ca02c", "#7f7f7f", ACCENT, "#9467bd", "#8c564b"]  # series told apart on one plot


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _small_pct(x: float) -> str:
    """A share that may be well under a percent, with the digits that show it (0.02%, 0.16%, 1.5%)."""
    return f"{100 * x:.2f}%" if x < 0.01 else _pct(x)


def exit_strip(
    num_blocks: int,
    exit_blocks: Sequence[int],
    macs_fraction: Sequence[float],
    exit_accuracy: Sequence[float] | None = None,
    block_stage: Sequence[int] | None = None,
    stop_exit: int | None = None,
    heads_fraction: Sequence[float] | None = None,
) -> alt.LayerChart:
    """The network as a strip of blocks (coloured by stage) with its exits below, each exit labelled
    with its share of the full network's MACs and its accuracy; `stop_exit` is highlighted. With
    `heads_fraction` (the early exits' heads evaluated on the way, as a share of the network without exits),
    `macs_fraction` is read as the network's own layers and the heads are labelled apart."""
    stages = list(block_stage) if block_stage is not None else [0] * num_blocks
    blocks = pd.DataFrame(
        {
            "block": list(range(num_blocks)),
            "stage": [f"stage {s + 1}" for s in stages],
            "label": [f"block {b} · stage {s + 1}" for b, s in enumerate(stages[:num_blocks])],
        }
    )
    acc = list(exit_accuracy) if exit_accuracy is not None else [None] * len(exit_blocks)
    exits = pd.DataFrame(
        {
            "block": list(exit_blocks),
            "exit": [f"exit {k}" for k in range(len(exit_blocks))],
            "macs": [f"{_pct(f)} MACs" for f in macs_fraction],
            "accuracy": ["" if a is None else f"acc {_pct(a)}" for a in acc],
            "stop": [k == stop_exit for k in range(len(exit_blocks))],
        }
    )
    if heads_fraction is not None:
        exits["macs"] = [f"{_pct(f)} network" for f in macs_fraction]
        exits["heads"] = [f"+{_small_pct(h)} heads" for h in heads_fraction]
        exits["total"] = [_pct(f + h) for f, h in zip(macs_fraction, heads_fraction, strict=True)]
    x = alt.X("block:O", title=None, axis=None)
    rect = (
        alt.Chart(blocks)
        .mark_rect(cornerRadius=4, height=34)
        .encode(x=x, y=alt.value(18), color=alt.Color("stage:N", legend=None), tooltip=["label", "stage"])
    )
    block_text = (
        alt.Chart(blocks).mark_text(color="white", fontWeight="bold").encode(x=x, y=alt.value(18), text="label")
    )
    stem = (
        alt.Chart(exits)
        .mark_rule(strokeWidth=2)
        .encode(
            x=x,
            y=alt.value(35),
            y2=alt.value(58),
            color=alt.condition("datum.stop", alt.value(ACCENT), alt.value("#555")),
        )
    )
    tooltip = ["exit", alt.Tooltip("macs", title="MACs share"), "accuracy"]
    if heads_fraction is not None:
        tooltip = [
            "exit",
            alt.Tooltip("total", title="MACs share (total)"),
            alt.Tooltip("macs", title="the network's layers"),
            alt.Tooltip("heads", title="exit heads on the way"),
            "accuracy",
        ]
    dot = (
        alt.Chart(exits)
        .mark_circle(size=260, opacity=1)
        .encode(
            x=x,
            y=alt.value(64),
            color=alt.condition("datum.stop", alt.value(ACCENT), alt.value("#555")),
            tooltip=tooltip,
        )
    )
    t1 = alt.Chart(exits).mark_text(dy=0, fontWeight="bold").encode(x=x, y=alt.value(82), text="exit")
    rows = ["macs", "heads", "accuracy"] if heads_fraction is not None else ["macs", "accuracy"]
    texts = [alt.Chart(exits).mark_text().encode(x=x, y=alt.value(96 + 14 * i), text=f) for i, f in enumerate(rows)]
    return alt.layer(rect, block_text, stem, dot, t1, *texts).properties(height=97 + 14 * len(rows), width="container")


def exit_probability_heatmap(
    probs: np.ndarray, class_names: Sequence[str], stop_exit: int | None = None, label: int | None = None
) -> alt.LayerChart:
    """Probabilities of every class (columns) at every exit (rows) for one image; the exit where the
    image stops is marked, and so is the true class if known."""
    e, c = probs.shape
    df = pd.DataFrame(
        [
            {
                "exit": f"exit {k}" + (" (stops)" if k == stop_exit else ""),
                "class": class_names[j],
                "p": float(probs[k, j]),
                "text": f"{probs[k, j]:.2f}" if probs[k, j] >= 0.05 else "",
            }
            for k in range(e)
            for j in range(c)
        ]
    )
    order = list(dict.fromkeys(df["exit"]))
    base = alt.Chart(df).encode(
        x=alt.X("class:N", sort=list(class_names), title=None, axis=alt.Axis(labelAngle=-35, labelOverlap=False)),
        y=alt.Y("exit:N", sort=order, title=None),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("p:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="probability"),
        tooltip=["exit", "class", alt.Tooltip("p:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=11).encode(
        text="text:N", color=alt.condition("datum.p > 0.5", alt.value("white"), alt.value("black"))
    )
    layers = [heat, text]
    if label is not None:
        truth = pd.DataFrame({"class": [class_names[label]]})
        layers.append(
            alt.Chart(truth)
            .mark_rule(color=ACCENT, strokeDash=[4, 3], strokeWidth=2)
            .encode(x=alt.X("class:N", sort=list(class_names), bandPosition=0.5))
        )
    return alt.layer(*layers).properties(height=32 * e + 40, width="container")


def exit_scores(
    scores: Sequence[float],
    score_name: str,
    threshold: float | None = None,
    stop_exit: int | None = None,
    higher_is_confident: bool = True,
) -> alt.LayerChart:
    """The exit rule's score at each exit for one image (bars), the threshold (rule) and the stop exit."""
    df = pd.DataFrame(
        {
            "exit": [f"exit {k}" for k in range(len(scores))],
            "score": [float(s) for s in scores],
            "stop": [k == stop_exit for k in range(len(scores))],
        }
    )
    bars = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("exit:N", title=None, sort=None),
            y=alt.Y("score:Q", title=score_name),
            color=alt.condition("datum.stop", alt.value(ACCENT), alt.value(BASE)),
            tooltip=["exit", alt.Tooltip("score:Q", format=".3f")],
        )
    )
    layers = [bars]
    if threshold is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(strokeDash=[5, 3], color="black").encode(y="t:Q")
        )
    return alt.layer(*layers).properties(
        height=200,
        width="container",
        title=f"{score_name} per exit ({'higher' if higher_is_confident else 'lower'} = more confident)",
    )


def exit_distribution(fractions: Sequence[float], exit_accuracy: Sequence[float] | None = None) -> alt.Chart:
    """Share of samples answered at each exit (bars), with the accuracy of those samples in the tooltip."""
    n = len(fractions)
    df = pd.DataFrame(
        {
            "exit": [f"exit {k}" for k in range(n)],
            "share": [float(f) for f in fractions],
            "accuracy": [None if exit_accuracy is None else float(exit_accuracy[k]) for k in range(n)],
        }
    )
    return (
        alt.Chart(df)
        .mark_bar(color=BASE)
        .encode(
            x=alt.X("exit:N", sort=None, title=None),
            y=alt.Y(
                "share:Q", axis=alt.Axis(format="%"), title="samples stopping here", scale=alt.Scale(domain=[0, 1])
            ),
            tooltip=["exit", alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".1%")],
        )
        .properties(height=220, width="container", title="Where samples stop")
    )


def pareto_curve(
    macs_ratio: Sequence[float],
    accuracy: Sequence[float],
    current: tuple[float, float] | None = None,
    exits: tuple[Sequence[float], Sequence[float]] | None = None,
    frontier: Sequence[bool] | None = None,
    oracle: tuple[float, float] | None = None,
    cost_name: str = "MACs",
) -> alt.LayerChart:
    """Accuracy against the share of the full network's cost (`cost_name`: MACs, or time for measured
    milliseconds) over a threshold sweep (line), each single exit (grey squares), the oracle that reads the labels
    (a reference star), and the current setting (large point)."""
    df = pd.DataFrame({"macs": [float(m) for m in macs_ratio], "accuracy": [float(a) for a in accuracy]})
    if frontier is not None:
        df = df[np.asarray(frontier, dtype=bool)]
    df = df.sort_values("macs")
    x = alt.X("macs:Q", title=f"compute (share of the full network's {cost_name})", axis=alt.Axis(format="%"))
    y = alt.Y("accuracy:Q", title="accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    line = (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=20), color=BASE)
        .encode(x=x, y=y, tooltip=[alt.Tooltip("macs:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")])
    )
    layers = [line]
    if exits is not None:
        ex = pd.DataFrame(
            {
                "macs": [float(m) for m in exits[0]],
                "accuracy": [float(a) for a in exits[1]],
                "exit": [f"exit {k} alone" for k in range(len(exits[0]))],
            }
        )
        layers.append(
            alt.Chart(ex)
            .mark_square(size=70, color="#888")
            .encode(x=x, y=y, tooltip=["exit", alt.Tooltip("accuracy:Q", format=".2%")])
        )
    if oracle is not None:
        ora = pd.DataFrame(
            {"macs": [float(oracle[0])], "accuracy": [float(oracle[1])], "what": ["oracle (reads the labels)"]}
        )
        layers.append(
            alt.Chart(ora)
            .mark_point(shape="diamond", size=160, filled=True, color="#2ca02c")
            .encode(
                x=x, y=y, tooltip=["what", alt.Tooltip("macs:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")]
            )
        )
    if current is not None:
        cur = pd.DataFrame({"macs": [float(current[0])], "accuracy": [float(current[1])], "what": ["current setting"]})
        layers.append(
            alt.Chart(cur)
            .mark_point(size=260, filled=True, color=ACCENT, stroke="black")
            .encode(
                x=x, y=y, tooltip=["what", alt.Tooltip("macs:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")]
            )
        )
    return alt.layer(*layers).properties(height=300, width="container", title="Accuracy vs compute")


def cost_comparison(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    points: Sequence[tuple[str, str, float, float]],
    current: tuple[str, float, float] | None = None,
    reference: str = "the default network",
) -> alt.LayerChart:
    """Several ways to classify on one accuracy-against-compute plot, compute as a share of `reference`'s MACs:
    `curves` (name -> MACs shares, accuracies) as lines, `points` (label, kind, MACs share, accuracy) as labelled
    dots coloured by kind, and the `current` (label, MACs share, accuracy) point ringed."""
    rows = [
        {"series": name, "label": "", "macs": float(m), "accuracy": float(a)}
        for name, (macs, acc) in curves.items()
        for m, a in zip(macs, acc, strict=True)
    ]
    lines_df = pd.DataFrame(rows, columns=["series", "label", "macs", "accuracy"]).sort_values(["series", "macs"])
    dots_df = pd.DataFrame(
        [{"series": kind, "label": label, "macs": float(m), "accuracy": float(a)} for label, kind, m, a in points],
        columns=["series", "label", "macs", "accuracy"],
    )
    x = alt.X("macs:Q", title=f"compute (share of {reference}'s MACs)", axis=alt.Axis(format="%"))
    y = alt.Y("accuracy:Q", title="test accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    domain = list(dict.fromkeys([*curves, *dots_df["series"]]))
    color = alt.Color(
        "series:N",
        scale=alt.Scale(domain=domain, range=[PALETTE[i % len(PALETTE)] for i in range(len(domain))]),
        legend=alt.Legend(orient="bottom", title=None, columns=2, labelLimit=320),
    )
    tip = ["series", "label", alt.Tooltip("macs:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")]
    lines = alt.Chart(lines_df).mark_line(point=alt.OverlayMarkDef(size=18)).encode(x=x, y=y, color=color, tooltip=tip)
    dots = (
        alt.Chart(dots_df).mark_point(size=110, filled=True, shape="square").encode(x=x, y=y, color=color, tooltip=tip)
    )
    labels = alt.Chart(dots_df).mark_text(align="left", dx=8, dy=-8, fontSize=11).encode(x=x, y=y, text="label")
    layers = [lines, dots, labels]
    if current is not None:
        cur = pd.DataFrame(
            {"series": ["current"], "label": [current[0]], "macs": [float(current[1])], "accuracy": [float(current[2])]}
        )
        layers.append(
            alt.Chart(cur)
            .mark_point(size=320, stroke="black", strokeWidth=2, filled=False)
            .encode(
                x=x,
                y=y,
                tooltip=["label", alt.Tooltip("macs:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")],
            )
        )
    return alt.layer(*layers).properties(height=360, width="container", title="Accuracy vs compute")


def per_class_exit(class_names: Sequence[str], mean_exit: Sequence[float], num_exits: int) -> alt.Chart:
    """Mean exit depth of each class: easy classes leave early, hard ones travel deep."""
    df = pd.DataFrame({"class": list(class_names), "mean exit": [float(v) for v in mean_exit]})
    return (
        alt.Chart(df)
        .mark_bar(color=BASE)
        .encode(
            y=alt.Y("class:N", sort="-x", title=None),
            x=alt.X("mean exit:Q", scale=alt.Scale(domain=[0, max(num_exits - 1, 1)]), title="mean exit index"),
            tooltip=["class", alt.Tooltip("mean exit:Q", format=".2f")],
        )
        .properties(height=alt.Step(22), width="container", title="Mean exit depth per class")
    )


def ensemble_vs_single(
    single_acc: Sequence[float],
    ensemble_acc: Sequence[float],
    macs_fraction: Sequence[float] | None = None,
    cost_name: str = "MACs",
) -> alt.Chart:
    """Accuracy of each exit alone beside the AEP ensemble of exits 0..k, for every cut k, each cut labelled with
    its share of the network's cost (`cost_name`)."""
    rows = []
    for k, (s, e) in enumerate(zip(single_acc, ensemble_acc, strict=True)):
        cost = "" if macs_fraction is None else f" ({_pct(macs_fraction[k])} {cost_name})"
        rows += [
            {"cut": f"exit {k}{cost}", "k": k, "kind": "exit alone", "accuracy": float(s)},
            {"cut": f"exit {k}{cost}", "k": k, "kind": "ensemble of exits 0..k", "accuracy": float(e)},
        ]
    df = pd.DataFrame(rows)
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("cut:N", sort=alt.EncodingSortField("k"), title="cut after", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(domain=["exit alone", "ensemble of exits 0..k"], range=["#8a9bb5", ACCENT]),
                legend=alt.Legend(orient="top", title=None),
            ),
            tooltip=["cut", "kind", alt.Tooltip("accuracy:Q", format=".2%")],
        )
        .properties(height=280, width="container", title="Single exit vs ensemble")
    )


def weights_bar(weights: Sequence[float]) -> alt.Chart:
    """The normalised ensemble weight of each exit."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum() if w.sum() > 0 else w
    df = pd.DataFrame({"exit": [f"exit {k}" for k in range(len(w))], "weight": w})
    return (
        alt.Chart(df)
        .mark_bar(color=ACCENT)
        .encode(
            x=alt.X("exit:N", sort=None, title=None),
            y=alt.Y("weight:Q", axis=alt.Axis(format="%"), title="weight"),
            tooltip=["exit", alt.Tooltip("weight:Q", format=".2%")],
        )
        .properties(height=240, width="container", title="Normalised weights")
    )


def pruning_savings(
    cuts: Sequence[str],
    params: Sequence[float],
    macs: Sequence[float],
    latency_ms: Sequence[float],
    accuracy: Sequence[float],
    chosen: int | None = None,
) -> alt.HConcatChart:
    """For each cut point: parameters, MACs, latency and accuracy as small bar charts; `chosen` highlighted."""
    df = pd.DataFrame(
        {
            "cut": list(cuts),
            "k": list(range(len(cuts))),
            "parameters": [float(v) for v in params],
            "MACs": [float(v) for v in macs],
            "latency (ms)": [float(v) for v in latency_ms],
            "accuracy": [float(v) for v in accuracy],
            "chosen": [k == chosen for k in range(len(cuts))],
        }
    )

    def bar(field: str, fmt: str) -> alt.Chart:
        return (
            alt.Chart(df)
            .mark_bar()
            .encode(
                x=alt.X(
                    "cut:N",
                    sort=alt.EncodingSortField("k"),
                    title=None,
                    axis=alt.Axis(labelAngle=-60, labelOverlap=False),
                ),
                y=alt.Y(
                    f"{field}:Q", title=field, axis=alt.Axis(format=fmt), scale=alt.Scale(zero=field != "accuracy")
                ),
                color=alt.condition("datum.chosen", alt.value(ACCENT), alt.value(BASE)),
                tooltip=["cut", alt.Tooltip(f"{field}:Q", format=fmt)],
            )
            .properties(width=120, height=180, title=field)
        )

    return alt.hconcat(bar("parameters", "~s"), bar("MACs", "~s"), bar("latency (ms)", ".2f"), bar("accuracy", ".1%"))


def training_curve(epochs: Sequence[int], val_acc: Sequence[Sequence[float]]) -> alt.Chart:
    """Validation accuracy of each exit after each epoch (one line per exit)."""
    rows = [
        {"epoch": int(ep), "exit": f"exit {k}", "accuracy": float(a)}
        for ep, accs in zip(epochs, val_acc, strict=True)
        for k, a in enumerate(accs)
    ]
    df = pd.DataFrame(rows, columns=["epoch", "exit", "accuracy"])
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:O"),
            y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
            color=alt.Color("exit:N", legend=alt.Legend(orient="top", title=None)),
            tooltip=["epoch", "exit", alt.Tooltip("accuracy:Q", format=".2%")],
        )
        .properties(height=240, width="container", title="Validation accuracy per exit")
    )
