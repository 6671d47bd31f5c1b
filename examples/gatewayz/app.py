"""Gatewayz in miniature: the seed backend's analytics routes, writing events with forwarder.client.

    POST /v1/analytics/events   one event  {"event_name", "user_id"?, "value"?, "metadata"?}
    POST /v1/analytics/batch    a JSON array of such events (one write, all or nothing)
    GET  /v1/gates/{name}       a feature gate from statsig-python-core (false while Statsig is not configured)
    GET  /healthz

The user is the authenticated one (`Authorization: Bearer <api key>`, keys from
GATEWAYZ_API_KEYS="key1=user1,key2=user2"), else the body's `user_id`, else "anonymous".
Events go to GATEWAYZ_EVENT_LOG (default ./events.ndjson) through `EventLog`: the answer is
`{"success": true, ...}` only once the event's line is in the file, which
`statsig-forwarder run` tails and delivers to Statsig. Gates still come from statsig-python-core
when STATSIG_SERVER_SECRET_KEY is set (STATSIG_SPECS_URL and STATSIG_LOG_EVENT_URL optionally
point it elsewhere, e.g. its exposures at the sidecar's relay).

    uvicorn app:app --workers 4        # see README.md
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from statsig_python_core import Statsig, StatsigOptions, StatsigUser

from forwarder.client import EventLog

log = logging.getLogger("gatewayz")

events = EventLog(os.environ.get("GATEWAYZ_EVENT_LOG", "events.ndjson"))
API_KEYS = dict(pair.split("=", 1) for pair in os.environ.get("GATEWAYZ_API_KEYS", "").split(",") if "=" in pair)


class AnalyticsEvent(BaseModel):
    """The seed's event body (its `value` was a string; Statsig also takes numbers)."""

    event_name: str = Field(..., description="Event name (e.g. 'chat_message_sent')")
    user_id: str | None = Field(None, description="Used when the request is not authenticated")
    value: str | int | float | None = None
    metadata: dict[str, Any] | None = None


class Gates:
    """statsig-python-core for feature gates; without a key it is never started and every gate is false."""

    def __init__(self) -> None:
        self.statsig: Statsig | None = None

    def start(self) -> None:
        key = os.environ.get("STATSIG_SERVER_SECRET_KEY")
        if not key:
            log.info("STATSIG_SERVER_SECRET_KEY not set: feature gates are all false")
            return
        options = StatsigOptions()
        options.init_timeout_ms = 3000
        options.specs_url = os.environ.get("STATSIG_SPECS_URL") or None
        options.log_event_url = os.environ.get("STATSIG_LOG_EVENT_URL") or None
        try:
            statsig = Statsig(key, options)
            statsig.initialize().wait()
        except Exception:
            log.exception("statsig-python-core failed to start: feature gates are all false")
            return
        self.statsig = statsig

    def check(self, user_id: str, name: str) -> bool:
        if self.statsig is None:
            return False
        try:
            return self.statsig.check_gate(StatsigUser(user_id), name)
        except Exception:
            log.exception("gate check failed: %s is false", name)
            return False

    def stop(self) -> None:
        if self.statsig is not None:
            self.statsig.shutdown().wait()
            self.statsig = None


gates = Gates()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gates.start()
    yield
    gates.stop()
    events.close()


app = FastAPI(title="gatewayz (example)", lifespan=lifespan)


def current_user(authorization: Annotated[str | None, Header()] = None) -> str | None:
    """The authenticated user's id, None without credentials; 401 for a key we do not know."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    user = API_KEYS.get(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise HTTPException(401, "invalid API key")
    return user


User = Annotated[str | None, Depends(current_user)]


def not_recorded(message: str) -> JSONResponse:
    # The reason (refused by Statsig's rules, or the log not writable) is in the server log.
    return JSONResponse({"success": False, "message": message}, status_code=503, headers={"Retry-After": "1"})


@app.post("/v1/analytics/events")
def log_event(event: AnalyticsEvent, user: User) -> Any:
    user_id = user or event.user_id or "anonymous"
    if not events.log_event(user_id, event.event_name, event.value, event.metadata):
        return not_recorded(f"Event '{event.event_name}' was not recorded")
    return {"success": True, "message": f"Event '{event.event_name}' logged successfully"}


@app.post("/v1/analytics/batch")
def log_batch_events(batch: list[AnalyticsEvent], user: User) -> Any:
    lines = [{"event_name": e.event_name, "user_id": user or e.user_id or "anonymous", "value": e.value,
              "metadata": e.metadata} for e in batch]
    if not events.log_events(lines):
        return not_recorded(f"{len(batch)} events were not recorded")
    return {"success": True, "message": f"{len(batch)} events logged successfully"}


@app.get("/v1/gates/{name}")
def check_gate(name: str, user: User, user_id: str | None = None) -> dict[str, Any]:
    uid = user or user_id or "anonymous"
    return {"gate": name, "user_id": uid, "value": gates.check(uid, name)}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
