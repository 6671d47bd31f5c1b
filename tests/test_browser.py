"""Web pages as producers, in a real headless Chromium (Debian's `chromium`, tests/browser/chromium.py).

Each page is served from an origin of its own (a small http.server on another port) and posts
to the sidecar (`run --listen` with receiver.cors_origins, the fake Statsig as Statsig): the
seed's frontend snippet, and @statsig/js-client's web bundle loaded by a <script> tag, as
Statsig's docs load it (initialize from the fake Statsig, events to the sidecar's /v1/rgstr).
Every event must reach the fake Statsig exactly once, and the browser must report no failed
request (a missing Access-Control-Allow-Origin makes fetch throw and the SDK send again). A page
of an origin not on the list appends nothing, preflighted or not.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from browser.chromium import Chromium, Page
from fake_statsig import SDK_SPECS, FakeStatsig
from kit import Cli, cli_env, fast_args, wait_until
from prometheus_client.parser import text_string_to_metric_families

PAGES = Path(__file__).parent / "browser" / "pages"
BUNDLE = (Path(__file__).parent / "sdk" / "node_modules" / "@statsig" / "js-client" / "build"
          / "statsig-js-client+web-analytics.min.js")
CLIENT_KEY = "client-browser-test-key-7"
CHILD_EXPOSURE = {"gate": "relay_child", "gateValue": "true", "ruleID": "rule_child"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Start a web server for the test pages (and the js-client bundle) on a port of its own: its origin."""
    root = tmp_path / "site"
    shutil.copytree(PAGES, root)
    assert BUNDLE.is_file(), "run `npm ci` in tests/sdk (.ci/run does): @statsig/js-client's web bundle"
    shutil.copy(BUNDLE, root)
    servers: list[ThreadingHTTPServer] = []

    def start() -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


def start_sidecar(spawn: Callable[..., Cli], fake: FakeStatsig, tmp: Path, origins: list[str]) -> tuple[Cli, str]:
    fake.specs = SDK_SPECS
    cli = spawn("run", str(tmp / "events.ndjson"), "--listen", "127.0.0.1:0", *fast_args(fake, tmp / "state"),
                env={"FORWARDER_RELAY__KEYS": json.dumps([CLIENT_KEY]),
                     "FORWARDER_RECEIVER__CORS_ORIGINS": json.dumps(origins)})
    rec = cli.wait_log("receiver listening")
    return cli, f"http://{rec['address']}"


