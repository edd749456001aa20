"""Offline analyzer against human ratings: Pearson r of ``sentiment_score`` vs the mean human rating.

Each text of ``../shared/eval/sentiment/*_GroundTruth.txt`` is scored as a one-message conversation, beside
VADER's compound alone (the floor the analyzer must not fall below).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from benchmarks.harness import ROOT
from insights.analyzer import ConversationToAnalyze
from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from settings import load_settings

DEFAULT_DIR = ROOT.parent / "shared" / "eval" / "sentiment"


def read_ratings(path: Path) -> list[tuple[float, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            rows.append((float(parts[1]), parts[2]))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    analyzer = OfflineAnalyzer(Taxonomy.of(load_settings({})))
    vader = SentimentIntensityAnalyzer()
    print("| file | texts | analyzer r | VADER compound r |")
    print("|---|---|---|---|")
    for path in sorted(args.directory.glob("*_GroundTruth.txt")):
        ratings = read_ratings(path)
        human = [rating for rating, _text in ratings]
        conversations = [
            ConversationToAnalyze(f"t{n}", [{"role": "customer", "content": text}])
            for n, (_r, text) in enumerate(ratings)
        ]
        ours = [row.sentiment_score for row in analyzer.analyze(conversations).rows]
        baseline = [vader.polarity_scores(text)["compound"] for _r, text in ratings]
        print(
            f"| {path.name} | {len(ratings)} | {statistics.correlation(ours, human):.3f} | "
            f"{statistics.correlation(baseline, human):.3f} |"
        )


if __name__ == "__main__":
    main()
