"""CORS on the receiver and the relay (forwarder/receiver/cors.py), request by request.

Preflight answers, the headers on allowed answers, and the 403 that keeps a page of another
origin from appending anything, also without a preflight. tests/test_browser.py runs the same
through a real Chromium.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from forwarder.errors import ConfigError
from forwarder.receiver import Appender, Intake, create_app, default_ready
from forwarder.receiver.cors import REFUSED
from forwarder.receiver.relay import Relay
from forwarder.settings import ReceiverSettings, RelaySettings, load_settings
from forwarder.state.deadletter import DeadLetter

CLIENT_KEY = "client-cors-unit-key"
PAGE = "https://app.example.com"
OTHER = "https://evil.example.net"
JS_CLIENT_HEADERS = "statsig-event-count,statsig-retry-count,statsig-sdk-type,statsig-sdk-version"
RGSTR = f"/v1/rgstr?k={CLIENT_KEY}&st=javascript-client&sv=3.33.5"
SDK_BODY = orjson.dumps({"events": [{"eventName": "click", "user": {"userID": "u1"}, "time": 1795615408601}],
                         "statsigMetadata": {}})
SEED_BODY = orjson.dumps({"event_name": "click", "metadata": {"button": "buy"}})
POST_PATHS = ["/v1/analytics/events", "/v1/analytics/batch", "/v1/events", "/v1/log_event", "/v1/rgstr"]


def app_for(tmp: Path, origins: list[str]) -> Any:
    appender = Appender(tmp / "events.ndjson")
    relay = Relay(DeadLetter(tmp / "dead.ndjson"), RelaySettings.model_validate({"keys": [CLIENT_KEY]}),
                  None, None, 1 << 20, "metadata")
    return create_app(default_ready(appender), Intake(appender, ReceiverSettings(cors_origins=origins), relay=relay))


def exchange(app: Any, *requests: tuple[str, str, dict[str, str], bytes]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as c:
            return [await c.request(method, url, headers=headers, content=body)
                    for method, url, headers, body in requests]

    return asyncio.run(go())


def appended(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def preflight(path: str, origin: str, headers: str) -> tuple[str, str, dict[str, str], bytes]:
    ask = {"origin": origin, "access-control-request-method": "POST"}
    if headers:
        ask["access-control-request-headers"] = headers
    return "OPTIONS", path, ask, b""


def refused_total() -> float:
    return float(sum(REFUSED.labels(reason)._value.get() for reason in ("origin", "preflight")))


@pytest.mark.parametrize("path", POST_PATHS)
@pytest.mark.parametrize("asked", ["content-type", JS_CLIENT_HEADERS, "Content-Type, Content-Encoding", ""])
def test_preflight_from_a_listed_origin(tmp_path: Path, path: str, asked: str) -> None:
    [r] = exchange(app_for(tmp_path, [PAGE, "http://localhost:3000"]), preflight(path, PAGE, asked))
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == PAGE
    assert r.headers["access-control-allow-methods"] == "POST"
    assert r.headers["access-control-max-age"] == "7200"
    assert "Origin" in r.headers["vary"]
    allowed = {h.strip() for h in r.headers.get("access-control-allow-headers", "").split(",") if h.strip()}
    assert allowed == {h.strip().lower() for h in asked.split(",") if h.strip()}
    assert "access-control-allow-credentials" not in r.headers, "no cookies: none are needed"


def test_preflight_refused_for_another_origin_a_method_or_a_header(tmp_path: Path) -> None:
    before = REFUSED.labels("origin")._value.get(), REFUSED.labels("preflight")._value.get()
    answers = exchange(app_for(tmp_path, [PAGE]),
                       preflight("/v1/rgstr", OTHER, JS_CLIENT_HEADERS),
                       preflight("/v1/analytics/events", "https://app.example.com:8443", "content-type"),
                       preflight("/v1/analytics/events", "null", "content-type"),
                       ("OPTIONS", "/v1/analytics/events", {"origin": PAGE, "access-control-request-method": "PUT"},
                        b""),
                       preflight("/v1/analytics/events", PAGE, "content-type, x-api-key"))
    assert [r.status_code for r in answers] == [403] * 5
    assert all("access-control-allow-origin" not in r.headers for r in answers)
    assert "not in receiver.cors_origins" in answers[0].json()["message"]
    assert "method PUT" in answers[3].json()["message"] and "x-api-key" in answers[4].json()["message"]
    assert (REFUSED.labels("origin")._value.get(), REFUSED.labels("preflight")._value.get()) == (
        before[0] + 3, before[1] + 2)


def test_simple_requests_of_another_origin_get_403_and_append_nothing(tmp_path: Path) -> None:
    """What a browser sends without asking: text/plain POSTs and beacons (the key in ?k=), form posts."""
    before = refused_total()
    text = {"origin": OTHER, "content-type": "text/plain;charset=UTF-8"}
    answers = exchange(app_for(tmp_path, [PAGE]),
                       ("POST", RGSTR, text, SDK_BODY),
                       ("POST", "/v1/log_event", {**text, "statsig-api-key": CLIENT_KEY}, SDK_BODY),
                       ("POST", "/v1/analytics/events", text, SEED_BODY),
                       ("POST", "/v1/analytics/batch", text, b"[" + SEED_BODY + b"]"),
                       ("POST", "/v1/events", {"origin": OTHER, "content-type": "application/x-www-form-urlencoded"},
                        SEED_BODY))
    assert [r.status_code for r in answers] == [403] * 5, [r.text for r in answers]
    assert all(r.json()["success"] is False and "access-control-allow-origin" not in r.headers for r in answers)
    assert appended(tmp_path) == [], "nothing appended"
    assert refused_total() == before + 5


def test_listed_origins_get_their_answers_with_allow_origin(tmp_path: Path) -> None:
    text = {"origin": PAGE, "content-type": "text/plain;charset=UTF-8"}
    answers = exchange(app_for(tmp_path, [PAGE]),
                       ("POST", RGSTR, text, SDK_BODY),  # a beacon
                       ("POST", RGSTR, {**text, "statsig-event-count": "1"}, SDK_BODY),  # the SDK's fetch
                       ("POST", "/v1/analytics/events", {"origin": PAGE, "content-type": "application/json"},
                        SEED_BODY),
                       ("POST", "/v1/analytics/events", {"origin": PAGE}, b"{}"),  # an error answer too
                       ("POST", "/v1/rgstr?k=client-not-listed", text, SDK_BODY))  # the key is still checked
    assert [r.status_code for r in answers] == [202, 202, 200, 422, 401]
    for r in answers:
        assert r.headers["access-control-allow-origin"] == PAGE and "Origin" in r.headers["vary"]
        assert r.headers["access-control-expose-headers"] == "Retry-After"
    assert answers[2].json()["success"] is True
    assert [e.get("eventName") or e.get("event_name") for e in appended(tmp_path)] == ["click"] * 3


def test_requests_without_origin_and_other_paths_are_unchanged(tmp_path: Path) -> None:
    before = refused_total()
    answers = exchange(app_for(tmp_path, [PAGE]),
                       ("POST", "/v1/analytics/events", {"content-type": "application/json"}, SEED_BODY),
                       ("POST", "/v1/log_event", {"statsig-api-key": CLIENT_KEY}, SDK_BODY),
                       ("OPTIONS", "/v1/analytics/events", {}, b""),
                       ("GET", "/healthz", {"origin": OTHER}, b""),
                       ("GET", "/metrics", {"origin": OTHER}, b""))
    assert [r.status_code for r in answers] == [200, 202, 405, 200, 200]
    assert all("access-control-allow-origin" not in r.headers for r in answers)
    assert len(appended(tmp_path)) == 2
    assert refused_total() == before


def test_star_allows_any_origin_and_an_empty_list_means_no_cors(tmp_path: Path) -> None:
    star = app_for(tmp_path / "star", ["*"])
    (tmp_path / "star").mkdir()
    r1, r2 = exchange(star, preflight("/v1/rgstr", OTHER, JS_CLIENT_HEADERS),
                      ("POST", RGSTR, {"origin": "null", "content-type": "text/plain"}, SDK_BODY))
    assert r1.status_code == 204 and r1.headers["access-control-allow-origin"] == OTHER
    assert r2.status_code == 202 and r2.headers["access-control-allow-origin"] == "null"
    (tmp_path / "none").mkdir()
    none = app_for(tmp_path / "none", [])
    r3, r4 = exchange(none, preflight("/v1/rgstr", OTHER, JS_CLIENT_HEADERS),
                      ("POST", RGSTR, {"origin": OTHER, "content-type": "text/plain"}, SDK_BODY))
    assert r3.status_code == 405 and "access-control-allow-origin" not in r3.headers, "as before: no CORS"
    assert r4.status_code == 202 and "access-control-allow-origin" not in r4.headers


def test_cors_origins_from_env_and_toml_and_bad_ones_fail_at_start(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDER_RECEIVER__CORS_ORIGINS", f'["{PAGE}", "http://127.0.0.1:8000"]')
    assert load_settings().receiver.cors_origins == [PAGE, "http://127.0.0.1:8000"]
    monkeypatch.delenv("FORWARDER_RECEIVER__CORS_ORIGINS")
    toml = tmp_path / "f.toml"
    toml.write_text('[receiver]\ncors_origins = ["*"]\n')
    assert load_settings(toml).receiver.cors_origins == ["*"]
    assert load_settings().receiver.cors_origins == []
    for bad in (f"{PAGE}/", "app.example.com", "https://App.example.com", f"{PAGE}/path", "null", "https://*.x.com"):
        toml.write_text(f'[receiver]\ncors_origins = ["{bad}"]\n')
        with pytest.raises(ConfigError, match="is not an origin"):
            load_settings(toml)
