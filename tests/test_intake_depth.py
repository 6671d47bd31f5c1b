"""Deep nesting at every intake endpoint (`receive`, over real HTTP): never a 5xx, one depth limit.

An event nesting deeper than MAX_DEPTH is refused by the same definition the reader uses:
422 at the seed endpoints, dead-lettered with its reason by the relay (the other events of
the request appended). Depths are drawn at random around the limit and up to far past
what any JSON library reads (msgspec and orjson stop near 1,000 levels), with objects
and arrays mixed; a body too deep to find its events in is refused whole with a 422.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from kit import SECRET, Cli

from forwarder.decode.event import MAX_DEPTH

SEED = 19


def nested(levels: int, rng: random.Random) -> bytes:
    """JSON text of an object nesting `levels` levels of objects and arrays (the outermost an object)."""
    opens, closes = [b'{"k":'], [b"}"]
    for _ in range(levels - 1):
        if rng.random() < 0.5:
            opens.append(b'{"k":')
            closes.append(b"}")
        else:
            opens.append(b"[")
            closes.append(b"]")
    return b"".join(opens) + b"1" + b"".join(reversed(closes))


def depths(rng: random.Random) -> list[int]:
    """Event depths (the event object counting as one): the limit's edges, random ones, absurd ones."""
    return [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, *rng.sample(range(MAX_DEPTH + 2, 1100), 10), 500, 1023,
            1024, 5000, 100_000]


def test_receiver_deep_events_get_422_and_the_others_stay(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    cli = spawn("receive", "--listen", "127.0.0.1:0", "--max-body-bytes", str(4 << 20), str(log), key=None)
    url = "http://" + cli.wait_log("receiver listening")["address"]
    rng = random.Random(SEED)
    expected = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for depth in depths(rng):
            event = b'{"event_name":"deep","metadata":' + nested(depth - 1, rng) + b"}"
            good = orjson.dumps({"event_name": "ok", "metadata": {"depth": depth}})
            for path, body in (("/v1/analytics/events", event),
                               ("/v1/analytics/batch", b"[" + good + b"," + event + b"]"),
                               ("/v1/events", good + b"\n" + event + b"\n")):
                gz = rng.random() < 0.5
                r = c.post(path, content=gzip.compress(body) if gz else body,
                           headers={"content-encoding": "gzip"} if gz else {})
                assert r.status_code < 500, (depth, path, r.status_code, r.text)
                if depth <= MAX_DEPTH:
                    assert r.status_code == 200, (depth, path, r.text)
                    expected += r.json()["accepted"]
                    continue
                assert r.status_code == 422, (depth, path, r.status_code, r.text)
                message = r.json()["message"]
                assert f"deeper than {MAX_DEPTH} levels" in message or "nested deeper" in message, message
                if depth <= 900:  # readable: the answer names the event and why
                    errors = r.json()["errors"]
                    assert [e["index"] for e in errors] == [0 if path == "/v1/analytics/events" else 1], errors
    lines = log.read_bytes().splitlines() if log.exists() else []
    assert len(lines) == expected == 2 * 5  # depths MAX_DEPTH - 1 and MAX_DEPTH: 1 + 2 + 2 events each
    assert all(orjson.loads(x)["event_name"] in ("ok", "deep") for x in lines)
    assert cli.stop() == 0


def test_relay_dead_letters_a_deep_event_and_appends_the_others(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    cli = spawn("receive", "--listen", "127.0.0.1:0", str(log), key=SECRET,
                env={"FORWARDER_STATE_DIR": str(tmp_path / "state")})
    url = "http://" + cli.wait_log("receiver listening")["address"]
    headers = {"statsig-api-key": SECRET, "content-type": "application/json", "content-encoding": "gzip",
               "statsig-sdk-type": "statsig-server-core-python"}
    rng = random.Random(SEED + 1)
    appended = dead = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for depth in depths(rng):
            deep = (b'{"eventName":"deep","time":1795615408601,"user":{"userID":"u1"},"metadata":'
                    + nested(depth - 1, rng) + b"}")
            good = orjson.dumps({"eventName": "ok", "time": 1795615408601, "metadata": {"depth": str(depth)}})
            body = b'{"events":[' + good + b"," + deep + b"," + good + b'],"statsigMetadata":{}}'
            r = c.post("/v1/log_event", content=gzip.compress(body), headers=headers)
            assert r.status_code < 500, (depth, r.status_code, r.text)
            if depth <= MAX_DEPTH:
                assert r.status_code == 202 and r.json()["accepted"] == 3, (depth, r.text)
                appended += 3
            elif depth <= 900 or r.status_code == 202:
                answer = r.json()
                assert r.status_code == 202 and (answer["accepted"], answer["deadLettered"]) == (2, 1), answer
                assert answer["errors"][0]["index"] == 1
                assert f"deeper than {MAX_DEPTH} levels" in answer["errors"][0]["message"]
                appended += 2
                dead += 1
            else:  # too deep for any reader to find where the events end: the body is refused whole
                assert r.status_code == 422 and "nested deeper" in r.json()["message"], (depth, r.text)
    assert log.read_bytes().count(b"\n") == appended
    assert cli.stop() == 0
    records = [orjson.loads(x) for x in (tmp_path / "state" / "dead-letter.ndjson").read_bytes().splitlines()]
    assert len(records) == dead >= 11
    assert all(f"deeper than {MAX_DEPTH} levels" in d["reason"] and d["offset"] == 1 for d in records)
