"""HTTP receiver: events posted over HTTP are appended durably to the log the tailer follows.

    api.py       FastAPI app: the seed event endpoints, /healthz, /readyz, /metrics, OpenAPI
    relay.py     the Statsig SDK relay: /v1/log_event and /v1/rgstr in Statsig's own protocol
    intake.py    the one path every event endpoint takes: body -> one decode -> append -> answer
    bodies.py    request bodies -> lines to append (the seed shapes, the SDKs' {"events": [...]})
    wire.py      HTTP plumbing: bearer token, reading and decompressing bodies (limits), error answers
    cors.py      web pages as producers: receiver.cors_origins enforced (403), preflights, CORS headers
    appender.py  single-writer O_APPEND appends with group commit
    server.py    uvicorn in its own thread; the receiver-only process (`receive`)
"""

from .api import create_app, default_ready
from .appender import Appender, AppendError
from .intake import Intake
from .server import HttpServer, build_metrics, build_receiver, receive

__all__ = ["AppendError", "Appender", "HttpServer", "Intake", "build_metrics", "build_receiver",
           "create_app", "default_ready", "receive"]
