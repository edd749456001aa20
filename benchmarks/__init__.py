"""Load, capacity and cost runs with one shared harness; their results live in ``BENCHMARKS.md`` beside
them, each with the command that produced it (``scripts/python -m benchmarks.NAME --help``)."""
