"""HTTP receiver: events posted over HTTP are appended durably to the log the tailer follows.

    api.py       FastAPI app: event endpoints, /healthz, /readyz, /metrics
    relay.py     the Statsig SDK relay: /v1/log_event and /v1/rgstr in Statsig's own protocol
    wire.py      what the endpoints share: bearer token, bodies (gzip, zstd, limits), error answers
    cors.py      web pages as producers: receiver.cors_origins enforced (403), preflights, CORS headers
    appender.py  single-writer O_APPEND appends with group commit
    server.py    uvicorn in its own thread; the receiver-only process (`receive`)
"""

from .api import Intake, create_app, default_ready
from .appender import Appender, AppendError
from .server import HttpServer, build_metrics, build_receiver, receive

__all__ = ["AppendError", "Appender", "HttpServer", "Intake", "build_metrics", "build_receiver",
           "create_app", "default_ready", "receive"]
