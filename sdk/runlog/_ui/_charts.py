"""The LLM page's two charts as bar geometry: a latency histogram and tokens over time.

Server-side SVG: the numbers become rectangles here, the template draws them, and
the page needs no charting library (nothing to fetch, nothing to run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from .._cli._output import duration

CHART_W = 520.0
CHART_H = 120.0
PAD_L = 44.0
PAD_B = 20.0


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str
    kind: str = "a"


@dataclass
class Chart:
    """Bars in a ``CHART_W`` x ``CHART_H`` box, x labels under it, the y maximum beside."""

    bars: list[Bar] = field(default_factory=list)
    labels: list[tuple[float, str]] = field(default_factory=list)
    y_max: str = ""
    width: float = CHART_W
    height: float = CHART_H
    pad_l: float = PAD_L
    pad_b: float = PAD_B


def _edges(low: float, high: float) -> list[float]:
    """Bin edges at 1-2-5 steps per decade, from the last at or below ``low`` to the
    first above ``high`` (a log axis: a long tail stays visible)."""
    power = math.floor(math.log10(low))
    edges: list[float] = []
    while not edges or edges[-1] <= high:
        edges += [m * 10.0**power for m in (1, 2, 5)]
        power += 1
    first = max(i for i, edge in enumerate(edges) if edge <= low)
    last = min(i for i, edge in enumerate(edges) if edge > high)
    if last - first >= 6:
        return edges[first : last + 1]
    return _linear(low, high)  # a narrow range: equal bins at a round step


def _linear(low: float, high: float) -> list[float]:
    raw = max(high - low, low * 0.1, 1e-3) / 10
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    edge = math.floor(low / step) * step
    edges = [edge, edge + step]
    while edges[-1] <= high:
        edges.append(edges[-1] + step)
    return edges


def histogram(latencies_ms: list[float]) -> Chart:
    """Calls per latency bin: 1-2-5 steps over a wide range, equal steps over a narrow one."""
    values = [v for v in latencies_ms if v > 0]
    chart = Chart(width=300.0, height=72.0, pad_l=26.0, pad_b=16.0)
    if not values:
        return chart
    edges = _edges(min(values), max(values))
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = max(0, min(len(counts) - 1, _bin(edges, v)))
        counts[i] += 1
    top = max(counts)
    w = (chart.width - chart.pad_l) / len(counts)
    plot_h = chart.height - chart.pad_b
    for i, n in enumerate(counts):
        h = plot_h * n / top
        label = f"{duration(edges[i])} to {duration(edges[i + 1])}: {n} call{'s' * (n != 1)}"
        chart.bars.append(Bar(chart.pad_l + i * w + 1, plot_h - h, max(w - 2, 1), h, label))
    middle = len(counts) // 2
    for i in (0, middle, len(counts)) if len(counts) > 2 else (0, len(counts)):
        chart.labels.append((chart.pad_l + i * w, duration(edges[i])))
    chart.y_max = str(top)
    return chart


def _bin(edges: list[float], v: float) -> int:
    for i in range(len(edges) - 1):
        if v < edges[i + 1]:
            return i
    return len(edges) - 2


def tokens_over_time(calls: list[tuple[int, float, float]], buckets: int = 60) -> Chart:
    """Input and output tokens summed per time bucket: ``calls`` are (ns, in, out)."""
    chart = Chart(width=900.0, height=130.0)
    if not calls:
        return chart
    t0 = min(t for t, _, _ in calls)
    t1 = max(t for t, _, _ in calls) + 1
    size = max((t1 - t0) / buckets, 1.0)
    sums = [[0.0, 0.0] for _ in range(buckets)]
    for t, tokens_in, tokens_out in calls:
        i = min(buckets - 1, int((t - t0) / size))
        sums[i][0] += tokens_in
        sums[i][1] += tokens_out
    top = max(a + b for a, b in sums) or 1.0
    plot_h = chart.height - chart.pad_b
    w = (chart.width - chart.pad_l) / buckets
    for i, (tokens_in, tokens_out) in enumerate(sums):
        title = f"{_clock(t0 + i * size)}: {tokens_in:,.0f} in, {tokens_out:,.0f} out"
        h_in, h_out = plot_h * tokens_in / top, plot_h * tokens_out / top
        x = chart.pad_l + i * w + 0.5
        chart.bars.append(Bar(x, plot_h - h_in, max(w - 1, 1), h_in, title, "a"))
        chart.bars.append(Bar(x, plot_h - h_in - h_out, max(w - 1, 1), h_out, title, "b"))
    for i in (0, buckets // 2, buckets):
        chart.labels.append((chart.pad_l + i * w, _clock(t0 + i * size)))
    chart.y_max = f"{top:,.0f}"
    return chart


def _clock(ns: float) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S")


__all__ = ["Bar", "Chart", "histogram", "tokens_over_time"]
