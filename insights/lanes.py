"""The two lanes a conversation travels: ``realtime`` (one call per batch, now) or ``bulk`` (xAI's Batch
API: half price, outside the per-minute limits, within hours; ``actors.bulk``)."""

REALTIME, BULK = "realtime", "bulk"
LANES = (REALTIME, BULK)
