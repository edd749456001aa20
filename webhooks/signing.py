"""Standard Webhooks signatures (standardwebhooks.com): a secret is ``whsec_`` and base64 of random bytes;
a request's ``webhook-signature`` is ``v1,`` and base64 of HMAC-SHA256, keyed with those bytes, of
``{webhook-id}.{webhook-timestamp}.{body}``. While a secret is being rotated, the request is signed with the
new one and the old one, space-separated, so a receiver holding either verifies it.

Written with the standard library (a dozen lines) rather than the ``standardwebhooks`` package, so that the
tests' verification with that package checks this code from outside.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One ``v1,`` signature of a request with ``secret``."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signing_secrets: list[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers of a request, signed with each of ``signing_secrets``."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, message_id, timestamp, body) for secret in signing_secrets),
    }
