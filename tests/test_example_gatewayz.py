"""examples/gatewayz: the seed backend in miniature, writing events with forwarder.client.

- Under real uvicorn with 4 worker processes, 8 concurrent clients post 20,000 events through both
  routes while real logrotate (`create`) rotates the file three times and `statsig-forwarder run`
  follows it: every event answered `success: true` reaches the fake Statsig exactly once, with the
  user the seed's order gives it; nothing dead-lettered, no torn line.
- Its routes in process: the user's order (authenticated, body, anonymous), 401 for an unknown key,
  503 `success: false` for an event not written (Statsig's rules, unwritable log), and gates
  false without a key; under uvicorn with a key, gates from statsig-python-core (fake specs).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from fake_statsig import SDK_SPECS
from fastapi.testclient import TestClient
from kit import SECRET, assert_exactly_once, cli_env, logs_dir, run, seqs, wait_until

from forwarder.client import EventLog

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gatewayz"
KEYS = {"key-alice": "alice", "key-bob": "bob"}
KEYS_ENV = ",".join(f"{k}={u}" for k, u in KEYS.items())

EVENTS = 20_000
CLIENTS = 8
BATCH = 50  # half the events go one per request, half in batches of this many


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn(log: Path, workers: int, **env: str) -> Iterator[int]:
    """The example under `uvicorn app:app --workers N`; yields its port once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(EXAMPLE), "--workers", str(workers),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=cli_env(GATEWAYZ_EVENT_LOG=str(log), GATEWAYZ_API_KEYS=KEYS_ENV, **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_until(lambda: _answers(port) or proc.poll() is not None, 60), "uvicorn did not start"
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn stops its workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class Client(threading.Thread):
    """Posts its share of the events on one keep-alive connection; records what was answered success
    and the user each event should be attributed to."""

    def __init__(self, port: int, n: int, first: int, answered: collections.Counter[int],
                 expected: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.port, self.n, self.first = port, n, first
        self.answered, self.expected = answered, expected  # shared; each thread updates its own keys
        self.failures: list[str] = []

    def doc(self, seq: int) -> dict[str, Any]:
        return {"event_name": "chat_message_sent", "value": "gpt-4o" if seq % 2 else seq,
                "metadata": {"seq": seq, "client": self.first}}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        half = self.n // 2
        try:
            for seq in range(self.first, self.first + half):  # one event per request
                doc, headers = self.doc(seq), {"Content-Type": "application/json"}
                if seq % 3 == 0:  # authenticated: the body's user_id is not used
                    key = "key-alice" if seq % 2 else "key-bob"
                    headers["Authorization"] = f"Bearer {key}"
                    doc["user_id"] = "not-used"
                    self.expected[seq] = KEYS[key]
                elif seq % 3 == 1:
                    doc["user_id"] = self.expected[seq] = f"u{seq % 101}"
                else:
                    self.expected[seq] = "anonymous"
                self.post(conn, "/v1/analytics/events", orjson.dumps(doc), headers, [seq])
            for start in range(self.first + half, self.first + self.n, BATCH):  # batches
                batch = list(range(start, min(start + BATCH, self.first + self.n)))
                headers = {"Content-Type": "application/json"}
                auth = KEYS["key-bob"] if (start // BATCH) % 3 == 0 else None
                if auth:
                    headers["Authorization"] = "Bearer key-bob"
                docs = []
                for seq in batch:
                    doc = self.doc(seq)
                    if seq % 2:
                        doc["user_id"] = f"u{seq % 101}"
                    self.expected[seq] = auth or doc.get("user_id") or "anonymous"
                    docs.append(doc)
                self.post(conn, "/v1/analytics/batch", orjson.dumps(docs), headers, batch)
        except Exception as e:
            self.failures.append(repr(e))
        finally:
            conn.close()

    def post(self, conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str],
             batch: list[int]) -> None:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        answer = orjson.loads(resp.read())
        if resp.status == 200 and answer.get("success") is True:
            for s in batch:
                self.answered[s] += 1
        else:
            self.failures.append(f"{path} {resp.status} {answer}")


def test_four_workers_eight_clients_logrotate_create_and_the_forwarder(spawn, fake, tmp_path):
    logs = logs_dir(tmp_path)
    log = logs / "events.ndjson"
    os.close(os.open(log, os.O_CREAT | os.O_WRONLY, 0o640))
    state = tmp_path / "state"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 100\n  missingok\n  create\n}}\n")
    conf.chmod(0o644)

    def logrotate() -> None:
        done = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()

    cli = run(spawn, fake, state, str(log))  # README: `statsig-forwarder run <log>`
    answered: collections.Counter[int] = collections.Counter()
    expected: dict[int, str] = {}
    started = time.monotonic()
    with uvicorn(log, workers=4) as port:
        per = EVENTS // CLIENTS
        clients = [Client(port, per, i * per, answered, expected) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        rotations = 0
        for share in (0.25, 0.5, 0.75):  # three rotations while the clients post
            def reached(share: float = share) -> bool:
                return len(answered) >= EVENTS * share or not any(c.is_alive() for c in clients)

            wait_until(reached, 60, 0.01)
            assert any(c.is_alive() for c in clients), "the clients finished before logrotate ran"
            logrotate()
            rotations += 1
        for c in clients:
            c.join(120)
        posting = time.monotonic() - started
    failures = [f for c in clients for f in c.failures]
    assert not failures, failures[:5]
    assert sorted(answered) == list(range(EVENTS)) and max(answered.values()) == 1

    assert_exactly_once(fake, range(EVENTS))
    assert cli.stop() == 0
    dead = state / "dead-letter.ndjson"
    assert not dead.exists() or dead.read_bytes() == b"", dead.read_text()[:2000]

    # Every file holds whole lines only, each event once across the rotated files.
    files = sorted(logs.iterdir())
    assert rotations == 3 and len(files) == 4, files
    on_disk: collections.Counter[int] = collections.Counter()
    for f in files:
        data = f.read_bytes()
        assert data.endswith(b"\n"), f
        for raw in data.splitlines():
            on_disk[orjson.loads(raw)["metadata"]["seq"]] += 1
    assert sorted(on_disk) == list(range(EVENTS)) and max(on_disk.values()) == 1
    assert all(f.stat().st_size > 0 for f in files)  # each rotation happened while events flowed

    # The user of each event, in the seed's order: authenticated, else the body's user_id, else anonymous.
    users = {e["metadata"]["seq"]: e["user"]["userID"] for e in fake.events}
    wrong = [(seq, users[seq], expected[seq]) for seq in range(EVENTS) if users[seq] != expected[seq]]
    assert not wrong, wrong[:5]
    assert {"alice", "bob", "anonymous", "u1"} <= set(users.values())
    print(f"gatewayz: {EVENTS} events from {CLIENTS} clients through 4 uvicorn workers in {posting:.1f} s, "
          f"{rotations} logrotate rotations, {len(seqs(fake))} delivered once each")


# -- the routes in process -----------------------------------------------------------------------
def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh import of examples/gatewayz/app.py (it reads its environment at import, as uvicorn's workers do)."""
    spec = importlib.util.spec_from_file_location("gatewayz_example_app", EXAMPLE / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # pydantic resolves the models' annotations there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(tmp_path, monkeypatch) -> Iterator[tuple[TestClient, ModuleType, Path]]:
    monkeypatch.setenv("GATEWAYZ_API_KEYS", KEYS_ENV)
    monkeypatch.setenv("GATEWAYZ_EVENT_LOG", str(tmp_path / "events.ndjson"))
    monkeypatch.delenv("STATSIG_SERVER_SECRET_KEY", raising=False)
    module = load_example(monkeypatch)
    with TestClient(module.app) as client:
        yield client, module, tmp_path / "events.ndjson"


def lines(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in log.read_bytes().splitlines()]


def test_routes_answer_the_seeds_json_with_the_seeds_user_order(example):
    client, _, log = example
    r = client.post("/v1/analytics/events", json={"event_name": "a", "user_id": "u1", "value": "v",
                                                   "metadata": {"k": 1}})
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Event 'a' logged successfully"}
    client.post("/v1/analytics/events", json={"event_name": "b", "user_id": "u1"},
                headers={"Authorization": "Bearer key-bob"})
    client.post("/v1/analytics/events", json={"event_name": "c"})
    r = client.post("/v1/analytics/batch", json=[{"event_name": "d", "user_id": "u2"}, {"event_name": "e"}],
                    headers={"Authorization": "Bearer key-alice"})
    assert r.json() == {"success": True, "message": "2 events logged successfully"}
    client.post("/v1/analytics/batch", json=[{"event_name": "f", "user_id": "u3"}, {"event_name": "g", "value": 2}])
    got = [(x["event_name"], x["user_id"], x.get("value")) for x in lines(log)]
    assert got == [("a", "u1", "v"), ("b", "bob", None), ("c", "anonymous", None), ("d", "alice", None),
                   ("e", "alice", None), ("f", "u3", None), ("g", "anonymous", 2)]
    assert lines(log)[0]["metadata"] == {"k": 1}


def test_unknown_key_bad_events_and_an_unwritable_log(example, tmp_path, caplog):
    client, module, log = example
    r = client.post("/v1/analytics/events", json={"event_name": "a"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.post("/v1/analytics/events", json={"event_name": "a#b"})
    assert r.status_code == 503 and r.json() == {"success": False, "message": "Event 'a#b' was not recorded"}
    r = client.post("/v1/analytics/batch", json=[{"event_name": "ok"}, {"event_name": "bad{"}])
    assert r.status_code == 503 and r.json()["success"] is False
    assert client.post("/v1/analytics/events", json={"value": 1}).status_code == 422
    module.events = EventLog(tmp_path / "missing" / "events.ndjson")
    r = client.post("/v1/analytics/events", json={"event_name": "lost", "user_id": "u7"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "[Fallback] Analytics event: lost (user: u7)" in caplog.text
    assert not log.exists() or log.read_bytes() == b""


def test_gates_are_false_without_a_key(example):
    client, module, _ = example
    assert module.gates.statsig is None
    r = client.get("/v1/gates/relay_gate", params={"user_id": "u1"})
    assert r.json() == {"gate": "relay_gate", "user_id": "u1", "value": False}


def test_gates_come_from_statsig_python_core_with_a_key(fake, tmp_path):
    """Under uvicorn with a key, the SDK downloads the fake's specs: the gate passes, and its
    exposure reaches the fake through the SDK's own logging (STATSIG_LOG_EVENT_URL)."""
    fake.specs = SDK_SPECS
    with uvicorn(tmp_path / "events.ndjson", workers=1, STATSIG_SERVER_SECRET_KEY=SECRET,
                 STATSIG_SPECS_URL=f"{fake.url}/download_config_specs",
                 STATSIG_LOG_EVENT_URL=f"{fake.url}/log_event") as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/gates/relay_gate?user_id=u1")
        assert orjson.loads(conn.getresponse().read()) == {"gate": "relay_gate", "user_id": "u1", "value": True}
        conn.request("GET", "/v1/gates/no_such_gate", headers={"Authorization": "Bearer key-bob"})
        assert orjson.loads(conn.getresponse().read()) == {"gate": "no_such_gate", "user_id": "bob", "value": False}
        conn.close()
    # shutdown flushes the SDK's queue
    assert wait_until(lambda: any(e.get("eventName") == "statsig::gate_exposure" for e in fake.events), 10)
