"""``insights report``: one self-contained HTML file about a window, for the people who read the insights.

Sentiment over time, the top clusters and how each moves, what failed and why, and the window's tokens
and cost. Everything is inline (CSS and SVG, no script, no font or image to fetch), so the file opens
anywhere, offline, and can be mailed or archived as it is. The figures are the API's: ``store.trends``
per bucket, ``store.reports.summarize`` for the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from api.documents import isoformat
from cli.svg_charts import SENTIMENT_COLOURS, Column, meter, sentiment_chart, sparkline
from store import counts, reports, trends
from store.queries import utcnow
from store.usage import LaneUsage

TOP_CLUSTERS = 10
HOURLY_UP_TO = timedelta(days=2)  # shorter windows are drawn by the hour


@dataclass
class ClusterTrend:
    name: str
    total: int
    counts: list[int]  # per bucket
    mean_score: float | None


@dataclass
class ReportData:
    start: datetime
    end: datetime
    bucket: str
    buckets: list[trends.Bucket]
    summary: reports.Summary
    clusters: list[ClusterTrend]
    generated_at: datetime


def default_bucket(start: datetime, end: datetime) -> str:
    """By the hour for windows of two days or less, else by the day."""
    return "hour" if end - start <= HOURLY_UP_TO else "day"


def gather(start: datetime, end: datetime, thresholds: tuple[float, float], bucket: str | None = None) -> ReportData:
    """Read what the report shows."""
    bucket = bucket or default_bucket(start, end)
    filters = counts.Filters(thresholds=thresholds)
    summary = reports.summarize(start, end, thresholds, TOP_CLUSTERS)
    clusters = []
    for name, total in summary.top_clusters:
        per_bucket = trends.trends(trends.TrendQuery(start, end, bucket, filters, name))
        scored = sum(b.score_sum for b in per_bucket)
        clusters.append(ClusterTrend(name, total, [b.count for b in per_bucket], scored / total if total else None))
    buckets = trends.trends(trends.TrendQuery(start, end, bucket, filters))
    return ReportData(start, end, bucket, buckets, summary, clusters, utcnow())


def render(data: ReportData) -> str:
    """The whole page."""
    window = f"{isoformat(data.start)} to {isoformat(data.end)}"
    total = sum(data.summary.by_sentiment.values())
    mean = "n/a" if data.summary.mean_sentiment is None else f"{data.summary.mean_sentiment:+.2f}"
    headline = " · ".join(
        [
            f"<b>{total}</b> insights",
            f"mean score <b>{mean}</b>",
            *(f"<b>{n}</b> {escape(status)}" for status, n in data.summary.by_status.items()),
        ]
    )
    return PAGE.format(
        title=escape(f"Conversation insights, {window}"),
        window=escape(window),
        headline=headline,
        generated=escape(isoformat(data.generated_at.replace(microsecond=0))),
        bucket=escape(data.bucket),
        sentiment=_sentiment_section(data),
        clusters=_clusters_section(data),
        failures=_failures_section(data.summary),
        usage=_usage_section(data.summary.usage, total),
    )


def _label(bucket: trends.Bucket, width: str) -> str:
    return bucket.start.strftime("%m-%d %H:00" if width == "hour" else "%Y-%m-%d")


def _sentiment_section(data: ReportData) -> str:
    columns = [Column(_label(b, data.bucket), dict(b.by_sentiment), b.mean_score) for b in data.buckets]
    shares = ", ".join(
        f'<span style="color:{SENTIMENT_COLOURS[s]}">{n} {s}</span>' for s, n in data.summary.by_sentiment.items()
    )
    return f"<p>By {data.bucket}: {shares}.</p>{sentiment_chart(columns)}"


def _change(counts_: list[int]) -> str:
    """The second half of the window against the first, per bucket."""
    half = len(counts_) // 2
    if half == 0:
        return "n/a"
    before, after = sum(counts_[:half]) / half, sum(counts_[-half:]) / half
    if before == 0:
        return "new" if after else "n/a"
    return f"{(after - before) / before:+.0%}"


def _clusters_section(data: ReportData) -> str:
    if not data.clusters:
        return "<p>No insight names a cluster in this window.</p>"
    largest = max(c.total for c in data.clusters)
    rows = "".join(
        f'<tr><td class="name">{escape(c.name)}</td><td class="n">{c.total}</td>'
        f"<td>{meter(c.total, largest, f'{c.name}: {c.total}')}</td>"
        f'<td>{sparkline(c.counts, f"{c.name} per {data.bucket}")}</td><td class="n">{_change(c.counts)}</td>'
        f'<td class="n">{"n/a" if c.mean_score is None else f"{c.mean_score:+.2f}"}</td></tr>'
        for c in data.clusters
    )
    return (
        '<table class="clusters"><tr><th>cluster</th><th>insights</th><th></th>'
        f"<th>per {escape(data.bucket)}</th><th>second half vs first</th><th>mean score</th></tr>{rows}</table>"
    )


def _failures_section(summary: reports.Summary) -> str:
    if not summary.top_failures:
        return f"<p>No conversation of this window failed ({summary.by_status.get('failed', 0)} failed).</p>"
    largest = max(n for _reason, n in summary.top_failures)
    rows = "".join(
        f'<tr><td class="reason">{escape(reason)}</td><td class="n">{n}</td>'
        f"<td>{meter(n, largest, f'{n} failed', SENTIMENT_COLOURS['negative'])}</td></tr>"
        for reason, n in summary.top_failures
    )
    return f'<table class="failures"><tr><th>reason</th><th>conversations</th><th></th></tr>{rows}</table>'


def percent(fraction: float | None) -> str:
    """A fraction as a percentage to a tenth, ``n/a`` without one."""
    return "n/a" if fraction is None else f"{fraction:.1%}"


def _usage_section(usage: dict[str, LaneUsage], insights: int) -> str:
    rows, cost, priced = "", 0.0, 0
    for lane, used in usage.items():
        known = f"${used.cost_usd:.4f}" if used.priced else "not known"
        rows += (
            f'<tr><td>{escape(lane)}</td><td class="n">{used.insights}</td><td class="n">{used.prompt_tokens:,.0f}</td>'
            f'<td class="n">{used.cached_tokens:,.0f}</td><td class="n">{percent(used.cached_share)}</td>'
            f'<td class="n">{used.completion_tokens:,.0f}</td>'
            f'<td class="n">{known}</td><td class="n">{used.insights - used.priced}</td></tr>'
        )
        cost, priced = cost + used.cost_usd, priced + used.priced
    if priced:
        verdict = f"<p>Cost of the priced insights: <b>${cost:.4f}</b>, ${cost / priced:.6f} an insight.</p>"
    else:
        verdict = (
            "<p>The cost is not known yet: no insight of this window reports priced tokens "
            "(the offline analyzer reports none).</p>"
        )
    every = LaneUsage(
        prompt_tokens=sum(u.prompt_tokens for u in usage.values()),
        cached_tokens=sum(u.cached_tokens for u in usage.values()),
    )
    if every.cached_share is not None:
        verdict += f"<p>xAI's prompt cache served <b>{percent(every.cached_share)}</b> of the prompt tokens.</p>"
    return (
        f'{verdict}<table class="usage"><tr><th>lane</th><th>insights</th><th>prompt tokens</th><th>cached</th>'
        f"<th>cached share</th><th>completion tokens</th><th>cost</th><th>without a price</th></tr>{rows}</table>"
        f'<p class="note">{insights} insights in the window; tokens are each insight\'s share of its call.</p>'
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       margin: 24px auto; max-width: 980px; padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 2px; }}
h2 {{ font-size: 17px; margin-top: 28px; border-bottom: 1px solid #dde2e8; padding-bottom: 4px; }}
.meta, .note {{ color: #5b6675; font-size: 12px; }} table {{ border-collapse: collapse; }}
td, th {{ padding: 3px 10px 3px 0; text-align: left; vertical-align: middle; }}
th {{ font-weight: 600; font-size: 12px; color: #5b6675; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.reason {{ max-width: 520px; overflow-wrap: anywhere; }}
svg {{ display: block; }}
</style></head>
<body>
<h1>Conversation insights</h1>
<p class="meta">{window} (UTC, by when each conversation occurred) · generated {generated} · by {bucket}</p>
<p>{headline}</p>
<h2>Sentiment over time</h2>
{sentiment}
<h2>Top clusters, and how each moves</h2>
{clusters}
<h2>Failures</h2>
{failures}
<h2>Tokens and cost</h2>
{usage}
</body></html>
"""
