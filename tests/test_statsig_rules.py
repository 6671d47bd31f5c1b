"""Statsig's own acceptance rules, applied before sending: at the model, the reader and the receiver.

Source: Statsig's docs, guides/logging-events.mdx (quoted in ../shared/statsig-wire.md): names
with any of \\[]{}<>#=;&$%|, NUL, CR, LF are dropped; object fields are limited to 4096
characters stringified, string fields to 64.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fake_statsig import FakeStatsig
from kit import Cli, fast_args, seqs

from forwarder.decode.codec import ChunkDecoder, StatsigRuleError, decode_line
from forwarder.decode.event import (
    DROPPED_NAME_CHARS,
    MAX_OBJECT_FIELD,
    MAX_STRING_FIELD,
    SAFE_OBJECT_BYTES,
    over_limits,
    stringified_length,
)
from forwarder.model import StatsigEvent


def to_statsig(obj: dict[str, Any], unknown: Any = "metadata", oversize: Any = "send") -> StatsigEvent:
    return decode_line(orjson.dumps(obj), unknown, oversize)


def one_call(obj: dict[str, Any], oversize: Any = "send") -> StatsigEvent | None:
    """The chunk path on a chunk of this one line: None when it leaves the line to the per-line step."""
    many = ChunkDecoder().decode(orjson.dumps(obj) + b"\n", oversize)
    return None if many is None else many.events[0]


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    metadata = {"seq": seq, **fields.get("metadata", {})}
    return {"event_name": "ok", "user_id": "u", "time": 1, **fields, "metadata": metadata}


def metadata_of(length: int) -> dict[str, str]:
    """A metadata object whose compact JSON is exactly `length` characters."""
    return {"pad": "x" * (length - len('{"pad":""}'))}


NAMES_STATSIG_DROPS = [f"a{c}b" for c in DROPPED_NAME_CHARS]
# (fields, over-limit field) at one past each limit; the same at the limit is accepted.
OVERSIZE: list[tuple[dict[str, Any], str]] = [
    ({"event_name": "n" * (MAX_STRING_FIELD + 1)}, "event_name"),
    ({"value": "v" * (MAX_STRING_FIELD + 1)}, "value"),
    ({"metadata": {"pad": "x" * MAX_OBJECT_FIELD}}, "metadata"),
    ({"user": {"userID": "u", "custom": {"pad": "x" * MAX_OBJECT_FIELD}}}, "user"),
]


@pytest.mark.parametrize("name", NAMES_STATSIG_DROPS, ids=[repr(c) for c in DROPPED_NAME_CHARS])
def test_names_statsig_drops_are_refused_by_both_paths(name: str) -> None:
    obj = {"event_name": name, "time": 1}
    assert one_call(obj) is None
    with pytest.raises(StatsigRuleError, match=r"event_name contains .*: Statsig drops events whose name"):
        to_statsig(obj)


def test_names_with_other_punctuation_pass() -> None:
    for name in ("page view", "statsig::gate_exposure", "a.b-c/d:e!f?g@h*i(j)k'l\"m,n~o^p`q+r", "ü"):
        assert to_statsig({"event_name": name, "time": 1}).eventName == name


@pytest.mark.parametrize(("fields", "field"), OVERSIZE, ids=[f for _, f in OVERSIZE])
def test_oversize_fields_send_or_reject(fields: dict[str, Any], field: str) -> None:
    obj = {"event_name": "e", "time": 1, **fields}
    sent = to_statsig(obj, "metadata", "send")
    assert over_limits(sent) == [field]
    assert one_call(obj) == sent and one_call(obj, "reject") is None
    with pytest.raises(StatsigRuleError, match=f"^invalid event: {field} is .* over Statsig's limit") as e:
        to_statsig(obj, "metadata", "reject")
    assert e.value.over == [field]


def test_fields_exactly_at_the_limits_pass_reject() -> None:
    obj = {"event_name": "n" * MAX_STRING_FIELD, "value": "v" * MAX_STRING_FIELD, "time": 1,
           "metadata": metadata_of(MAX_OBJECT_FIELD)}
    assert stringified_length(obj["metadata"]) == MAX_OBJECT_FIELD
    assert to_statsig(obj, "metadata", "reject") == one_call(obj, "reject")
    assert over_limits(to_statsig(obj)) == []


def test_stringified_length_counts_utf16_units_like_javascript() -> None:
    assert stringified_length({"k": "é"}) == 9  # JSON.stringify({"k":"é"}).length
    assert stringified_length({"k": "😀"}) == 10  # an astral character is two UTF-16 units
    emoji = {"pad": "😀" * 2040}  # 4090 units, 8170 UTF-8 bytes: within the limit
    assert over_limits(to_statsig({"event_name": "e", "metadata": emoji})) == []
    assert over_limits(to_statsig({"event_name": "e", "metadata": {"pad": "😀" * 2050}})) == ["metadata"]


def test_short_objects_cannot_hide_an_oversize_one() -> None:
    """Objects up to SAFE_OBJECT_BYTES are not measured: the worst growth still fits."""
    head, tail = b'{"a":[', b"]}"
    n = (SAFE_OBJECT_BYTES - len(head) - len(tail) + 1) // len(b"9e15,")
    metadata = head + b",".join([b"9e15"] * n) + tail  # the number that grows most when re-encoded
    assert SAFE_OBJECT_BYTES - 5 < len(metadata) <= SAFE_OBJECT_BYTES
    assert stringified_length(metadata) + len('"userID":"anonymous",') <= MAX_OBJECT_FIELD


@pytest.mark.parametrize("number", [b"9e15", b"1E5", b"1.5e3"])
def test_objects_within_4096_bytes_are_measured_when_a_number_may_grow(number: bytes) -> None:
    """Up to MAX_OBJECT_FIELD bytes an object is measured only when it holds an exponent: these grow past it."""
    n = (MAX_OBJECT_FIELD - 10) // (len(number) + 1)
    metadata = b'{"a":[' + b",".join([number] * n) + b"]}"
    assert len(metadata) <= MAX_OBJECT_FIELD < stringified_length(metadata)
    line = b'{"event_name":"e","metadata":' + metadata + b"}"
    assert over_limits(decode_line(line)) == ["metadata"]
    with pytest.raises(StatsigRuleError, match="metadata is"):
        decode_line(line, "metadata", "reject")


# -- the reader: run --once, dead-lettered with the reason, counted -------------------------
def _lines() -> list[bytes]:
    out = [orjson.dumps(ev(i, event_name=name)) for i, name in enumerate(NAMES_STATSIG_DROPS)]
    base = len(out)
    for j, (fields, _) in enumerate(OVERSIZE):
        out.append(orjson.dumps(ev(base + j, **fields)))
    out.append(orjson.dumps(ev(base + len(OVERSIZE))))  # a plain one
    return out


def _run_once(spawn: Callable[..., Cli], fake: FakeStatsig, tmp: Path,
              *extra: str) -> tuple[list[int], list[dict[str, Any]], dict[str, Any]]:
    log = tmp / "events.ndjson"
    log.write_bytes(b"\n".join(_lines()) + b"\n")
    state = tmp / "state"
    cli = spawn("run", "--once", str(log), *fast_args(fake, state), *extra)
    assert cli.wait(60) == 0
    dead_path = state / "dead-letter.ndjson"
    dead = [orjson.loads(r) for r in dead_path.read_bytes().splitlines()] if dead_path.exists() else []
    stopped = next(r for r in cli.logs() if r.get("msg") == "stopped")
    return sorted(seqs(fake)), dead, stopped


def test_reader_dead_letters_names_and_sends_oversize_by_default(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                                 tmp_path: Path) -> None:
    names = len(NAMES_STATSIG_DROPS)
    sent, dead, stopped = _run_once(spawn, fake, tmp_path)
    assert sent == list(range(names, names + len(OVERSIZE) + 1)), "oversize events are sent as is"
    assert [r["offset"] for r in dead] == sorted(r["offset"] for r in dead) and len(dead) == names
    for record, name in zip(dead, NAMES_STATSIG_DROPS, strict=True):
        assert orjson.loads(record["line"])["event_name"] == name
        assert "Statsig drops events whose name contains" in record["reason"]
    assert stopped["events_statsig_rules"] == names
    assert {f: stopped["over_limit_" + f] for _, f in OVERSIZE} == {f: 1 for _, f in OVERSIZE}


def test_reader_rejects_oversize_when_configured(spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    names = len(NAMES_STATSIG_DROPS)
    sent, dead, stopped = _run_once(spawn, fake, tmp_path, "--oversize-fields", "reject")
    assert sent == [names + len(OVERSIZE)]
    assert len(dead) == names + len(OVERSIZE)
    for record, (_, field) in zip(dead[names:], OVERSIZE, strict=True):
        assert record["reason"].startswith(f"invalid event: {field} is "), record["reason"]
        assert "over Statsig's limit" in record["reason"] and "oversize_fields = reject" in record["reason"]
    assert stopped["events_statsig_rules"] == names + len(OVERSIZE)
    assert {f: stopped["over_limit_" + f] for _, f in OVERSIZE} == {f: 1 for _, f in OVERSIZE}


# -- the receiver: 422 with the reason -------------------------------------------------------
@pytest.mark.parametrize("oversize", ["send", "reject"])
def test_receiver_answers_422_with_the_reason(spawn: Callable[..., Cli], tmp_path: Path, oversize: str) -> None:
    log = tmp_path / "events.ndjson"
    cli = spawn("receive", "--listen", "127.0.0.1:0", str(log), "--oversize-fields", oversize, key=None)
    url = "http://" + cli.wait_log("receiver listening")["address"]
    with httpx.Client(base_url=url) as c:
        for name in NAMES_STATSIG_DROPS:
            r = c.post("/v1/analytics/events", json=ev(0, event_name=name))
            assert r.status_code == 422, (name, r.text)
            assert "Statsig drops events whose name contains" in r.json()["errors"][0]["message"]
        for fields, field in OVERSIZE:
            r = c.post("/v1/analytics/events", json=ev(0, **fields))
            if oversize == "reject":
                assert r.status_code == 422, (field, r.text)
                assert r.json()["errors"][0]["message"].startswith(f"{field} is ")
            else:
                assert r.status_code == 200, (field, r.text)
    appended = log.read_bytes().splitlines() if log.exists() else []
    assert len(appended) == (len(OVERSIZE) if oversize == "send" else 0)
