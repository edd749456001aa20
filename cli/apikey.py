"""``insights apikey``: a new API key, and the entry that grants it in ``API_KEYS``."""

from __future__ import annotations

from argparse import Namespace

from api.access import new_key
from cli.command import Usage, argument, command
from settings import API_SCOPES, Settings


def scopes(args: Namespace) -> list[str]:
    return [scope.strip() for scope in args.scopes.split(",") if scope.strip()]


def known_scopes(_settings: Settings, args: Namespace) -> None:
    if not scopes(args) or not set(scopes(args)) <= API_SCOPES:
        raise Usage(f"--scopes: choose among {', '.join(sorted(API_SCOPES))}")


@command(
    "apikey",
    "make an API key and print its API_KEYS entry",
    argument(
        "--scopes", default="ingest,read", help="comma-separated: ingest, read, admin (webhooks) (default: ingest,read)"
    ),
    check=known_scopes,
    uses_data=False,
)
def make_key(_settings: Settings, args: Namespace) -> int:
    key, entry = new_key(scopes(args))
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print(f"entry (add it to API_KEYS, entries separated by ';'): {entry}")
    return 0
