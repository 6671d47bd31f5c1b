"""The Statsig SDK relay over real HTTP (`receive`, `run --listen`): who may post, bodies, limits, answers.

Requests here are built the way the SDKs build them (body shape, headers, encodings, the JS
client's query string); tests/test_relay_sdks.py runs the real SDKs themselves.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, fast_args

CLIENT_KEY = "client-relay-test-key-42"
LOG_EVENT = "/v1/log_event"
RGSTR = "/v1/rgstr"
SDK_HEADERS = {"statsig-sdk-type": "statsig-server-core-python", "statsig-sdk-version": "0.24.2",
               "content-type": "application/json"}


def start(spawn: Callable[..., Cli], tmp: Path, *args: str, cmd: str = "receive", key: str | None = SECRET,
          env: dict[str, str] | None = None) -> tuple[Cli, str]:
    cli = spawn(cmd, str(tmp / "events.ndjson"), "--listen", "127.0.0.1:0", *args, key=key,
                env={"FORWARDER_RELAY__KEYS": json.dumps([CLIENT_KEY]), "FORWARDER_STATE_DIR": str(tmp / "state"),
                     **(env or {})})
    rec = cli.wait_log("receiver listening")
    return cli, f"http://{rec['address']}"


def exposure(i: int, user: str = "u1") -> dict[str, Any]:
    return {"eventName": "statsig::gate_exposure", "user": {"userID": user, "customIDs": {"stableID": f"s{i}"}},
            "value": None, "metadata": {"gate": "relay_gate", "gateValue": "true", "ruleID": "rule_parent",
                                        "reason": "Network:Recognized", "seq": str(i)},
            "time": 1795615408601 + i, "statsigMetadata": None,
            "secondaryExposures": [{"gate": "relay_child", "gateValue": "true", "ruleID": "rule_child"}]}


def custom(i: int, **extra: Any) -> dict[str, Any]:
    return {"eventName": "purchase", "user": {"userID": f"u{i}"}, "value": 9.5, "metadata": {"seq": str(i)},
            "time": 1795615408601 + i, "secondaryExposures": None, **extra}


def body(events: list[Any], encoding: str | None = None) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps({"events": events, "statsigMetadata": {"sdkType": "statsig-server-core-python"}})
    headers = dict(SDK_HEADERS, **{"statsig-api-key": SECRET, "statsig-event-count": str(len(events))})
    if encoding == "gzip":
        return gzip.compress(raw), {**headers, "content-encoding": "gzip"}
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(raw), {**headers, "content-encoding": "zstd"}
    return raw, headers


def lines(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.ndjson"
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "nothing partial in the log"
    return [orjson.loads(line) for line in data.splitlines()]


def test_only_accepted_keys_may_post(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path)
    data, headers = body([custom(1)])
    with httpx.Client(base_url=url) as c:
        for bad in ({}, {"statsig-api-key": "secret-wrong"}, {"statsig-api-key": SECRET[:-1]},
                    {"statsig-api-key": SECRET + "x"}):
            h = {k: v for k, v in headers.items() if k != "statsig-api-key"} | bad
            r = c.post(LOG_EVENT, content=data, headers=h)
            assert r.status_code == 401 and r.json()["success"] is False, r.text
        assert c.post(RGSTR, content=data, params={"k": "client-wrong"}).status_code == 401
        assert not lines(tmp_path), "nothing appended for a refused key"

        r = c.post(LOG_EVENT, content=data, headers=headers)  # the server key, as core SDKs send it
        assert (r.status_code, r.json()) == (202, {"success": True, "accepted": 1, "deadLettered": 0, "dropped": 0})
        legacy = {k.upper(): v for k, v in headers.items()} | {"STATSIG-RETRY": "0"}  # legacy SDK's capitals
        assert c.post(LOG_EVENT, content=data, headers=legacy).status_code == 202
        js = {"k": CLIENT_KEY, "st": "javascript-client", "sv": "3.33.5", "t": "1795615408601", "sid": "s", "ec": "1"}
        r = c.post(RGSTR, content=data, params=js, headers={"content-type": "text/plain;charset=UTF-8"})
        assert r.status_code == 202, r.text
    assert len(lines(tmp_path)) == 3
    metrics = httpx.get(f"{url}/metrics").text
    assert 'statsig_forwarder_relay_requests_total{outcome="unauthorized",sdk_type="unknown"} 5.0' in metrics
    assert 'statsig_forwarder_relay_requests_total{outcome="accepted",sdk_type="javascript-client"} 1.0' in metrics
    assert cli.stop() == 0
    for text in (bytes(cli.stderr).decode(), (tmp_path / "events.ndjson").read_text()):
        assert SECRET not in text and CLIENT_KEY not in text


def test_the_bearer_token_still_applies(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path, env={"FORWARDER_RECEIVER_TOKEN": "tok-123456"})
    data, headers = body([custom(1)])
    assert httpx.post(url + LOG_EVENT, content=data, headers=headers).status_code == 401
    r = httpx.post(url + LOG_EVENT, content=data, headers={**headers, "authorization": "Bearer tok-123456"})
    assert r.status_code == 202 and len(lines(tmp_path)) == 1
    assert cli.stop() == 0


def test_bodies_plain_gzip_zstd_and_broken_ones(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path)
    accepted = 0
    with httpx.Client(base_url=url) as c:
        for encoding in (None, "gzip", "zstd"):
            data, headers = body([exposure(accepted), custom(accepted + 1)], encoding)
            r = c.post(LOG_EVENT, content=data, headers=headers)
            assert r.status_code == 202 and r.json()["accepted"] == 2, (encoding, r.text)
            accepted += 2
        two_frames = zstandard.ZstdCompressor().compress(b'{"events": [') + zstandard.ZstdCompressor().compress(
            orjson.dumps(custom(99)) + b"]}")
        r = c.post(LOG_EVENT, content=two_frames, headers={**body([])[1], "content-encoding": "zstd"})
        assert r.status_code == 202, r.text
        accepted += 1
        js = gzip.compress(body([custom(7)])[0])  # the JS client: gzip marked only by gz=1
        r = c.post(RGSTR, content=js, params={"k": CLIENT_KEY, "st": "javascript-client", "gz": "1"})
        assert r.status_code == 202, r.text
        accepted += 1

        good, headers = body([custom(1)], "zstd")
        gz, gz_headers = body([custom(1)], "gzip")
        cases = {
            "broken gzip": (b"\x1f\x8b\x08garbage", gz_headers, 400),
            "truncated gzip": (gz[:-9], gz_headers, 400),
            "broken zstd": (b"\x28\xb5\x2f\xfdgarbage", headers, 400),
            "truncated zstd": (good[:-6], headers, 400),
            "brotli": (good, {**headers, "content-encoding": "br"}, 415),
            "not JSON": (b"{nope", body([])[1], 400),
            "an array": (b"[]", body([])[1], 400),
            "events not an array": (b'{"events": {"eventName": "x"}}', body([])[1], 400),
            "no events": (b'{"statsigMetadata": {}}', body([])[1], 400),
        }
        for name, (data, h, status) in cases.items():
            r = c.post(LOG_EVENT, content=data, headers=h)
            assert r.status_code == status and r.json()["success"] is False, (name, r.status_code, r.text)
    assert len(lines(tmp_path)) == accepted, "nothing partial: only whole accepted requests are in the log"
    assert cli.stop() == 0


def test_size_limits_fit_the_largest_sdk_batch(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path)
    with httpx.Client(base_url=url, timeout=30) as c:
        big = [exposure(i, user=f"user-{i}" * 8) for i in range(2000)]  # an SDK's largest batch, fat events
        for encoding in ("gzip", "zstd"):
            data, headers = body(big, encoding)
            r = c.post(LOG_EVENT, content=data, headers=headers)
            assert r.status_code == 202 and r.json()["accepted"] == 2000, r.text
        bomb = zstandard.ZstdCompressor().compress(b'{"events": [' + b" " * (65 * 1024 * 1024) + b"]}")
        r = c.post(LOG_EVENT, content=bomb, headers=body([], "zstd")[1])
        assert r.status_code == 413 and "relay.max_body_bytes (67108864)" in r.json()["message"], r.text
        many = [{"eventName": "e"}] * 10_001
        r = c.post(LOG_EVENT, content=body(many, "gzip")[0], headers=body(many, "gzip")[1])
        assert r.status_code == 413 and "relay.max_batch_events (10000)" in r.json()["message"], r.text
    assert len(lines(tmp_path)) == 4000
    assert cli.stop() == 0


def test_an_invalid_event_costs_only_itself(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path)
    events = [custom(1), {"eventName": "", "metadata": {"url": f"/download_config_specs/{SECRET}.json"}}, 5,
              custom(2, value={"not": "scalar"}), {"eventName": "x" * 200}, custom(4, eventName="add|cart"),
              exposure(3)]
    data, headers = body(events, "gzip")
    r = httpx.post(url + LOG_EVENT, content=data, headers=headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["success"] is True and (answer["accepted"], answer["deadLettered"]) == (2, 5)
    assert [e["index"] for e in answer["errors"]] == [1, 2, 3, 4, 5]
    assert "Statsig drops events whose name contains" in answer["errors"][4]["message"]
    assert "not a JSON object" in answer["errors"][1]["message"] and "value" in answer["errors"][2]["message"]
    assert [e["eventName"] for e in lines(tmp_path)] == ["purchase", "statsig::gate_exposure"]
    assert cli.stop() == 0
    dead = [orjson.loads(x) for x in (tmp_path / "state" / "dead-letter.ndjson").read_bytes().splitlines()]
    assert [d["offset"] for d in dead] == [1, 2, 3, 4, 5]
    assert all(d["source"] == "relay /v1/log_event (statsig-server-core-python)" for d in dead)
    assert orjson.loads(dead[2]["line"]) == custom(2, value={"not": "scalar"})
    assert all(d["reason"].startswith("invalid event: ") for d in dead)
    assert "secret-t..." in dead[0]["line"] and SECRET not in dead[0]["line"], "keys never stored"


def test_events_keep_their_shape_and_internal_events_follow_the_setting(
        spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    diagnostics = {"eventName": "statsig::diagnostics", "user": {}, "value": None,
                   "metadata": {"context": "initialize", "markers": "[]"}, "time": 1795615408600}
    events = [diagnostics, exposure(1), custom(2, user={"userID": "u2", "privateAttributes": {"ssn": "1"},
                                                       "analyticsOnlyMetadata": {"a": 1}})]
    cli, url = start(spawn, tmp_path, *fast_args(fake, tmp_path / "state"), cmd="run")
    r = httpx.post(url + LOG_EVENT, content=body(events, "zstd")[0], headers=body(events, "zstd")[1])
    assert r.status_code == 202 and r.json()["accepted"] == 3
    assert fake.wait_for(3)
    sent = [{k: v for k, v in e.items() if k != "metadata"} | {"metadata": {
        k: v for k, v in e["metadata"].items() if k != "forwarder_event_id"}} for e in fake.events]
    assert sent[0] == {k: v for k, v in diagnostics.items() if v is not None}
    assert sent[1] == {k: v for k, v in exposure(1).items() if v is not None}, "secondaryExposures passed on"
    assert sent[2]["user"] == {"userID": "u2", "analyticsOnlyMetadata": {"a": 1}}, "private attributes left out"
    assert cli.stop() == 0

    (tmp_path / "drop").mkdir()
    cli, url = start(spawn, tmp_path / "drop", "--relay-internal-events", "drop")
    r = httpx.post(url + LOG_EVENT, content=body(events)[0], headers=body(events)[1])
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["dropped"]) == (2, 1)
    assert [e["eventName"] for e in lines(tmp_path / "drop")] == ["statsig::gate_exposure", "purchase"]
    assert cli.stop() == 0


def test_what_the_sdk_should_retry_is_a_503_with_retry_after(spawn: Callable[..., Cli], tmp_path: Path) -> None:
    (tmp_path / "events.ndjson").mkdir()  # the log cannot be written (root ignores permissions)
    cli, url = start(spawn, tmp_path)
    r = httpx.post(url + LOG_EVENT, content=body([custom(1)])[0], headers=body([custom(1)])[1])
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["success"] is False, r.text
    assert cli.stop() == 0


def test_readyz_metrics_and_check_show_the_relay(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                tmp_path: Path) -> None:
    cli, url = start(spawn, tmp_path)
    ready = httpx.get(url + "/readyz").json()
    assert ready["relay"] == {"enabled": True, "paths": [LOG_EVENT, RGSTR],
                              "accepted_keys": ["secret-t...", "client-r..."]}
    assert cli.stop() == 0
    (tmp_path / "off").mkdir()
    cli, url = start(spawn, tmp_path / "off", "--no-relay-enabled")
    assert httpx.post(url + LOG_EVENT, content=body([custom(1)])[0], headers=body([custom(1)])[1]).status_code == 404
    assert httpx.get(url + "/readyz").json()["relay"]["enabled"] is False
    assert cli.stop() == 0

    check = spawn("check", "--statsig-api", fake.url, env={"FORWARDER_RELAY__KEYS": json.dumps([CLIENT_KEY])})
    assert check.wait(60) == 0, bytes(check.stderr)
    out = bytes(check.stdout).decode()
    assert "Statsig SDK relay: enabled on /v1/log_event and /v1/rgstr" in out
    assert "accepted keys: secret-t..., client-r..." in out and SECRET not in out and CLIENT_KEY not in out
    check = spawn("check", "--statsig-api", fake.url, env={"FORWARDER_RELAY__ENABLED": "false"})
    assert check.wait(60) == 0 and "relay: disabled" in bytes(check.stdout).decode()


def test_k8s_manifests_expose_the_relay_and_tail_what_it_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    from fnmatch import fnmatch

    from test_deploy import check_forwarder_container, env_of, load, mounts

    sidecar = load("sidecar.yaml")["spec"]["template"]["spec"]
    fwd = next(c for c in sidecar["initContainers"] if c["name"] == "statsig-forwarder")
    settings = check_forwarder_container(fwd, monkeypatch)
    assert settings.relay.enabled and settings.receiver.listen == "127.0.0.1:9465", "pod-local only"
    assert any(fnmatch(str(settings.receiver_log_path), p) for p in settings.paths), "the relay's log is tailed"
    assert env_of(sidecar["containers"][0])["STATSIG_LOG_EVENT_URL"] == "http://127.0.0.1:9465/v1/log_event"

    node = load("daemonset.yaml")["spec"]["template"]["spec"]
    (fwd,) = node["containers"]
    settings = check_forwarder_container(fwd, monkeypatch)
    assert settings.relay.enabled and settings.receiver.listen == "0.0.0.0:9465"
    assert {"name": "relay", "containerPort": 9465, "hostPort": 9465} in fwd["ports"]
    log = str(settings.receiver_log_path)
    assert any(fnmatch(log, p) for p in settings.paths), "the relay's log is tailed"
    writable = [path for path in mounts(fwd).values() if log.startswith(path + "/")]
    assert max(writable, key=len) == "/var/log/statsig-events/_relay", "appended on a writable mount"


def test_shutting_down_or_dead_letter_unwritable_is_a_503_with_retry_after(tmp_path: Path) -> None:
    from forwarder.receiver import Appender, Intake, create_app, default_ready
    from forwarder.receiver.relay import Relay
    from forwarder.settings import ReceiverSettings, RelaySettings
    from forwarder.state.deadletter import DeadLetter

    appender = Appender(tmp_path / "events.ndjson")
    (tmp_path / "dead").mkdir()  # the dead-letter file cannot be opened
    relay = Relay(DeadLetter(tmp_path / "dead"), RelaySettings(), SECRET, None, 1 << 20, "metadata")
    app = create_app(default_ready(appender), Intake(appender, ReceiverSettings(), relay=relay))
    data, headers = body([custom(1), {"eventName": ""}])

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay") as c:
            r = await c.post(LOG_EVENT, content=data, headers=headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "dead-letter" in r.json()["message"]
            assert (await c.post(LOG_EVENT, content=body([custom(1)])[0], headers=headers)).status_code == 202
            relay.stopping = True
            r = await c.post(LOG_EVENT, content=body([custom(2)])[0], headers=headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text

    asyncio.run(scenario())
    assert [e["metadata"]["seq"] for e in lines(tmp_path)] == ["1"], "nothing of the refused requests"


def test_validate_and_run_accept_statsig_shaped_lines(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in (exposure(1), custom(2), {"eventName": ""})))
    check = spawn("validate", str(log))
    assert check.wait(30) == 1 and "3 lines, 2 valid, 1 bad" in bytes(check.stderr).decode()
    cli = spawn("run", "--once", str(log), *fast_args(fake, tmp_path / "state"))
    assert cli.wait(60) == 0 and fake.wait_for(2)
    assert [e["eventName"] for e in fake.events] == ["statsig::gate_exposure", "purchase"]
    assert fake.events[0]["secondaryExposures"] == exposure(1)["secondaryExposures"]
