"""The web process: uvicorn serving ``ingress:app`` with the connection bounds of the configuration.

``WEB_LIMIT_CONCURRENCY`` caps the connections and requests one process holds at once (uvicorn answers
``503`` beyond it), so slow or idle clients cannot exhaust the process; each request's body must arrive
within ``BODY_TIMEOUT_SECONDS`` (``408`` otherwise, see ``api.body``). ``scripts/web`` (the Procfile's
``web``) and ``scripts/run`` start it; ``WEB_CONCURRENCY`` sets the number of uvicorn worker processes.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from settings import settings_or_exit


def main(argv: list[str] | None = None) -> None:
    settings = settings_or_exit()
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    args = parser.parse_args(argv)
    uvicorn.run(
        "ingress:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        limit_concurrency=settings.web_limit_concurrency,
    )


if __name__ == "__main__":
    main()
