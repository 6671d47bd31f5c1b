"""`EventLogHandler`: analytics events logged through `logging`, written by an `EventLog`.

    events = logging.getLogger("analytics")
    events.addHandler(EventLogHandler("/var/log/app/events.ndjson"))
    events.info("checkout", extra={"user": "u1", "value": 9.99, "metadata": {"sku": "X1"}})

The record's message is the event name; `user` (a user id, dict or StatsigUser), `value` and
`metadata` come from `extra`. Records of the client's own logger (its fallback lines) are
never written as events.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .eventlog import EventLog


class EventLogHandler(logging.Handler):
    """A logging handler writing each record as one analytics event (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], level: int = logging.NOTSET, **options: Any) -> None:
        super().__init__(level)
        self.events = EventLog(path, **options)

    def emit(self, record: logging.LogRecord) -> None:
        own = self.events.log.name
        if record.name == own or record.name.startswith(own + "."):
            return
        try:
            name = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        extra = record.__dict__
        self.events.log_event(extra.get("user"), name, extra.get("value"), extra.get("metadata"))

    def close(self) -> None:
        self.events.close()
        super().close()
