"""Write analytics events to the log the forwarder tails, from your backend's own process.

    encode.py    event -> one NDJSON line, validated with the forwarder's own rules (`EventRefused`)
    eventlog.py  `EventLog`: one `write` per call on an O_APPEND descriptor, follows rotation, never raises
    handler.py   `EventLogHandler`: the same, for apps that log events through `logging`

Importing this package loads only the standard library, orjson, and the forwarder's decode
module (which itself loads only compiled codecs): not pydantic, FastAPI, uvicorn, watchdog or
statsig-python-core, so a backend can depend on it without loading the forwarder
(tests/test_client.py::test_importing_the_client_loads_nothing_heavy).

    from forwarder.client import EventLog
    events = EventLog("/var/log/app/events.ndjson")
    events.log_event("u1", "checkout", 9.99, {"sku": "X1"})   # True once the line is in the file
"""

from .encode import EventRefused, encode_event, user_id_of
from .eventlog import EventLog
from .handler import EventLogHandler

__all__ = ["EventLog", "EventLogHandler", "EventRefused", "encode_event", "user_id_of"]
