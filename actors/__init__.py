"""The worker process: Dramatiq actors over Redis (the Procfile's ``worker``, started by ``actors.launch``).

Importing this package, or any of its modules, builds and declares nothing. ``actors.worker.setup`` is the
worker's set-up, which Dramatiq's CLI calls before it consumes (``dramatiq actors.worker:setup``): it sets
up the broker (``actors.broker``), adds the worker's middleware and declares the actors of
``actors.batching`` and ``actors.analysis``. Other processes send messages by actor name
(``actors.broker.send``) and need no actor declared.
"""
