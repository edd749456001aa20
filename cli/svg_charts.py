"""Small charts as inline SVG strings, for a report that opens anywhere without a network or a script.

Every text that reaches the markup goes through ``html.escape``: cluster names and failure reasons come
from untrusted sources (Grok's answers, error messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

SENTIMENT_COLOURS = {"positive": "#2e9d5b", "neutral": "#9aa5b1", "negative": "#d64545"}
MEAN_COLOUR = "#1f3a93"


@dataclass(frozen=True)
class Column:
    """One bucket of the sentiment chart."""

    label: str  # its start, as the axis shows it
    counts: dict[str, int]  # by sentiment
    mean_score: float | None


def _svg(css_class: str, width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def sentiment_chart(columns: list[Column], width: int = 920, height: int = 280) -> str:
    """Stacked bars of the counts by sentiment per bucket, and the mean score as a line on its own axis
    (-1 to 1, at the right)."""
    left, right, top, bottom = 48, 44, 12, 40
    plot_width, plot_height = width - left - right, height - top - bottom
    tallest = max((sum(c.counts.values()) for c in columns), default=0) or 1
    step = plot_width / max(len(columns), 1)
    body = [
        f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}" stroke="#555"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{tallest}</text>',
        f'<text x="{left - 6}" y="{top + plot_height}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{left + plot_width + 6}" y="{top + 10}" font-size="11" fill="{MEAN_COLOUR}">+1</text>',
        f'<text x="{left + plot_width + 6}" y="{top + plot_height}" font-size="11" fill="{MEAN_COLOUR}">-1</text>',
        f'<line x1="{left}" y1="{top + plot_height / 2}" x2="{left + plot_width}" y2="{top + plot_height / 2}" '
        f'stroke="{MEAN_COLOUR}" stroke-dasharray="3 4" stroke-opacity="0.5"/>',
        f'<text x="{left + plot_width + 6}" y="{top + plot_height / 2 + 4}" font-size="11" '
        f'fill="{MEAN_COLOUR}">0</text>',
    ]
    points = []
    for index, column in enumerate(columns):
        x, base = left + index * step, top + plot_height
        for sentiment, colour in SENTIMENT_COLOURS.items():
            count = column.counts.get(sentiment, 0)
            if count:
                bar_height = count / tallest * plot_height
                base -= bar_height
                body.append(
                    f'<rect class="bar {sentiment}" x="{x + step * 0.1:.1f}" y="{base:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{bar_height:.1f}" fill="{colour}"><title>{escape(column.label)}: {count} '
                    f"{sentiment}</title></rect>"
                )
        if column.mean_score is not None:
            points.append(f"{x + step / 2:.1f},{top + (1 - column.mean_score) / 2 * plot_height:.1f}")
        if index % max(1, len(columns) // 8) == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'font-size="11">{escape(column.label)}</text>'
            )
    if points:
        body.append(
            f'<polyline class="mean" points="{" ".join(points)}" fill="none" stroke="{MEAN_COLOUR}" stroke-width="2"/>'
        )
    legend = [*SENTIMENT_COLOURS.items(), ("mean score", MEAN_COLOUR)]
    for index, (name, colour) in enumerate(legend):
        x = left + index * 120
        body.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{height - 5}" font-size="11">{name}</text>'
        )
    return _svg("chart sentiment-chart", width, height, "insights per bucket by sentiment, and the mean score", body)


def sparkline(values: list[float], label: str, width: int = 180, height: int = 30) -> str:
    """A line of ``values`` scaled to its own maximum, with its last point marked."""
    tallest = max(values, default=0) or 1
    step = (width - 6) / max(len(values) - 1, 1)
    points = [(3 + index * step, height - 3 - value / tallest * (height - 6)) for index, value in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    body = [f'<polyline points="{line}" fill="none" stroke="{MEAN_COLOUR}" stroke-width="1.5"/>']
    if points:
        body.append(f'<circle cx="{points[-1][0]:.1f}" cy="{points[-1][1]:.1f}" r="2.5" fill="{MEAN_COLOUR}"/>')
    return _svg("chart sparkline", width, height, label, body)


def meter(value: float, maximum: float, label: str, colour: str = "#4a6fa5", width: int = 200, height: int = 14) -> str:
    """A horizontal bar: ``value`` out of ``maximum``."""
    filled = 0 if maximum <= 0 else value / maximum * width
    return _svg(
        "chart meter",
        width,
        height,
        label,
        [
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#eef1f5"/>',
            f'<rect class="bar" x="0" y="0" width="{filled:.1f}" height="{height}" fill="{colour}"/>',
        ],
    )
