"""A local fake of Statsig's API, built from ../shared/statsig-wire.md.

Speaks the real wire protocol: `POST .../log_event` and `.../rgstr` with gzip or plain
JSON bodies (answer 202 `{"success": true}`), `GET .../download_config_specs/...` for
the SDK's initialize, `POST .../sdk_exception` (ignored). It records each request's
decoded events and headers, and injects faults on demand: a status code for the next N
requests, `{"success": false}` with 200, a hang, a closed connection, or a refused port
(`stop()` then `start()` on the same port). Each response goes out in one write.

Run standalone:  python tests/fake_statsig.py --port 8787
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

SPECS = {
    "has_updates": True,
    "time": 1,
    "feature_gates": {},
    "dynamic_configs": {},
    "layer_configs": {},
    "experiment_to_layer": {},
    "condition_map": {},
}


@dataclass
class Request:
    """One log_event request as received."""

    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]]
    status: int
    received: float = field(default_factory=time.time)  # when its body was read (epoch s)


@dataclass
class Fault:
    kind: str  # status | success_false | hang | close
    remaining: int
    status: int = 503
    seconds: float = 0.0


@dataclass
class FakeStatsig:
    """The server; `url` is the base to give as statsig_api (ends in /v1)."""

    host: str = "127.0.0.1"
    port: int = 0
    keep_events: bool = True
    expected_key: str | None = None
    latency: float = 0.0  # seconds added before every log_event answer (a slow sink)
    jitter: float = 0.0  # plus up to this many random seconds (answers finish out of order)
    reject_if: Callable[[dict[str, Any]], bool] | None = None  # 400 for batches holding such an event
    requests: list[Request] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    other_requests: list[tuple[str, str]] = field(default_factory=list)
    _faults: deque[Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    # -- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeStatsig:
        fake = self
        stopping = threading.Event()

        class Handler(_Handler):
            owner = fake
            stopped = stopping

        server = _Server((self.host, self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        self._stopping = stopping
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-statsig", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and live connections: new connections are refused."""
        if self._server is not None:
            self._stopping.set()  # hung requests end with their connection
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()
            self._server = None

    def __enter__(self) -> FakeStatsig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503) -> None:
        self._add(Fault("status", n, status=status))

    def success_false_next(self, n: int) -> None:
        self._add(Fault("success_false", n))

    def hang_next(self, n: int, seconds: float) -> None:
        self._add(Fault("hang", n, seconds=seconds))

    def close_next(self, n: int) -> None:
        self._add(Fault("close", n))

    def fail_always(self, status: int = 503) -> None:
        self._add(Fault("status", 10**12, status=status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            while self._faults:
                fault = self._faults[0]
                if fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
                self._faults.popleft()
            return None

    # -- what arrived --------------------------------------------------------------------
    def _record(self, request: Request) -> None:
        with self._changed:
            if request.status < 300:
                self.event_count += len(request.events)
                if self.keep_events:
                    self.events.extend(request.events)
                else:
                    request.events = []
            self.requests.append(request)
            self._changed.notify_all()

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        """Block until at least n accepted events arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.event_count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def accepted_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.status < 300]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeStatsig
    stopped: threading.Event  # the server this handler belongs to was stopped
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)  # one write: no small-write/Nagle stalls

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("content-encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def do_GET(self) -> None:
        owner = self.owner
        with owner._lock:
            owner.other_requests.append(("GET", self.path))
        if "download_config_specs" in self.path:
            self._reply(200, orjson.dumps(SPECS))
        elif self.path == "/_fake/stats":  # for benchmarks running the fake in another process
            self._reply(200, orjson.dumps({"events": owner.event_count, "requests": len(owner.requests)}))
        else:
            self._reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        owner = self.owner
        try:
            body = self._body()
        except (OSError, ValueError) as e:
            self._reply(400, orjson.dumps({"error": f"bad body: {e}"}))
            return
        path = self.path.split("?")[0]
        if not (path.endswith("/log_event") or path.endswith("/rgstr")):
            with owner._lock:
                owner.other_requests.append(("POST", self.path))
            self._reply(202 if path.endswith("/sdk_exception") else 404, b'{"success":true}')
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if owner.expected_key is not None and headers.get("statsig-api-key") != owner.expected_key:
            owner._record(Request(path, headers, [], 401))
            self._reply(401, b'{"error":"invalid key"}')
            return
        if owner.latency or owner.jitter:
            time.sleep(owner.latency + random.uniform(0, owner.jitter))
        fault = owner._take_fault()
        if fault is not None:
            if fault.kind == "close":
                owner._record(Request(path, headers, [], 599))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "hang":
                owner._record(Request(path, headers, [], 598))
                self.stopped.wait(fault.seconds)
                self.close_connection = True
                return
            if fault.kind == "status":
                owner._record(Request(path, headers, [], fault.status))
                self._reply(fault.status, orjson.dumps({"error": "injected fault"}))
                return
            if fault.kind == "success_false":
                owner._record(Request(path, headers, [], 299))
                self._reply(200, b'{"success":false}')
                return
        try:
            doc = orjson.loads(body)
            events = doc["events"]
            if not isinstance(events, list):
                raise ValueError("events is not a list")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            owner._record(Request(path, headers, [], 400))
            self._reply(400, orjson.dumps({"error": f"bad payload: {e}"}))
            return
        if owner.reject_if is not None and any(owner.reject_if(e) for e in events):
            owner._record(Request(path, headers, [], 400))
            self._reply(400, b'{"error":"invalid event in batch"}')
            return
        owner._record(Request(path, headers, events, 202))
        self._reply(202, b'{"success":true}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--quiet", action="store_true", help="print only the URL")
    args = parser.parse_args()
    fake = FakeStatsig(args.host, args.port, keep_events=False).start()
    print(f"fake Statsig listening on {fake.url}", flush=True)
    try:
        while True:
            time.sleep(5)
            if not args.quiet:
                print(f"events accepted: {fake.event_count}", flush=True)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
