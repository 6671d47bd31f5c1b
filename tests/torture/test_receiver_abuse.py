"""The HTTP receiver under abuse: slow bodies, 1000 parallel connections, oversized and malformed
bodies, wrong tokens. Meanwhile a well-behaved client is served correctly, every accepted event
reaches Statsig, and nothing of the abuse is ever appended."""

from __future__ import annotations

import asyncio
import collections
import gzip
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from kit import SCALE, Tally, fast_args, rss_kib, wait_until

EVENTS = "/v1/analytics/events"
BATCH = "/v1/analytics/batch"
NDJSON = "/v1/events"
TOKEN = "tok-torture-0123456789abcdef"
MAX_BODY = 64 * 1024


def ev(kind: str, seq: int) -> dict[str, Any]:
    return {"event_name": kind, "user_id": f"u{seq}", "value": seq, "metadata": {"kind": kind, "seq": seq}}


def request(path: str, body: bytes, token: str | None = TOKEN, **headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: torture", "Connection: close", f"Content-Length: {len(body)}",
            "Content-Type: application/json"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(host: str, port: int, data: bytes, drip: float = 0.0, timeout: float = 30.0) -> int:
    """Send a raw request (byte by byte every `drip` s if set); the answer's status, 0 if none."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return -1
    try:
        if drip:
            head, _, body = data.partition(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n")
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                if reader.at_eof():
                    break
                await asyncio.sleep(drip)
        else:
            writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    except (OSError, TimeoutError, IndexError, ValueError):
        return 0
    finally:
        writer.close()


def abusive_requests(rng: random.Random) -> list[tuple[str, bytes]]:
    """(what, raw request): all must be refused; none may append anything."""
    abuse = orjson.dumps(ev("abuse", 0))
    out: list[tuple[str, bytes]] = []
    for _ in range(20):
        out.append(("no token", request(EVENTS, abuse, token=None)))
        out.append(("wrong token", request(EVENTS, abuse, token=TOKEN[:-1] + "X")))
        out.append(("token of another scheme", request(EVENTS, abuse, token=None, authorization=f"Basic {TOKEN}")))
    big = orjson.dumps(ev("abuse", 1) | {"metadata": {"pad": "x" * MAX_BODY}})
    bomb = gzip.compress(b"[" + b" " * (50 * MAX_BODY) + b"]")
    for _ in range(10):
        out.append(("oversized", request(EVENTS, big)))
        out.append(("gzip bomb", request(BATCH, bomb, content_encoding="gzip")))
        out.append(("oversized batch", request(BATCH, orjson.dumps([ev("abuse", i) for i in range(2000)]))))
    for _ in range(30):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        out.append(("garbage", request(EVENTS, garbage)))
        out.append(("garbage gzip", request(EVENTS, garbage, content_encoding="gzip")))
        out.append(("garbage ndjson", request(NDJSON, abuse + b"\n" + garbage.replace(b"\n", b""))))
    out += [
        ("truncated JSON", request(EVENTS, abuse[:-3])),
        ("NUL bytes", request(EVENTS, abuse.replace(b'"abuse"', b'"ab\x00use"'))),
        ("invalid UTF-8", request(EVENTS, abuse.replace(b'"abuse"', b'"ab\xffuse"'))),
        ("deep nesting", request(EVENTS, b'{"event_name":"abuse","metadata":{"x":' + b"[" * 5000 + b"]" * 5000
                                 + b"}}")),
        ("NaN", request(EVENTS, b'{"event_name":"abuse","value":NaN}')),
        ("brotli", request(EVENTS, abuse, content_encoding="br")),
        ("all or nothing", request(BATCH, orjson.dumps([ev("abuse", 2), {"event_name": 5}]))),
        ("lying Content-Length", request(EVENTS, abuse).replace(b"Content-Length: ", b"Content-Length: 9")),
    ]
    return out


def test_receiver_abuse_leaves_well_behaved_clients_served(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    log = tmp_path / "events.ndjson"
    cli = spawn("run", "--listen", "127.0.0.1:0", str(log), *fast_args(fake, tmp_path / "state"),
                "--max-body-bytes", str(MAX_BODY), "--receiver-read-timeout", "1",
                env={"FORWARDER_RECEIVER_TOKEN": TOKEN})
    address = cli.wait_log("receiver listening")["address"]
    host, port = address.rsplit(":", 1)
    url = f"http://{address}"
    base_rss = rss_kib(cli.proc.pid)

    good_status: list[int] = []
    stop_good = threading.Event()

    def good_client() -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            seq = 0
            while not stop_good.wait(0.02):
                good_status.append(c.post(EVENTS, json=ev("good", seq)).status_code)
                seq += 1

    good = threading.Thread(target=good_client, name="good-client", daemon=True)
    good.start()
    rng = random.Random(int(os.environ.get("TORTURE_SEED", "7")))
    parallel = 1000 * SCALE

    async def abuse() -> tuple[list[int], list[int], list[tuple[str, int]]]:
        slow = [exchange(host, int(port), request(EVENTS, orjson.dumps(ev("abuse", i))), drip=0.3)
                for i in range(100)]
        # Open every parallel connection first, then have them all send at once.
        parallel_requests = [request(EVENTS, orjson.dumps(ev("parallel", i))) for i in range(parallel)]
        bad = abusive_requests(rng)
        results = await asyncio.gather(
            asyncio.gather(*slow),
            asyncio.gather(*(exchange(host, int(port), r) for r in parallel_requests)),
            asyncio.gather(*(exchange(host, int(port), r) for _, r in bad)),
        )
        return results[0], results[1], list(zip((w for w, _ in bad), results[2], strict=True))

    slow_status, parallel_status, bad_status = asyncio.run(abuse())
    peak_rss = rss_kib(cli.proc.pid)
    time.sleep(0.5)
    stop_good.set()
    good.join(30)

    # The abusers were refused, each with its documented status, and never with a 2xx.
    assert all(s in (0, 408) for s in slow_status), collections.Counter(slow_status)
    expected = {"no token": 401, "wrong token": 401, "token of another scheme": 401, "oversized": 413,
                "gzip bomb": 413, "oversized batch": 413, "brotli": 415, "all or nothing": 422, "NaN": 400,
                "truncated JSON": 400, "lying Content-Length": 408}
    for what, status in bad_status:
        assert status != 200 and status < 500, (what, status)
        if what in expected:
            assert status == expected[what], (what, status)
    # Everyone else was served: the well-behaved client throughout, and all 1000 at once.
    assert good_status and set(good_status) == {200}, collections.Counter(good_status)
    assert collections.Counter(parallel_status) == {200: parallel}, collections.Counter(parallel_status)
    with httpx.Client(base_url=url) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json()["ready"] is True

    # The log holds exactly the accepted events, each once, and Statsig gets all of them.
    appended = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    kinds = collections.Counter(e["event_name"] for e in appended)
    assert kinds == {"good": len(good_status), "parallel": parallel}, kinds
    want = {("good", i) for i in range(len(good_status))} | {("parallel", i) for i in range(parallel)}
    assert {(e["event_name"], e["metadata"]["seq"]) for e in appended} == want
    assert wait_until(lambda: fake.event_count >= len(want), timeout=60)
    time.sleep(0.5)
    got = collections.Counter((e["eventName"], e["metadata"]["seq"]) for e in fake.events)
    assert set(got) == want
    assert cli.stop() == 0

    refused = len(slow_status) + len(bad_status)
    tally.written = len(want) + refused
    tally.delivered = len(got)
    tally.duplicated = sum(got.values()) - len(got)
    tally.note = (f"{len(good_status)} well-behaved + {parallel} parallel accepted; {refused} abusive refused "
                  f"(slow bodies, bad tokens, oversized, malformed); RSS {base_rss // 1024} -> "
                  f"{peak_rss // 1024} MiB")


def test_kill9_while_clients_post_loses_no_acknowledged_event(fake, spawn, tmp_path: Path, tally: Tally) -> None:
    """A 200 from the receiver means the event is in the log: kill -9 never loses an acknowledged one."""
    log = tmp_path / "events.ndjson"
    args = ["--listen", "127.0.0.1:0", str(log), *fast_args(fake, tmp_path / "state")]
    acked: set[int] = set()
    refused = 0
    current = {"url": ""}
    stop = threading.Event()

    def client() -> None:
        nonlocal refused
        seq = 0
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(current["url"] + BATCH, json=[ev("acked", seq + i) for i in range(10)])
                except httpx.HTTPError:
                    refused += 1
                    time.sleep(0.01)
                    continue
                if r.status_code == 200:
                    acked.update(range(seq, seq + 10))
                seq += 10

    kills = 5 * SCALE
    worker = threading.Thread(target=client, name="poster", daemon=True)
    for i in range(kills + 1):
        cli = spawn("run", *args)
        current["url"] = "http://" + cli.wait_log("receiver listening")["address"]
        if i == 0:
            worker.start()
        if i == kills:
            break
        time.sleep(random.uniform(0.3, 1.0))
        cli.kill9()
    stop.set()
    worker.join(30)
    assert acked
    assert wait_until(lambda: {e["metadata"]["seq"] for e in fake.events} >= acked, timeout=60), (
        sorted(acked - {e["metadata"]["seq"] for e in fake.events})[:10])
    assert cli.stop() == 0
    got = collections.Counter(e["metadata"]["seq"] for e in fake.events)
    tally.written, tally.delivered = len(acked), len(set(got) & acked)
    tally.duplicated = sum(got.values()) - len(got)
    tally.note = f"{kills} kills of run --listen while posting; {refused} requests failed while down (retried)"