def metrics(sidecar: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{sidecar}/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def answered(sidecar: str, path: str) -> dict[str, int]:
    """The sidecar's answers on `path` by status code (statsig_forwarder_receiver_requests_total)."""
    out = {}
    for (name, labels), v in metrics(sidecar).items():
        d = dict(labels)
        if name == "statsig_forwarder_receiver_requests_total" and d["path"] == path and v:
            out[d["code"]] = int(v)
    return out


def refused(sidecar: str) -> int:
    return int(sum(v for (name, _), v in metrics(sidecar).items()
                   if name == "statsig_forwarder_receiver_cors_refused_total"))


def log_lines(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def delivered(fake: FakeStatsig) -> list[dict[str, Any]]:
    return list(fake.events)


def assert_no_failed_requests(page: Page, sidecar: str) -> None:
    requests = page.requests_to(sidecar)
    assert requests, "the page posted to the sidecar"
    bad = [r for r in requests if r["failed"] is not None or r["status"] not in (200, 202, 204)]
    assert not bad, json.dumps(bad, indent=1)
    assert not page.console_errors(), page.console_errors()


def test_the_seeds_frontend_snippet_from_another_origin(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                        tmp_path: Path, site: Callable[[], str],
                                                        chromium: Chromium) -> None:
    origin = site()
    cli, sidecar = start_sidecar(spawn, fake, tmp_path, [origin])
    page = chromium.page()
    page.goto(f"{origin}/seed.html?sidecar={sidecar}")
    singles = page.eval("Promise.all([...Array(40).keys()].map(i => "
                        "outcome(trackEvent('seed_click', {seq: String(i), page: 'checkout'}))))")
    batches = page.eval("Promise.all([...Array(10).keys()].map(b => outcome(trackEvents([...Array(4).keys()].map("
                        "i => ({event_name: 'seed_batch', metadata: {seq: String(b * 4 + i)}}))))))")
    assert singles == [{"success": True}] * 40, singles
    assert batches == [{"success": True}] * 10, batches
    assert wait_until(lambda: fake.event_count >= 80, 30), fake.event_count
    time.sleep(0.5)  # nothing more may arrive
    got = Counter((e["eventName"], e["metadata"]["seq"]) for e in delivered(fake))
    expected = Counter([("seed_click", str(i)) for i in range(40)] + [("seed_batch", str(i)) for i in range(40)])
    assert got == expected, "every call's event reached Statsig once"
    assert all(e["metadata"]["page"] == "checkout" for e in delivered(fake) if e["eventName"] == "seed_click")
    assert_no_failed_requests(page, sidecar)
    preflights = [r for r in page.requests_to(sidecar) if r["method"] == "OPTIONS"]
    assert preflights and {r["status"] for r in preflights} == {204}, "the JSON POSTs were preflighted"
    events, batch = answered(sidecar, "/v1/analytics/events"), answered(sidecar, "/v1/analytics/batch")
    assert events.pop("200") == 40 and batch.pop("200") == 10
    assert set(events) | set(batch) == {"204"}, "the rest: preflights, answered 204"
    assert refused(sidecar) == 0
    assert cli.stop() == 0


def test_statsig_js_client_web_bundle_from_another_origin(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                          tmp_path: Path, site: Callable[[], str],
                                                          chromium: Chromium) -> None:
    origin = site()
    cli, sidecar = start_sidecar(spawn, fake, tmp_path, [origin])
    page = chromium.page()
    page.goto(f"{origin}/js_client.html?sidecar={sidecar}&api={fake.url}&key={CLIENT_KEY}")
    assert page.eval("start('u1')") == "Ready", "initialized from the fake Statsig"
    assert page.eval("client.checkGate('relay_gate')") is True
    page.eval("[...Array(40).keys()].forEach(i => client.logEvent('add_to_cart', 9.5, {seq: String(i)}))")
    page.eval("client.flush()")
    # flush() may resolve while an auto-capture flush it waited for is still sending (SDK behaviour)
    assert wait_until(lambda: sum(e["eventName"] == "add_to_cart" for e in log_lines(tmp_path)) >= 40, 10)
    time.sleep(0.3)
    flushed = Counter(name for batch in page.eval("flushed") for name in batch)
    in_log = Counter(e["eventName"] for e in log_lines(tmp_path))
    assert in_log["add_to_cart"] == 40 and in_log["statsig::gate_exposure"] == 1, in_log
    assert in_log["auto_capture::page_view"] == 1, in_log
    assert flushed == in_log, "the log holds exactly what the SDK sent"
    assert page.eval("sdkErrors") == []
    assert_no_failed_requests(page, sidecar)
    preflighted = {r["url"] for r in page.requests_to(sidecar) if r["method"] == "OPTIONS"}
    assert preflighted == {r["url"] for r in page.requests_to(sidecar) if r["method"] == "POST"}, \
        "each of the SDK's fetches was preflighted (statsig-* headers), and the preflight answered"

    # Events logged right before the page is left: the SDK's pagehide handler sends them with
    # navigator.sendBeacon (text/plain, no custom headers, no preflight). Without auto-capture,
    # whose beforeunload handler would flush them first with fetch.
    leaving = chromium.page()
    leaving.goto(f"{origin}/js_client.html?sidecar={sidecar}&api={fake.url}&key={CLIENT_KEY}&autocapture=0")
    assert leaving.eval("start('u2').then(() => client.flush()).then(() => client.loadingStatus)") == "Ready"
    assert leaving.eval("sdkErrors") == []
    assert_no_failed_requests(leaving, sidecar)
    leaving.eval("[...Array(5).keys()].forEach(i => client.logEvent('before_leaving', null, {seq: String(i)}));"
                 f"location.href = '{origin}/seed.html'; true")
    assert wait_until(lambda: sum(e["eventName"] == "before_leaving" for e in log_lines(tmp_path)) >= 5, 20), \
        "the beacon's events were appended"
    leaving.wait_for("location.pathname === '/seed.html' && document.readyState === 'complete'")
    beacons = json.loads(leaving.eval("sessionStorage.getItem('beacons')") or "[]")
    assert [b["events"] for b in beacons] == [["before_leaving"] * 5], beacons
    assert beacons[0]["queued"] is True and beacons[0]["type"] == "string"
    assert beacons[0]["url"].startswith(f"{sidecar}/v1/rgstr?k={CLIENT_KEY}&"), "the key only in ?k="
    rgstr = [r for r in leaving.requests_to(sidecar) if r["method"] == "POST"]
    assert all("statsig-event-count" in r["headers"] for r in rgstr), "the fetches before: not the beacon"

    lines = log_lines(tmp_path)
    assert wait_until(lambda: fake.event_count >= len(lines), 30), (len(lines), fake.event_count)
    time.sleep(0.5)  # nothing more may arrive
    events = delivered(fake)
    canon = Counter(orjson.dumps({k: v for k, v in e.items() if k != "metadata"} | {
        "metadata": {k: v for k, v in (e.get("metadata") or {}).items() if k != "forwarder_event_id"}},
        option=orjson.OPT_SORT_KEYS) for e in events)
    assert max(canon.values()) == 1, "no event arrived twice"
    assert len(events) == len(lines), "Statsig received what the sidecar appended, once each"
    names = Counter(e["eventName"] for e in events)
    assert names["add_to_cart"] == 40 and names["before_leaving"] == 5 and names["auto_capture::page_view"] == 1
    custom = sorted(int(e["metadata"]["seq"]) for e in events if e["eventName"] == "add_to_cart")
    assert custom == list(range(40))
    leaving_events = [e for e in events if e["eventName"] == "before_leaving"]
    assert sorted(e["metadata"]["seq"] for e in leaving_events) == list("01234")
    assert {e["user"]["userID"] for e in leaving_events} == {"u2"}
    [gate] = [e for e in events if e["eventName"] == "statsig::gate_exposure"]
    assert gate["user"]["userID"] == "u1" and gate["user"]["email"] == "u1@example.com"
    assert gate["metadata"]["gate"] == "relay_gate" and gate["metadata"]["ruleID"] == "rule_parent"
    assert gate["secondaryExposures"] == [CHILD_EXPOSURE]
    [view] = [e for e in events if e["eventName"] == "auto_capture::page_view"]
    assert view["user"]["userID"] == "u1" and view["metadata"]["page_url"].startswith(f"{origin}/js_client.html")
    codes = answered(sidecar, "/v1/rgstr")
    assert codes.keys() <= {"202", "204"} and codes["202"] >= 3, codes  # 204: the preflights
    assert refused(sidecar) == 0
    assert cli.stop() == 0


def test_a_page_of_an_origin_not_listed_appends_nothing(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                        tmp_path: Path, site: Callable[[], str],
                                                        chromium: Chromium) -> None:
    allowed, other = site(), site()
    cli, sidecar = start_sidecar(spawn, fake, tmp_path, [allowed])
    page = chromium.page()
    page.goto(f"{other}/refused.html?sidecar={sidecar}&key={CLIENT_KEY}")
    assert "Failed to fetch" in page.eval("preflighted()")["error"]
    assert "Failed to fetch" in page.eval("sdkFetch()")["error"]
    assert "Failed to fetch" in page.eval("simple()")["error"], "sent, refused, and unreadable to the page"
    assert page.eval("opaque()") == {"type": "opaque"}
    assert page.eval("beacon()") is True, "the browser queued the beacon"
    # preflighted(), sdkFetch(): their preflights; simple(), opaque(), beacon(): the POSTs themselves
    assert wait_until(lambda: refused(sidecar) >= 5, 10), refused(sidecar)
    assert answered(sidecar, "/v1/rgstr") == {"403": 4}
    assert answered(sidecar, "/v1/analytics/events") == {"403": 1}
    sent = {r["method"] for r in page.requests_to(sidecar)}
    assert sent == {"OPTIONS", "POST"}, "the browser sent the simple requests without asking first"

    # The same simple request from the listed origin is appended: the refusal above was the origin's.
    page.goto(f"{allowed}/refused.html?sidecar={sidecar}&key={CLIENT_KEY}")
    assert page.eval("simple()") == {"status": 202}
    time.sleep(0.5)
    assert [e["eventName"] for e in log_lines(tmp_path)] == ["refused_0", "refused_1", "refused_2"]
    assert refused(sidecar) == 5
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "forwarder", "status", "--state-dir", str(state), "--json"],
                          capture_output=True, text=True, timeout=30, env=cli_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["receiver"]["receiver_cors_refused"] == 5
    assert wait_until(lambda: fake.event_count >= 3, 30)
    time.sleep(0.3)
    assert sorted(e["eventName"] for e in fake.events) == ["refused_0", "refused_1", "refused_2"]
    assert cli.stop() == 0
    warnings = [r for r in cli.logs() if "origin is not in receiver.cors_origins" in r.get("msg", "")]
    assert [(r["level"], r["origin"]) for r in warnings] == [("warning", other)], "logged once per origin"
    assert CLIENT_KEY not in bytes(cli.stderr).decode()
