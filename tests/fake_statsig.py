"""A local fake of Statsig's API, built from docs/statsig-protocol.md and docs/fake-statsig.md.

Speaks the real wire protocol: `POST .../log_event` and `.../rgstr` with gzip, zstd or plain
JSON bodies (answer 202 `{"success": true}`), `GET .../download_config_specs/...` for
the core SDKs' initialize (`specs`; under `/legacy/` the older list format the legacy
`statsig` SDK reads), `POST .../initialize` for client SDKs, `POST .../get_id_lists`,
`POST .../sdk_exception` (ignored). It records each request's
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
import zstandard

SPECS = {
    "has_updates": True,
    "time": 1,
    "feature_gates": {},
    "dynamic_configs": {},
    "layer_configs": {},
    "experiment_to_layer": {},
    "condition_map": {},
}

# What the real SDKs need to evaluate gates and log exposures (docs/fake-statsig.md):
# `relay_gate` passes for everyone through a rule that requires `relay_child`, so checking
# it logs a gate exposure with one secondary exposure; `relay_config` logs config exposures.
_RULE = {"passPercentage": 100, "idType": "userID", "returnValue": True}
SDK_SPECS: dict[str, Any] = {
    "has_updates": True,
    "time": 1700000000000,
    "feature_gates": {
        "relay_child": {"name": "relay_child", "type": "feature_gate", "entity": "feature_gate", "salt": "c",
                        "enabled": True, "idType": "userID", "defaultValue": False,
                        "rules": [{**_RULE, "name": "child", "id": "rule_child", "salt": "c1",
                                   "conditions": ["public"]}]},
        "relay_gate": {"name": "relay_gate", "type": "feature_gate", "entity": "feature_gate", "salt": "g",
                       "enabled": True, "idType": "userID", "defaultValue": False,
                       "rules": [{**_RULE, "name": "parent", "id": "rule_parent", "salt": "g1",
                                  "conditions": ["pass_child"]}]},
    },
    "dynamic_configs": {
        "relay_config": {"name": "relay_config", "type": "dynamic_config", "entity": "dynamic_config", "salt": "d",
                         "enabled": True, "idType": "userID", "defaultValue": {"color": "grey"},
                         "rules": [{**_RULE, "name": "blue", "id": "rule_blue", "salt": "d1",
                                    "conditions": ["public"], "returnValue": {"color": "blue"}}]},
    },
    "layer_configs": {},
    "experiment_to_layer": {},
    "condition_map": {
        "public": {"type": "public", "idType": "userID"},
        "pass_child": {"type": "pass_gate", "targetValue": "relay_child", "idType": "userID"},
    },
}
# The same specs in the older list format the legacy `statsig` SDK downloads (conditions inline).
LEGACY_SPECS: dict[str, Any] = {
    "has_updates": True,
    "time": SDK_SPECS["time"],
    "feature_gates": [
        {**spec,
         "rules": [{**rule, "conditions": [SDK_SPECS["condition_map"][c] for c in rule["conditions"]]}
                   for rule in spec["rules"]]}
        for spec in SDK_SPECS["feature_gates"].values()
    ],
    "dynamic_configs": [
        {**spec, "rules": [{**rule, "conditions": [SDK_SPECS["condition_map"][c] for c in rule["conditions"]]}
                           for rule in spec["rules"]]}
        for spec in SDK_SPECS["dynamic_configs"].values()
    ],
    "layer_configs": [],
}
# What a client SDK (@statsig/js-client) gets from POST /v1/initialize for any user.
_CHILD_EXPOSURE = {"gate": "relay_child", "gateValue": "true", "ruleID": "rule_child"}
CLIENT_INITIALIZE: dict[str, Any] = {
    "has_updates": True,
    "time": SDK_SPECS["time"],
    "hash_used": "none",
    "feature_gates": {"relay_gate": {"name": "relay_gate", "value": True, "rule_id": "rule_parent",
                                     "id_type": "userID", "secondary_exposures": [_CHILD_EXPOSURE]}},
    "dynamic_configs": {"relay_config": {"name": "relay_config", "value": {"color": "blue"},
                                         "rule_id": "rule_blue", "id_type": "userID", "group": "rule_blue",
                                         "is_device_based": False, "secondary_exposures": []}},
    "layer_configs": {},
    "derived_fields": {},
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
    specs: dict[str, Any] = field(default_factory=lambda: SPECS)  # served to core SDKs (SDK_SPECS: gates)
    latency: float = 0.0  # seconds added before every log_event answer (a slow sink)
    jitter: float = 0.0  # plus up to this many random seconds (answers finish out of order)
    reject_if: Callable[[dict[str, Any]], bool] | None = None  # 400 for batches holding such an event
    requests: list[Request] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    other_requests: list[tuple[str, str]] = field(default_factory=list)
    # Dynamic configs served in the config specs (set_dynamic_config); empty: SPECS as is.
    dynamic_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    condition_map: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs_time: int = 1
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

    # -- config specs (statsig-python-core evaluates them; docs/fake-statsig.md) --------
    def set_dynamic_config(self, name: str, default: Any,
                           targets: list[tuple[str, list[str], Any]] | None = None) -> None:
        """Serve dynamic config `name`: `default` for every user, except users whose field
        (userID, or a `custom` key) is in the list get that target's value (first target wins).
        Each call publishes a newer `time`, which the SDK picks up at its next sync."""
        rules = []
        with self._lock:
            for i, (user_field, values, value) in enumerate(targets or []):
                cond = f"{name}-cond-{i}"
                self.condition_map[cond] = {"type": "user_field", "field": user_field, "operator": "any",
                                            "targetValue": list(values), "idType": "userID"}
                rules.append({"name": f"{name}-rule-{i}", "id": f"{name}-rule-{i}", "passPercentage": 100,
                              "conditions": [cond], "idType": "userID", "returnValue": value})
            self.dynamic_configs[name] = {"type": "dynamic_config", "entity": "dynamic_config", "salt": name,
                                          "enabled": True, "idType": "userID", "defaultValue": default,
                                          "rules": rules}
            self.specs_time += 1

    def remove_dynamic_config(self, name: str) -> None:
        with self._lock:
            self.dynamic_configs.pop(name, None)
            self.specs_time += 1

    def specs_payload(self) -> dict[str, Any]:
        with self._lock:
            if not self.dynamic_configs and self.specs_time == 1:
                return self.specs
            return {**self.specs, "time": self.specs_time,
                    "dynamic_configs": {**self.specs["dynamic_configs"], **self.dynamic_configs},
                    "condition_map": {**self.specs["condition_map"], **self.condition_map}}

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
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Access-Control-Allow-Origin: *\r\n\r\n"  # browser SDKs (js-client's initialize) call it from pages
        ).encode()
        self.wfile.write(head + body)  # one write: no small-write/Nagle stalls

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        encoding = self.headers.get("content-encoding", "").lower()
        if encoding == "gzip" or (not encoding and "gz=1" in self.path):
            raw = gzip.decompress(raw)
        elif encoding == "zstd":
            raw = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        return raw

    def do_OPTIONS(self) -> None:  # a CORS preflight, answered for any origin as Statsig's API answers pages
        self.wfile.write(b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\n"
                         b"Access-Control-Allow-Methods: GET, POST\r\nAccess-Control-Allow-Headers: *\r\n"
                         b"Access-Control-Max-Age: 600\r\nContent-Length: 0\r\n\r\n")

    def do_GET(self) -> None:
        owner = self.owner
        with owner._lock:
            owner.other_requests.append(("GET", self.path))
        if "download_config_specs" in self.path:
            specs = LEGACY_SPECS if self.path.startswith("/legacy/") else owner.specs_payload()
            self._reply(200, orjson.dumps(specs))
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
            if path.endswith("/initialize"):
                self._reply(200, orjson.dumps({**CLIENT_INITIALIZE, "time": int(time.time() * 1000)}))
            elif path.endswith("/get_id_lists"):
                self._reply(200, b"{}")
            else:
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
