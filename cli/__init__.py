"""``insights``: the operator's command line.

    insights dlq list|show|requeue|purge ...        dead letters (see ``insights dlq --help``)
    insights import FILE.jsonl | - [--create-database]   bulk load, one conversation (a POST body) per line
    insights export --start T --end T [--format jsonl|csv] [--output FILE]
    insights reprocess (--failed | --start T --end T) [--dry-run] [--yes]
    insights conversations list [--status S] [--reason R] [--start T] [--end T] [--limit N] [--json]
    insights bulk list|show|cancel ...              the bulk lane's provider batches (cancel spends no attempt)
    insights clusters suggest --start T --end T     what a closed taxonomy's "other" suggested most
    insights stats [--json]                         counts by status, queue depths, dead letters
    insights report --start T --end T --output FILE.html [--bucket hour|day]
    insights counts [--rebuild [--create-database]] check (or recompute) the daily counts behind total_count
    insights apikey [--scopes ingest,read]          a new API key and its API_KEYS entry

Configured like every other process, by ``config.toml`` and the environment; every command but ``apikey``
says on stderr which database and Redis it uses. Reading commands never create a database; writing ones
(``import``, ``reprocess``, ``counts --rebuild``) only with ``--create-database``. Paths are relative to
where the command runs. Bad usage, a bad configuration, an output file that cannot be opened, a missing
database, one that is down or refuses us, or a change not confirmed (Ctrl-C at the question included) is a
one-line error (exit status 2), never a traceback; a reader that stops early (``insights stats |
head``) ends the command quietly (exit status 1, as Python's own recipe for a closed pipe has it).
"""

from __future__ import annotations

import os
import sys



def main(argv: list[str] | None = None) -> int:
    """The console script: :func:`run`, ending quietly when the reader of standard output has gone; a bad
    configuration (read when a command first needs it) is exit status 2, like any refusal."""
    from cli.commands import run

    try:
        status = run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return status
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        print(stop.code, file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 1


__all__ = ["main"]
