"""Altair chart builders for calibration: reliability diagrams per exit (before and after temperature
scaling) and ECE per exit. Pure functions from plain values (the rows of `ReliabilityBins.rows()`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from explorer.charts.exits import ACCENT, BASE

SERIES = {"before": "uncalibrated", "after": "after temperature scaling"}
COLORS = [BASE, ACCENT]


def _bin_frame(bins: Sequence[dict[str, Any]], series: str, exit_label: str) -> pd.DataFrame:
    rows = [
        {
            "exit": exit_label,
            "outputs": series,
            "bin": f"{b['lo']:.2f}-{b['hi']:.2f}",
            "count": b["count"],
            "confidence": b["confidence"],
            "accuracy": b["accuracy"],
            "gap": None if b["count"] == 0 else b["accuracy"] - b["confidence"],
        }
        for b in bins
        if b["count"] > 0
    ]
    return pd.DataFrame(rows, columns=["exit", "outputs", "bin", "count", "confidence", "accuracy", "gap"])


def reliability_diagram(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]] | None = None, title: str = "", size: int = 220
) -> alt.LayerChart:
    """Accuracy against mean confidence per confidence bin (points sized by count, joined by a line) for
    one exit, uncalibrated and (if given) after temperature scaling; the diagonal is perfect calibration."""
    frames = [_bin_frame(before, SERIES["before"], title)]
    if after is not None:
        frames.append(_bin_frame(after, SERIES["after"], title))
    df = pd.concat(frames, ignore_index=True)
    color = alt.Color(
        "outputs:N",
        scale=alt.Scale(domain=list(SERIES.values()), range=COLORS),
        legend=alt.Legend(orient="bottom", title=None),
    )
    x = alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="confidence (top probability)")
    y = alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy")
    diag = (
        alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0]}))
        .mark_line(color="#999", strokeDash=[4, 3])
        .encode(x=x, y=y)
    )
    base = alt.Chart(df).encode(x=x, y=y, color=color)
    line = base.mark_line(strokeWidth=1.5).encode(detail="outputs:N")
    dots = base.mark_circle(opacity=0.85).encode(
        size=alt.Size("count:Q", scale=alt.Scale(range=[15, 300]), legend=None),
        tooltip=[
            "outputs",
            "bin",
            "count",
            alt.Tooltip("confidence:Q", format=".3f"),
            alt.Tooltip("accuracy:Q", format=".3f"),
            alt.Tooltip("gap:Q", format="+.3f", title="accuracy - confidence"),
        ],
    )
    return alt.layer(diag, line, dots).properties(width=size, height=size, title=title)


def reliability_grid(
    before: Sequence[Sequence[dict[str, Any]]],
    after: Sequence[Sequence[dict[str, Any]]] | None = None,
    columns: int = 3,
    size: int = 220,
) -> alt.ConcatChart:
    """One reliability diagram per exit (lists of bin rows per exit), `columns` per row."""
    charts = [
        reliability_diagram(b, None if after is None else after[k], f"exit {k}", size) for k, b in enumerate(before)
    ]
    return alt.concat(*charts, columns=max(1, columns)).resolve_scale(color="shared")


def ece_per_exit(ece_before: Sequence[float], ece_after: Sequence[float] | None = None) -> alt.Chart:
    """Grouped bars: expected calibration error of each exit, uncalibrated and after temperature scaling."""
    rows = [{"exit": f"exit {k}", "outputs": SERIES["before"], "ECE": float(v)} for k, v in enumerate(ece_before)]
    if ece_after is not None:
        rows += [{"exit": f"exit {k}", "outputs": SERIES["after"], "ECE": float(v)} for k, v in enumerate(ece_after)]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("exit:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset="outputs:N",
            y=alt.Y("ECE:Q", title="expected calibration error", axis=alt.Axis(format="%")),
            color=alt.Color(
                "outputs:N",
                scale=alt.Scale(domain=list(SERIES.values()), range=COLORS),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["exit", "outputs", alt.Tooltip("ECE:Q", format=".2%")],
        )
        .properties(height=220, width="container")
    )
