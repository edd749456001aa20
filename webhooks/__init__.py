"""Outgoing webhooks, the domain: what an event says, how a request is signed, which addresses may be
called, how often a receiver is called and when a failed delivery is tried again.

The store keeps subscriptions and the outbox (``store.subscriptions``, ``store.outbox``); the worker sends
(``actors.webhooks``); the web and the CLI manage subscriptions (``api.webhooks``, ``cli.webhooks``).
"""
