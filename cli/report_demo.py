"""A sample report: four weeks of made-up insights with a story, stored through the real store, and the
page ``insights report`` writes for them (``scripts/python -m cli.report_demo``; the README's screenshot).

The story: steady traffic with quiet weekends; a double-charge incident in the third week (``billing``
jumps, sentiment drops); late deliveries fade as a carrier is replaced; a few conversations fail. Every
insight has tokens at the configured model's price, the bulk lane's at the Batch API's rates.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from insights.schemas import AnalysisResult, InsightRow
from settings import load_settings
from store import claims, queries, results
from store.models import BULK, REALTIME

START = datetime(2026, 10, 26)
DAYS = 28
MODEL = "grok-4.3"


def topics(day: int, rng: random.Random) -> tuple[list[str], float]:
    """The clusters of one conversation of ``day`` and its sentiment score."""
    incident = 14 <= day <= 18
    weights = {
        "billing": 6 + (30 if incident else 0),
        "late-delivery": max(2, 16 - day // 2),
        "damaged-item": 5,
        "account-access": 6,
        "refund": 4 + (10 if incident else 0),
        "product-question": 8,
        "other": 3,
    }
    first = rng.choices(list(weights), list(weights.values()))[0]
    clusters = [first] + (["refund"] if first == "billing" and rng.random() < 0.4 else [])
    mood = {
        "billing": -0.55,
        "refund": -0.35,
        "late-delivery": -0.4,
        "damaged-item": -0.5,
        "account-access": -0.15,
        "product-question": 0.35,
        "other": 0.2,
    }[first]
    return clusters, max(-1.0, min(1.0, rng.gauss(mood - (0.2 if incident else 0), 0.3)))


def fill(rng: random.Random, start: datetime = START, days: int = DAYS, per_day: int = 60) -> int:
    """Store the story's conversations and insights; return how many conversations."""
    stored = 0
    for day in range(days):
        volume = int(per_day * (0.45 if (start + timedelta(days=day)).weekday() >= 5 else 1) * rng.uniform(0.85, 1.15))
        ids = [f"demo-{day:02d}-{n:03d}" for n in range(volume)]
        moments = sorted(start + timedelta(days=day, seconds=rng.uniform(0, 86_399)) for _ in ids)
        lanes = [BULK if rng.random() < 0.3 else REALTIME for _ in ids]
        queries.insert_conversations(
            [queries.NewConversation.of(i, "{}", moment, moment, lane) for i, moment, lane in zip(ids, moments, lanes)]
        )
        failing = [i for i in ids if rng.random() < 0.03]
        claims.fail_open(failing[::2], "grok: answer truncated (finish_reason=length)")
        claims.fail_open(failing[1::2], "grok: HTTP 400: request refused")
        for lane in (REALTIME, BULK):
            batch = [i for i, their_lane in zip(ids, lanes) if their_lane == lane and i not in failing]
            for offset in range(0, len(batch), 10):
                _analyze(rng, batch[offset : offset + 10], day)
        stored += volume
    return stored


def _analyze(rng: random.Random, ids: list[str], day: int) -> None:
    claim = claims.claim_for_processing(ids, max_attempts=3)
    rows = []
    for conversation_id in ids:
        clusters, score = topics(day, rng)
        rows.append(
            InsightRow(
                conversation_id=conversation_id,
                sentiment_score=round(score, 2),
                clusters=clusters,
                confidence=round(rng.uniform(0.55, 0.98), 2),
                reasoning="demo",
            )
        )
    usage = {
        "prompt_tokens": 900 + 350 * len(ids),
        "completion_tokens": 60 * len(ids),
        "prompt_tokens_details": {"cached_tokens": 700},
    }
    results.record_results(
        AnalysisResult(
            conversation_ids=ids,
            rows=rows,
            model=MODEL,
            prompt_version="demo",
            raw_response="{}",
            usage=usage,
            claim_token=claim.token,
        ),
        max_retries=3,
        settings=load_settings({}),
    )


def screenshot(page: Path, picture: Path, width: int = 1000, height: int = 1260) -> None:
    """A PNG of ``page`` as headless Chromium draws it."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={picture.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("report-demo.html"))
    parser.add_argument("--screenshot", type=Path, help="also a PNG of it, drawn by headless Chromium")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="report-demo-")
    env = {**os.environ, "DB_PATH": f"{scratch}/demo.db", "DATABASE_URL": ""}
    try:
        from store.db import open_database
        from store.migrations import migrate

        migrate(open_database(load_settings(env)))
        print(f"stored {fill(random.Random(3))} conversations", file=sys.stderr)
        end = START + timedelta(days=DAYS)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "report",
                "--start",
                START.isoformat(),
                "--end",
                end.isoformat(),
                "--output",
                str(args.output),
            ],
            env=env,
            check=True,
        )
        if args.screenshot:
            screenshot(args.output, args.screenshot)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
