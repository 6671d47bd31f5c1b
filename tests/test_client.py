"""forwarder.client: what a line looks like, users (StatsigUser, dicts), validation refusals,
batches in one write, the logging handler, and that importing it loads nothing heavy.
(Files, rotation, processes and failures: tests/test_client_files.py.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import statsig
import statsig_python_core

from forwarder.client import EventLog, EventLogHandler, EventRefused, encode_event
from forwarder.decode.codec import decode_line

HEAVY = ("pydantic", "fastapi", "uvicorn", "watchdog", "statsig_python_core", "starlette", "prometheus_client")


def lines_of(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def sent(line: bytes) -> dict[str, Any]:
    """The event the forwarder sends for a line (decode_line gives a dict, or after issue 19 a Struct)."""
    ev: Any = decode_line(line)
    wire: dict[str, Any] = ev.as_dict() if hasattr(ev, "as_dict") else ev
    return wire


def test_importing_the_client_loads_nothing_heavy(tmp_path):
    """A backend depends on forwarder.client without loading the forwarder's own dependencies
    (logging an event included: validation runs the forwarder's decoder)."""
    code = (
        "import sys, forwarder.client as c\n"
        f"assert c.EventLog({str(tmp_path / 'e.ndjson')!r}).log_event('u1', 'checkout', 1, {{'a': 1}})\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing forwarder.client loaded: {done.stdout.strip()}"
    assert len(lines_of(tmp_path / "e.ndjson")) == 1


def test_the_seeds_call_writes_one_line_the_forwarder_reads(tmp_path):
    log = tmp_path / "events.ndjson"
    events = EventLog(log)
    before = int(time.time() * 1000)
    assert events.log_event("u1", "chat_message_sent", "gpt-4o", {"tokens": 12}) is True
    assert events.log_event(None, "page_view") is True  # no user: anonymous
    assert events.log_event(42, "int_user") is True  # a numeric id from the database
    events.close()
    raw = log.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 3
    first, _, num = lines_of(log)
    t = first.pop("time")
    assert isinstance(t, int) and before <= t <= int(time.time() * 1000)
    assert first == {"event_name": "chat_message_sent", "user_id": "u1", "value": "gpt-4o", "metadata": {"tokens": 12}}
    assert sent(raw.splitlines()[1])["user"] == {"userID": "anonymous"}
    assert num["user_id"] == "42"


def test_a_statsig_python_core_user_is_written_as_statsigs_user_object(tmp_path):
    log = tmp_path / "events.ndjson"
    user = statsig_python_core.StatsigUser(
        "u1", email="a@b.c", ip="1.2.3.4", user_agent="Mozilla/5.0", country="NZ", locale="en_NZ",
        app_version="1.2.3", custom={"plan": "pro", "seats": 3}, custom_ids={"companyID": "c1"},
        private_attributes={"secret": "never written"})
    user.statsig_environment = {"tier": "staging"}
    assert EventLog(log).log_event(user, "checkout", 9.99, {"sku": "X1"})  # the SDK's call, unchanged
    (line,) = lines_of(log)
    assert line["user"] == {
        "userID": "u1", "email": "a@b.c", "ip": "1.2.3.4", "userAgent": "Mozilla/5.0", "country": "NZ",
        "locale": "en_NZ", "appVersion": "1.2.3", "custom": {"plan": "pro", "seats": 3},
        "customIDs": {"companyID": "c1"}, "statsigEnvironment": {"tier": "staging"}}
    assert b"never written" not in log.read_bytes()
    assert sent(log.read_bytes().rstrip())["user"] == line["user"]


def test_a_legacy_statsig_user_and_dicts_of_user_fields(tmp_path):
    log = tmp_path / "events.ndjson"
    events = EventLog(log)
    legacy = statsig.StatsigUser("u2", email="b@c.d", custom_ids={"stableID": "s1"}, private_attributes={"x": "y"})
    assert events.log_event(legacy, "legacy")
    assert events.log_event({"user_id": "u3", "user_agent": "curl", "custom_ids": {"org": "o1"}}, "snake")
    assert events.log_event({"userID": "u4", "appVersion": "2", "privateAttributes": {"x": "y"}}, "statsig_names")
    assert events.log_event(statsig_python_core.StatsigUser(custom_ids={"stableID": "s9"}), "no_user_id")
    users = [line["user"] for line in lines_of(log)]
    assert users[0] == {"userID": "u2", "email": "b@c.d", "customIDs": {"stableID": "s1"}}
    assert users[1] == {"userID": "u3", "userAgent": "curl", "customIDs": {"org": "o1"}}
    assert users[2] == {"userID": "u4", "appVersion": "2"}
    assert users[3] == {"userID": "", "customIDs": {"stableID": "s9"}}  # as the SDK object holds it


@pytest.mark.parametrize(("call", "reason"), [
    (("u1", "bad#name"), "Statsig drops events whose name contains any of"),
    (("u1", "line\nbreak"), "Statsig drops events"),
    (("u1", ""), "event_name"),
    (("u1", "x" * 129), "event_name"),
    (("u1", "flag", True), "value"),
    (("u1", "meta", None, ["not", "an", "object"]), "metadata"),
    (("u1", "meta", None, {"when": {1, 2}}), "not JSON-serializable"),
    (({"userID": "u1", "shoeSize": 9}, "user_key"), "user.shoeSize"),
    ((object(), "odd_user"), "user must be a user id, a dict of user fields or a StatsigUser"),
])
def test_events_the_forwarder_would_dead_letter_are_refused_and_never_written(tmp_path, caplog, call, reason):
    log = tmp_path / "events.ndjson"
    with caplog.at_level(logging.WARNING, "forwarder.client"):
        assert EventLog(log).log_event(*call) is False
    assert not log.exists() or log.read_bytes() == b""
    (rec,) = [r for r in caplog.records if r.name == "forwarder.client"]
    assert "refused, not written" in rec.getMessage() and reason in rec.getMessage(), rec.getMessage()


def test_the_forwarders_oversize_and_line_length_policies_apply(tmp_path, caplog):
    log = tmp_path / "events.ndjson"
    big = {"text": "x" * 5000}
    assert EventLog(log).log_event("u1", "big_metadata", None, big)  # oversize_fields = "send" (default)
    strict = EventLog(log, oversize_fields="reject", max_line_bytes=64 * 1024)
    with caplog.at_level(logging.WARNING, "forwarder.client"):
        assert not strict.log_event("u1", "big_metadata", None, big)
        assert not strict.log_event("u1", "long_value", "v" * 65)
        assert not strict.log_event("u1", "huge", None, {f"k{i}": "x" * 60 for i in range(2000)})
    messages = [r.getMessage() for r in caplog.records]
    assert "over Statsig's limit of 4096" in messages[0]
    assert "over Statsig's limit of 64" in messages[1]
    assert "over max_line_bytes (65536)" in messages[2]
    assert len(lines_of(log)) == 1


def test_a_batch_is_one_write_and_all_or_nothing(tmp_path, monkeypatch, caplog):
    log = tmp_path / "events.ndjson"
    events = EventLog(log)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    user = statsig_python_core.StatsigUser("u9", email="z@y.x")
    batch: list[dict[str, Any]] = [{"event_name": "a", "user_id": "u1"}, {"event_name": "b", "user": user, "value": 2},
             {"event_name": "c", "metadata": {"k": "v"}, "time": 1760000000000}]
    assert events.log_events(batch) is True
    assert len(writes) == 1
    got = lines_of(log)
    assert [x["event_name"] for x in got] == ["a", "b", "c"]
    assert got[1]["user"] == {"userID": "u9", "email": "z@y.x"} and got[2]["time"] == 1760000000000
    with caplog.at_level(logging.WARNING, "forwarder.client"):
        assert events.log_events([{"event_name": "ok"}, {"event_name": "no{braces}"}]) is False
    assert "event [1] of the batch" in caplog.text and "nothing written" in caplog.text
    assert len(writes) == 1 and len(lines_of(log)) == 3
    assert events.log_events([]) is True


def test_encode_event_gives_the_reason(tmp_path):
    assert encode_event("u1", "ok", time_ms=5) == b'{"event_name":"ok","user_id":"u1","time":5}\n'
    with pytest.raises(EventRefused, match="contains '%'"):
        encode_event("u1", "100%")


def test_logging_handler_writes_records_as_events_and_never_its_own_fallback_lines(tmp_path, caplog):
    log = tmp_path / "events.ndjson"
    handler = EventLogHandler(log)
    analytics = logging.getLogger("test.analytics")
    analytics.addHandler(handler)
    analytics.setLevel(logging.INFO)
    analytics.propagate = False
    root = logging.getLogger()
    root.addHandler(handler)  # would see the client's own fallback lines: they must not loop back
    try:
        analytics.info("checkout", extra={"user": {"userID": "u1"}, "value": 9.99, "metadata": {"sku": "X1"}})
        analytics.info("page_%s", "view", extra={"user": "u2"})
        handler.events.path = str(tmp_path / "missing" / "events.ndjson")
        with caplog.at_level(logging.WARNING, "forwarder.client"):
            analytics.info("lost_event", extra={"user": "u3"})
    finally:
        root.removeHandler(handler)
        analytics.removeHandler(handler)
        handler.close()
    got = lines_of(log)
    assert [(x["event_name"], x.get("user"), x.get("user_id")) for x in got] == [
        ("checkout", {"userID": "u1"}, None), ("page_view", None, "u2")]
    assert got[0]["value"] == 9.99 and got[0]["metadata"] == {"sku": "X1"}
    assert "[Fallback] Analytics event: lost_event (user: u3)" in caplog.text


def test_a_user_object_that_raises_is_refused_not_raised(tmp_path, caplog):
    class Broken:
        user_id = "u1"

        @property
        def email(self) -> str:
            raise RuntimeError("database gone")

    with caplog.at_level(logging.WARNING, "forwarder.client"):
        assert EventLog(tmp_path / "events.ndjson").log_event(Broken(), "x") is False
    assert "database gone" in caplog.text
