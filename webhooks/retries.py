"""When a failed delivery is tried again: after each failure the next delay of ``WEBHOOK_RETRY_SCHEDULE``,
by default Standard Webhooks' own (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over some
27 hours), each stretched or shrunk by up to ``JITTER`` at random so that the deliveries a receiver's outage
failed together do not all come back in the same second. After the last, the delivery is a dead letter
(``insights webhooks deliveries --failed``), to be replayed by hand.
"""

from __future__ import annotations

import random

JITTER = 0.1


def next_delay(failed_attempts: int, schedule: tuple[float, ...], rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``failed_attempts`` failures, or ``None``: no attempt is left."""
    if failed_attempts > len(schedule):
        return None
    return schedule[failed_attempts - 1] * (rng or random).uniform(1 - JITTER, 1 + JITTER)
