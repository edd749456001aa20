"""The HTTP API: a Falcon ASGI app, one module per resource (as Falcon's own examples lay it out).

``api.app.create_app`` wires them together; ``ingress.app`` is what uvicorn serves.
"""
