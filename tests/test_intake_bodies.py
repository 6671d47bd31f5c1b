"""The intake's whole-body decode agrees with the per-event definition (decode.codec.judge_line).

Bodies are built from random events, mostly valid, some with what only the per-event step
handles (nulls, private attributes, ISO times, unknown keys, deep nesting) or refuses. For
every event, the relay's appended line means the same Statsig event as judging the event
alone, and the invalid ones are exactly those judge_line refuses, with its reasons; the seed
endpoints accept exactly what judge_line accepts and append the caller's text.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import orjson
import pytest

from forwarder.decode.codec import LineError, judge_line
from forwarder.decode.event import OversizeFields, UnknownFields
from forwarder.receiver.bodies import sdk_events, seed_events

NOW = 1795615408000
DEEP: dict[str, Any] = {"deep": 1}
for _ in range(70):
    DEEP = {"deep": [DEEP]}
KEY = b"secret-bodies-test-key-0123"


def user(rng: random.Random) -> Any:
    u: dict[str, Any] = {"userID": f"u{rng.randrange(9)}"}
    for k, v in (("email", "a@b.c"), ("custom", {"plan": "pro", "n": None}), ("customIDs", {"stableID": "s1"}),
                 ("statsigEnvironment", {"tier": "production"}), ("country", None),
                 ("privateAttributes", {"ssn": "1"}), ("analyticsOnlyMetadata", {"a": 1})):
        if rng.random() < 0.3:
            u[k] = v
    return rng.choice([u, u, u, None, {}, "not a user", {"userID": 5}])


def sdk_event(rng: random.Random, i: int) -> Any:
    ev: dict[str, Any] = {"eventName": rng.choice(["purchase", "statsig::gate_exposure", "statsig::diagnostics",
                                                   "a" * 70, "", "bad|name"] + ["ok"] * 6)}
    options: list[tuple[str, list[Any]]] = [
        ("user", [user(rng)]),
        ("value", [None, 9.5, "pro", 3, {"no": 1}, "v" * 70]),
        ("metadata", [None, {"seq": str(i)}, {"url": f"/download_config_specs/{KEY.decode()}.json"}, [1], "x",
                      DEEP]),
        ("time", [1795615408601 + i, None, "2026-01-02T03:04:05Z", 1.5e12, -1, "soon", True]),
        ("secondaryExposures", [None, [], [{"gate": "g"}], [1], {"a": 1}]),
        ("statsigMetadata", [None, {}, {"x": 1}, 7]),
        ("extra_key", [1, None]),
    ]
    for name, values in options:
        if rng.random() < (0.15 if name == "extra_key" else 0.7):
            ev[name] = rng.choice(values)
    return ev if rng.random() < 0.97 else rng.choice([5, "s", None, []])


def reason(e: LineError) -> str:
    return str(e).removeprefix("invalid event: ")


POLICIES = pytest.mark.parametrize(("unknown", "oversize"), [("metadata", "send"), ("reject", "reject")])


@POLICIES
def test_relay_lines_mean_what_each_event_means_alone(unknown: UnknownFields, oversize: OversizeFields) -> None:
    rng = random.Random(7)
    for round_ in range(300):
        events = [sdk_event(rng, i) for i in range(rng.randrange(1, 12))]
        if round_ % 3 == 0:  # plain SDK events only: the whole-body path without a split
            events = [e for e in events if type(e) is dict and "extra_key" not in e] or [{"eventName": "x"}]
        body = orjson.dumps({"events": events, "statsigMetadata": {}})
        if round_ % 5 == 0:
            body = orjson.dumps({"events": events}, option=orjson.OPT_INDENT_2)
        masks = [(KEY, b"secret-b...")]
        out = sdk_events(body, 1000, 1 << 20, unknown, oversize, False, masks)
        lines = out.data.splitlines()
        bad = {b.index: b.reason for b in out.invalid}
        assert out.lines == len(lines) == len(events) - len(bad)
        got = iter(lines)
        for i, ev in enumerate(events):
            raw = orjson.dumps(ev)
            try:
                want = judge_line(raw, unknown, oversize, NOW).event
            except LineError as e:
                assert bad.get(i) == reason(e), (i, ev)
                continue
            assert i not in bad, (i, ev, bad.get(i))
            line = next(got)
            assert KEY not in line
            mine = judge_line(line, unknown, oversize, NOW).event
            expected = msgspec.json.decode(msgspec.json.encode(want).replace(KEY, b"secret-b..."))
            as_sent = msgspec.json.decode(msgspec.json.encode(mine))
            if ev.get("time") is None or type(ev.get("time")) is not int:  # filled with the receive time
                expected.pop("time"), as_sent.pop("time")
            assert as_sent == expected, (i, ev, line)
            doc = orjson.loads(line)  # null fields left out, the user's too
            assert None not in doc.values() and None not in (doc.get("user") or {}).values(), line


@POLICIES
def test_seed_bodies_accept_what_judge_line_accepts_and_keep_the_callers_text(unknown: UnknownFields,
                                                                             oversize: OversizeFields) -> None:
    rng = random.Random(8)
    for _ in range(300):
        events = [sdk_event(rng, i) for i in range(rng.randrange(1, 8))]
        for e in events:  # the project's own form, mostly
            if type(e) is dict and rng.random() < 0.7 and "eventName" in e:
                e["event_name"] = e.pop("eventName")
                if type(e.get("user")) is dict:
                    e["user"].pop("analyticsOnlyMetadata", None)
        body = orjson.dumps(events)
        out = seed_events(body, "array", 1000, 1 << 20, unknown, oversize)
        bad = {b.index: b.reason for b in out.invalid}
        lines = out.data.splitlines()
        got = iter(lines)
        for i, ev in enumerate(events):
            try:
                judged = judge_line(orjson.dumps(ev), unknown, oversize, NOW)
            except LineError as e:
                assert bad.get(i) == reason(e), (i, ev)
                continue
            assert i not in bad, (i, ev, bad.get(i))
            line = orjson.loads(next(got))
            if judged.timed:
                assert line == ev
            else:
                assert {k: v for k, v in line.items() if k != "time"} == {k: v for k, v in ev.items() if k != "time"}
                assert type(line["time"]) is int
