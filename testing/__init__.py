"""The xAI emulator: a local stand-in for xAI's API that tests, benchmarks and a local run share.

It answers chat completions (structured outputs, usage and billed cost, prompt caching by
``x-grok-conv-id``), the Batch API and the model catalogue as docs.x.ai describes them today, and
injects the provider's weather on demand: latency with a long tail, 429s, 5xx, truncation, exhausted
credits. ``python -m testing.emulator --help`` runs it on its own. It imports nothing of the project but
the answer schema it must honour.
"""
