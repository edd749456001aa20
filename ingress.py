"""Ingress: the Falcon ASGI app that ``uvicorn ingress:app`` serves (built by ``api.app.create_app``).

It validates conversations, applies the inbound limit shared through Redis, commits each accepted
conversation as ``queued`` before answering ``202``, and hands it to the workers with a Dramatiq message.
It never calls the LLM. It also answers status, insights queries and health checks.
"""

from api.app import create_app
from settings import settings_or_exit

app = create_app(settings_or_exit())
