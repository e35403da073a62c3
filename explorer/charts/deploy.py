"""Altair chart builders for the Deploy page: where the latency goes per tier, which tier answers, and
accuracy against latency over split points and thresholds. Pure functions from plain values to charts."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from explorer.charts.exits import ACCENT, BASE

KIND_COLOURS = {
    "compute": ["#4c78a8", "#72b7b2", "#54a24b", "#b279a2"],
    "transfer": ["#f58518", "#e45756", "#eeca3b"],
    "link latency": ["#bab0ac", "#9d755d", "#d8b5a5"],
}


def latency_parts(
    tier_names: Sequence[str],
    compute_s: np.ndarray,
    transfer_s: np.ndarray,
    link_latency_s: np.ndarray,
    weights: Sequence[tuple[str, np.ndarray]],
) -> pd.DataFrame:
    """Rows (group, part, kind, order, ms) of the latency breakdown: for each group (a name and per-exit weights
    summing to 1), the weighted mean of each part.
    compute_s: (exits, tiers); transfer_s, link_latency_s: (exits, links)."""
    rows = []
    for g, (group, w) in enumerate(weights):
        w = np.asarray(w, dtype=np.float64)
        order = 0
        for t, name in enumerate(tier_names):
            rows.append(
                {
                    "group": group,
                    "g": g,
                    "part": f"compute on {name}",
                    "kind": "compute",
                    "order": order,
                    "ms": 1e3 * float(w @ compute_s[:, t]),
                }
            )
            order += 1
            if t < len(tier_names) - 1:
                link = f"{name} -> {tier_names[t + 1]}"
                rows.append(
                    {
                        "group": group,
                        "g": g,
                        "part": f"send {link}",
                        "kind": "transfer",
                        "order": order,
                        "ms": 1e3 * float(w @ transfer_s[:, t]),
                    }
                )
                rows.append(
                    {
                        "group": group,
                        "g": g,
                        "part": f"latency {link}",
                        "kind": "link latency",
                        "order": order + 1,
                        "ms": 1e3 * float(w @ link_latency_s[:, t]),
                    }
                )
                order += 2
    return pd.DataFrame(rows)


def latency_breakdown(parts: pd.DataFrame) -> alt.Chart:
    """Stacked bars: for each group of samples (all, answered on each tier), the mean latency split into compute
    on each tier, transfer over each link and each link's latency."""
    domain = list(dict.fromkeys(parts.sort_values("order")["part"]))
    colours = []
    used = {k: 0 for k in KIND_COLOURS}
    for p in domain:
        kind = parts.loc[parts["part"] == p, "kind"].iloc[0]
        colours.append(KIND_COLOURS[kind][used[kind] % len(KIND_COLOURS[kind])])
        used[kind] += 1
    return (
        alt.Chart(parts)
        .mark_bar()
        .encode(
            y=alt.Y("group:N", sort=alt.EncodingSortField("g"), title=None),
            x=alt.X("ms:Q", stack="zero", title="mean latency per sample (ms)"),
            color=alt.Color(
                "part:N",
                scale=alt.Scale(domain=domain, range=colours),
                sort=domain,
                legend=alt.Legend(orient="bottom", title=None, columns=3),
            ),
            order=alt.Order("order:Q"),
            tooltip=["group", "part", alt.Tooltip("ms:Q", format=".3f")],
        )
        .properties(height=alt.Step(28), width="container", title="Where the latency goes")
    )


def tier_share(
    tier_names: Sequence[str], share: Sequence[float], accuracy: Sequence[float], exits: Sequence[str]
) -> alt.LayerChart:
    """Share of samples answered at each tier (bars, labelled), with the exits it holds and the accuracy of its
    answers."""
    df = pd.DataFrame(
        {
            "tier": list(tier_names),
            "t": list(range(len(tier_names))),
            "share": [float(s) for s in share],
            "accuracy": [None if a is None or np.isnan(a) else float(a) for a in accuracy],
            "exits": list(exits),
            "label": [f"{100 * float(s):.1f}%" for s in share],
        }
    )
    x = alt.X("tier:N", sort=alt.EncodingSortField("t"), title=None, axis=alt.Axis(labelAngle=0))
    bars = (
        alt.Chart(df)
        .mark_bar(color=BASE)
        .encode(
            x=x,
            y=alt.Y("share:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title="samples answered"),
            tooltip=["tier", "exits", alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("accuracy:Q", format=".2%")],
        )
    )
    text = alt.Chart(df).mark_text(dy=-8).encode(x=x, y="share:Q", text="label:N")
    return alt.layer(bars, text).properties(height=240, width="container", title="Which tier answers")


def accuracy_latency(
    latency_ms: Sequence[float],
    accuracy: Sequence[float],
    pareto: Sequence[bool],
    stat: str,
    current: tuple[float, float] | None = None,
    deadline_ms: float | None = None,
    best: tuple[float, float] | None = None,
) -> alt.LayerChart:
    """Accuracy against a latency statistic over split points and settings: every configuration (light dots), the
    Pareto front (line), the deadline (dashed rule), the best configuration within it and the current one."""
    lat = np.asarray(latency_ms, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    front = np.asarray(pareto, dtype=bool)
    pts = pd.DataFrame({"latency": np.round(lat, 4), "accuracy": np.round(acc, 6)}).drop_duplicates()
    fr = pd.DataFrame({"latency": lat[front], "accuracy": acc[front]}).sort_values("latency")
    x = alt.X("latency:Q", title=f"{stat} latency (ms)", scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    tip = [alt.Tooltip("latency:Q", format=".3f", title="ms"), alt.Tooltip("accuracy:Q", format=".2%")]
    layers = [
        alt.Chart(pts).mark_circle(size=18, color="#c7cfdb", opacity=0.6).encode(x=x, y=y, tooltip=tip),
        alt.Chart(fr)
        .mark_line(point=alt.OverlayMarkDef(size=30), color=BASE, interpolate="step-after")
        .encode(x=x, y=y, tooltip=tip),
    ]
    if deadline_ms is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"latency": [float(deadline_ms)]}))
            .mark_rule(strokeDash=[5, 3], color="black")
            .encode(x=x)
        )
    for point, what, shape, colour in (
        (best, "best within the deadline", "diamond", "#2ca02c"),
        (current, "current setting", "circle", ACCENT),
    ):
        if point is not None:
            df = pd.DataFrame({"latency": [float(point[0])], "accuracy": [float(point[1])], "what": [what]})
            layers.append(
                alt.Chart(df)
                .mark_point(shape=shape, size=220, filled=True, color=colour, stroke="black")
                .encode(x=x, y=y, tooltip=["what", *tip])
            )
    return alt.layer(*layers).properties(height=300, width="container", title=f"Accuracy vs {stat} latency")
