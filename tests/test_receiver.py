"""The HTTP receiver, end to end: the real CLI (`receive`, `run --listen`) over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, append, fast_args, wait_until

EVENTS = "/v1/analytics/events"
BATCH = "/v1/analytics/batch"
NDJSON = "/v1/events"


def start(spawn: Callable[..., Cli], *args: str, cmd: str = "receive", env: dict[str, str] | None = None,
          key: str | None = None) -> tuple[Cli, str]:
    cli = spawn(cmd, "--listen", "127.0.0.1:0", *args, key=key, env=env)
    rec = cli.wait_log("receiver listening")
    return cli, f"http://{rec['address']}"


def lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "the log ends in a partial line"
    return [orjson.loads(line) for line in data.splitlines()]


def ev(seq: int, **extra: Any) -> dict[str, Any]:
    return {"event_name": "signup", "user_id": f"u{seq}", "value": seq, "metadata": {"seq": seq}, **extra}


def test_endpoints_append_the_callers_objects(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    cli, url = start(spawn, str(log))
    with httpx.Client(base_url=url) as c:
        r = c.post(EVENTS, json=ev(1, time="2026-01-02T03:04:05Z", extra_key={"kept": True}))
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "message": "1 event accepted", "accepted": 1}

        r = c.post(BATCH, json=[ev(2), ev(3, time=1760000000003)])
        assert r.status_code == 200 and r.json()["accepted"] == 2

        body = orjson.dumps(ev(4)) + b"\n\n" + orjson.dumps(ev(5)) + b"\r\n"
        r = c.post(NDJSON, content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200 and r.json()["accepted"] == 2

        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"ready": True, "reasons": [], "last_problem": None, "relay": {
            "enabled": True, "paths": ["/v1/log_event", "/v1/rgstr"], "accepted_keys": []}}
        metrics = c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'statsig_forwarder_receiver_requests_total{code="200",path="/v1/analytics/batch"} 1.0' in metrics.text
        assert "statsig_forwarder_receiver_events_total 5.0" in metrics.text
        assert c.get("/openapi.json").json()["paths"].keys() >= {EVENTS, BATCH, NDJSON, "/healthz", "/readyz"}
        assert c.get("/docs").status_code == 200

    got = lines(log)
    assert [e["metadata"]["seq"] for e in got] == [1, 2, 3, 4, 5]
    # The caller's fields are kept as sent, in their order; only a missing time is added.
    assert list(got[0]) == ["event_name", "user_id", "value", "metadata", "time", "extra_key"]
    assert got[0]["time"] == "2026-01-02T03:04:05Z" and got[0]["extra_key"] == {"kept": True}
    assert got[2]["time"] == 1760000000003
    now = time.time() * 1000
    for e in (got[1], got[3], got[4]):
        assert list(e)[-1] == "time" and now - 60_000 < e["time"] <= now
    assert cli.stop() == 0


def test_gzip_bodies_on_all_three_endpoints(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    _, url = start(spawn, str(log))
    gz = {"content-encoding": "gzip"}
    with httpx.Client(base_url=url) as c:
        assert c.post(EVENTS, content=gzip.compress(orjson.dumps(ev(1))), headers=gz).status_code == 200
        batch = gzip.compress(orjson.dumps([ev(2), ev(3)]))
        assert c.post(BATCH, content=batch, headers=gz).status_code == 200
        # two gzip members, as a client compressing piece by piece sends them
        nd = gzip.compress(orjson.dumps(ev(4)) + b"\n") + gzip.compress(orjson.dumps(ev(5)) + b"\n")
        r = c.post(NDJSON, content=nd, headers={**gz, "content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
    assert [e["metadata"]["seq"] for e in lines(log)] == [1, 2, 3, 4, 5]


def test_every_error_code_and_nothing_appended(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    _, url = start(spawn, str(log), "--max-body-bytes", "4096", "--max-batch-events", "3",
                   "--receiver-read-timeout", "0.5")
    with httpx.Client(base_url=url) as c:
        def post(path: str, content: bytes, **headers: str) -> httpx.Response:
            return c.post(path, content=content, headers=headers)

        r = post(EVENTS, b'{"event_name": ')
        assert r.status_code == 400 and r.json()["message"].startswith("invalid JSON")
        assert post(BATCH, b"[1,").status_code == 400
        r = post(NDJSON, orjson.dumps(ev(1)) + b"\n{oops\n")
        assert r.status_code == 400 and r.json()["errors"][0]["index"] == 1
        r = post(EVENTS, b"not gzip", **{"content-encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["message"]
        assert post(EVENTS, b"{}", **{"content-encoding": "br"}).status_code == 415

        assert c.get("/nope").status_code == 404
        assert c.post("/v1/nope", json=ev(1)).status_code == 404
        r = c.get(EVENTS)
        assert r.status_code == 405 and r.json() == {"success": False, "message": "Method Not Allowed"}
        assert c.delete("/healthz").status_code == 405

        big = orjson.dumps(ev(1, metadata={"pad": "x" * 5000}))
        r = post(EVENTS, big)
        assert r.status_code == 413 and "max_body_bytes" in r.json()["message"]
        r = c.post(EVENTS, content=iter([big[:3000], big[3000:]]))  # chunked: no Content-Length
        assert r.status_code == 413
        bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
        assert len(bomb) < 4096
        assert post(BATCH, bomb, **{"content-encoding": "gzip"}).status_code == 413
        r = c.post(BATCH, json=[ev(i) for i in range(4)])
        assert r.status_code == 413 and "max_batch_events" in r.json()["message"]

        r = c.post(BATCH, json=[{"event_name": ""}, ev(3, value={"no": 1}), 7])
        assert r.status_code == 422
        errors = r.json()["errors"]
        assert [e["index"] for e in errors] == [0, 1, 2]
        assert errors[0]["message"].startswith("event_name:")
        assert errors[1]["message"].startswith("value:")
        assert errors[2]["message"] == "not a JSON object: got number"
        r = c.post(EVENTS, json={"user_id": "u1"})
        assert r.status_code == 422
        assert r.json()["errors"] == [{"index": 0, "message": "event_name: Field required"}]
        assert c.post(BATCH, json=[ev(1), {"event_name": 5}]).status_code == 422  # all or nothing
        assert c.post(EVENTS, json=[ev(1)]).status_code == 422
        assert c.post(BATCH, json=ev(1)).status_code == 422
        assert c.post(BATCH, json=[]).status_code == 422

    # 408: a client that stops sending its body.
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"event".encode())
        s.settimeout(10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert not log.exists() or log.read_bytes() == b""


def test_slow_headers_and_silent_connections_are_closed(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    """Slowloris on the headers (uvicorn has no such timeout): closed after read_timeout."""
    log = tmp_path / "events.ndjson"
    cli, url = start(spawn, str(log), "--receiver-read-timeout", "1")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    slow = socket.create_connection((host, int(port)))
    slow.sendall(f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\n".encode())
    started = time.monotonic()
    with httpx.Client(base_url=url) as c:
        for i in range(3):  # well-behaved clients are served meanwhile
            slow.sendall(b"X-Slow: 1\r\n")
            assert c.post(EVENTS, json=ev(i)).status_code == 200
            time.sleep(0.2)
    for sock in (silent, slow):
        sock.settimeout(10)
        assert sock.recv(65536) == b"", "the server closed the connection"
        sock.close()
    assert time.monotonic() - started < 5
    assert len(lines(log)) == 3
    assert cli.stop() == 0


def test_bearer_token(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    token = "tok-" + "s3cr3t" * 5
    cli, url = start(spawn, str(log), env={"FORWARDER_RECEIVER_TOKEN": token})
    with httpx.Client(base_url=url) as c:
        r = c.post(EVENTS, json=ev(1))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post(EVENTS, json=ev(1), headers={"authorization": f"Bearer {token}x"}).status_code == 401
        assert c.post(EVENTS, json=ev(1), headers={"authorization": token}).status_code == 401
        assert c.post(EVENTS, json=ev(2), headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes need no token
    assert [e["metadata"]["seq"] for e in lines(log)] == [2]
    assert cli.stop() == 0
    assert token not in bytes(cli.stderr).decode()


def test_token_also_as_nested_env_and_toml(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text('[receiver]\ntoken = "from-toml"\nmax_batch_events = 2\n')
    _, url = start(spawn, "--config", str(config), str(tmp_path / "a.ndjson"))
    with httpx.Client(base_url=url) as c:
        auth = {"authorization": "Bearer from-toml"}
        assert c.post(BATCH, json=[ev(1)], headers=auth).status_code == 200
        assert c.post(BATCH, json=[ev(1)] * 3, headers=auth).status_code == 413
    _, url = start(spawn, str(tmp_path / "b.ndjson"), env={"FORWARDER_RECEIVER__TOKEN": "nested"})
    with httpx.Client(base_url=url) as c:
        assert c.post(EVENTS, json=ev(1), headers={"authorization": "Bearer nested"}).status_code == 200


def test_bad_receiver_config_fails_at_start(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli = spawn("receive", str(tmp_path / "x"), env={"FORWARDER_RECEIVER__NOPE": "1"})
    assert cli.wait() == 2 and b"unknown option 'receiver.nope'" in bytes(cli.stderr)
    cli = spawn("receive", "--listen", "nohost", str(tmp_path / "x"))
    assert cli.wait() == 2 and b"HOST:PORT" in bytes(cli.stderr)
    cli = spawn("receive", "--listen", "127.0.0.1:0", str(tmp_path / "*.ndjson"))
    assert cli.wait() == 2 and b"receiver.log_path: required" in bytes(cli.stderr)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cli = spawn("receive", "--listen", f"127.0.0.1:{port}", str(tmp_path / "x"))
        assert cli.wait() == 2 and f"cannot listen on 127.0.0.1:{port}".encode() in bytes(cli.stderr)


def test_50_concurrent_clients_each_event_once_and_whole(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    """50 clients post while the backend itself appends lines to the same file."""
    log = tmp_path / "events.ndjson"
    _, url = start(spawn, str(log), "--durability", "fsync")
    per_client = 12
    stop_backend = threading.Event()
    backend_written: list[int] = []

    def backend() -> None:  # another writer of the same file, one line per write
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        i = 0
        while not stop_backend.is_set():
            line = {"event_name": "backend", "metadata": {"b": i, "pad": "y" * 300}}
            os.write(fd, orjson.dumps(line) + b"\n")
            backend_written.append(i)
            i += 1
            time.sleep(0.001)
        os.close(fd)

    async def client(k: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url) as c:
            for j in range(per_client):
                seq = k * 1000 + j * 10
                if j % 3 == 0:
                    r = await c.post(EVENTS, json=ev(seq, metadata={"seq": seq, "pad": "x" * 2000}))
                elif j % 3 == 1:
                    r = await c.post(BATCH, json=[ev(seq + i) for i in range(5)])
                else:
                    body = b"".join(orjson.dumps(ev(seq + i)) + b"\n" for i in range(3))
                    r = await c.post(NDJSON, content=gzip.compress(body),
                                     headers={"content-encoding": "gzip"})
                assert r.status_code == 200, r.text
        return [k]

    async def all_clients() -> None:
        await asyncio.gather(*(client(k) for k in range(50)))

    writer = threading.Thread(target=backend)
    writer.start()
    try:
        asyncio.run(all_clients())
    finally:
        stop_backend.set()
        writer.join()
    got = lines(log)  # every line parses: nothing interleaved
    posted = sorted(e["metadata"]["seq"] for e in got if e["event_name"] == "signup")
    expected = sorted(k * 1000 + j * 10 + i for k in range(50) for j in range(per_client)
                      for i in range((1, 5, 3)[j % 3]))
    assert posted == expected
    assert [e["metadata"]["b"] for e in got if e["event_name"] == "backend"] == backend_written


def test_posted_event_reaches_statsig_through_the_tailer(
        spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    append(log, orjson.dumps(ev(1)) + b"\n")  # the backend's own line
    cli, url = start(spawn, str(log), *fast_args(fake, tmp_path / "state"), cmd="run", key=SECRET)
    with httpx.Client(base_url=url) as c:
        r = c.post(EVENTS, json={"event_name": "purchase", "user": {"userID": "u9", "email": "a@b.c"},
                                 "value": 9.5, "metadata": {"seq": 2, "sku": "X1"}})
        assert r.status_code == 200
        assert fake.wait_for(2)
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
    posted = next(e for e in fake.events if e["eventName"] == "purchase")
    assert posted["user"] == {"userID": "u9", "email": "a@b.c"}
    event_id = posted["metadata"].pop("forwarder_event_id")
    assert event_id.endswith(f":{len(log.read_bytes().splitlines(keepends=True)[0])}")  # line 2's offset
    assert posted["value"] == 9.5 and posted["metadata"] == {"seq": 2, "sku": "X1"}
    assert posted["time"] == lines(log)[1]["time"]
    assert cli.stop() == 0
    msgs = [rec["msg"] for rec in cli.logs()]
    assert msgs.index("receiver stopped") < msgs.index("stopped")  # receiver first, then the pipeline


def test_readyz_reports_auth_failure_and_metrics_listen(
        spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    """run --metrics-listen: health and metrics only; /readyz is 503 while Statsig refuses the key."""
    log = tmp_path / "events.ndjson"
    append(log, orjson.dumps(ev(1)) + b"\n")
    fake.expected_key = "another-key"
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"), "--metrics-listen", "127.0.0.1:0",
                "--shutdown-timeout", "0.5")
    url = "http://" + cli.wait_log("metrics listening")["address"]
    with httpx.Client(base_url=url) as c:
        assert c.get("/healthz").status_code == 200
        assert wait_until(lambda: c.get("/readyz").status_code == 503)
        assert "refuses the key" in c.get("/readyz").json()["reasons"][0]
        assert c.post(EVENTS, json=ev(1)).status_code == 404  # no receiver here
        assert "statsig_forwarder_receiver_requests_total" in c.get("/metrics").text
    assert cli.stop() == 0


def test_disk_full_503_nothing_partial_then_recovers(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    cli, url = start(spawn, str(log))
    with httpx.Client(base_url=url) as c:
        assert c.post(EVENTS, json=ev(1)).status_code == 200
        size = log.stat().st_size
        # The file may grow by only 40 more bytes: the next event is cut short by the kernel.
        resource.prlimit(cli.proc.pid, resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
        r = c.post(BATCH, json=[ev(2), ev(3)])
        assert r.status_code == 503, r.text
        assert "no space left" in r.json()["message"] and r.headers["retry-after"] == "1"
        assert c.post(EVENTS, json=ev(4)).status_code == 503
        assert log.stat().st_size == size  # the partial write was undone
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "failed" in ready.json()["reasons"][0]
        assert c.get("/healthz").status_code == 200

        unlimited = resource.RLIM_INFINITY
        resource.prlimit(cli.proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
        assert c.post(BATCH, json=[ev(2), ev(3)]).status_code == 200
        assert c.get("/readyz").status_code == 200
        counted = 'statsig_forwarder_receiver_requests_total{code="503",path="/v1/analytics/batch"} 1.0'
        assert counted in c.get("/metrics").text
    assert [e["metadata"]["seq"] for e in lines(log)] == [1, 2, 3]
    assert cli.wait_log("cannot append to receiver log")
    assert cli.wait_log("receiver log writable again")


def test_unwritable_log_503_then_recovers(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "not-yet" / "events.ndjson"
    _, url = start(spawn, str(log))
    with httpx.Client(base_url=url) as c:
        r = c.post(EVENTS, json=ev(1))
        assert r.status_code == 503 and "cannot append" in r.json()["message"]
        assert c.get("/readyz").status_code == 503
        log.parent.mkdir()
        assert c.post(EVENTS, json=ev(2)).status_code == 200
    assert [e["metadata"]["seq"] for e in lines(log)] == [2]


def test_log_rotated_under_the_receiver(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    """After a rename rotation the receiver appends to the new file at the path, not the old one."""
    log = tmp_path / "events.ndjson"
    _, url = start(spawn, str(log), "--durability", "write")
    with httpx.Client(base_url=url) as c:
        assert c.post(EVENTS, json=ev(1)).status_code == 200
        log.rename(tmp_path / "events.ndjson.1")
        assert c.post(EVENTS, json=ev(2)).status_code == 200
    assert [e["metadata"]["seq"] for e in lines(tmp_path / "events.ndjson.1")] == [1]
    assert [e["metadata"]["seq"] for e in lines(log)] == [2]


def test_sigterm_finishes_and_exits_zero(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    cli, url = start(spawn, str(log))
    assert httpx.post(url + EVENTS, json=ev(1)).status_code == 200
    cli.signal(signal.SIGTERM)
    assert cli.wait() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz")
