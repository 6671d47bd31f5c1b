"""Real Statsig SDKs as clients of the relay, end to end (no stand-ins for an SDK).

Each SDK (statsig-python-core, @statsig/statsig-node-core, the legacy `statsig` Python SDK,
@statsig/js-client under Node) runs as a separate process from tests/sdk/, its event URL
at the sidecar (`run --listen`), its specs at the fake Statsig. It checks a gate whose rule
depends on another gate (so its exposure carries a secondary exposure), reads a dynamic
config and logs custom events. Every event must reach the fake Statsig exactly once, as the
SDK sent it: what the relay appended to the log is what Statsig receives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fake_statsig import SDK_SPECS, FakeStatsig
from kit import SECRET, Cli, fast_args, wait_until

SDK_DIR = Path(__file__).parent / "sdk"
CLIENT_KEY = "client-relay-test-key-42"
USERS = ["u1", "u2", "u3"]
EVENTS: list[dict[str, Any]] = [
    {"name": "purchase", "value": 9.5, "metadata": {"sku": "X-1", "qty": "2"}},
    {"name": "signup", "value": "pro", "metadata": {"source": "web"}},
    {"name": "page_view", "value": None, "metadata": None},
]
CHILD_EXPOSURE = {"gate": "relay_child", "gateValue": "true", "ruleID": "rule_child"}
EVENT_ID = "forwarder_event_id"


def node() -> str:
    path = shutil.which("node")
    assert path, "node is required (.ci/run installs it with the SDKs of tests/sdk)"
    assert (SDK_DIR / "node_modules" / "@statsig").is_dir(), "run `npm ci` in tests/sdk (.ci/run does)"
    return path


def start_sidecar(spawn: Callable[..., Cli], fake: FakeStatsig, tmp: Path, listen: str = "127.0.0.1:0",
                  *extra: str) -> tuple[Cli, str]:
    """`run --listen` tailing tmp/events.ndjson; returns (process, base URL)."""
    fake.specs = SDK_SPECS
    cli = spawn("run", str(tmp / "events.ndjson"), "--listen", listen, *fast_args(fake, tmp / "state"), *extra,
                env={"FORWARDER_RELAY__KEYS": json.dumps([CLIENT_KEY])})
    rec = cli.wait_log("receiver listening")
    return cli, f"http://{rec['address']}"


def run_sdk(kind: str, sidecar: str, fake: FakeStatsig, timeout: float = 60, **spec: Any) -> subprocess.Popen[str]:
    """Start one SDK driver of tests/sdk/ (see each script's docstring)."""
    spec = {"users": USERS, "events": EVENTS, "gates": ["relay_gate"], "configs": ["relay_config"], **spec}
    base = f"http://{fake.host}:{fake.port}"
    if kind == "python-core":
        cmd = [sys.executable, "python_core.py"]
        spec.update(key=SECRET, log_event_url=f"{sidecar}/v1/log_event", specs_url=f"{fake.url}/download_config_specs")
    elif kind == "node-core":
        cmd = [node(), "node_core.js"]
        spec.update(key=SECRET, log_event_url=f"{sidecar}/v1/log_event", specs_url=f"{fake.url}/download_config_specs")
    elif kind == "python-legacy":
        cmd = [sys.executable, "python_legacy.py"]
        spec.update(key=SECRET, api_for_log_event=f"{sidecar}/v1/", api_for_specs=f"{base}/legacy/v1/")
    else:
        cmd = [node(), "js_client.js"]
        spec.update(key=CLIENT_KEY, log_event_url=f"{sidecar}/v1/rgstr", api=fake.url)
    return subprocess.Popen([*cmd, json.dumps(spec)], cwd=SDK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"SDK driver failed: {err[-3000:]}"
    logged: int = json.loads(out.strip().splitlines()[-1])["logged"]
    return logged


def log_lines(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def as_sent(event: dict[str, Any]) -> dict[str, Any]:
    """A delivered event without the forwarder's own id (metadata it adds for de-duplication)."""
    out = dict(event)
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k != EVENT_ID}
    if meta or (out.get("metadata") and set(out["metadata"]) != {EVENT_ID}):
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


def canon(events: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events)


def assert_sdk_events_arrived_once(fake: FakeStatsig, tmp: Path, started_ms: int, ended_ms: int) -> None:
    """Every appended event reached Statsig once, intact, and they are what the SDK logged."""
    lines = log_lines(tmp)
    assert wait_until(lambda: fake.event_count >= len(lines) > 0, 30), (len(lines), fake.event_count)
    time.sleep(0.3)  # nothing more may arrive
    delivered = [as_sent(e) for e in fake.events]
    assert canon(delivered) == canon(lines), "Statsig received exactly what the relay appended, once each"
    app = [e for e in delivered if not e["eventName"].startswith("statsig::")]
    exposures = [e for e in delivered if e["eventName"].endswith("_exposure")]
    for uid in USERS:
        mine = [e for e in app if e["user"]["userID"] == uid]
        assert sorted(e["eventName"] for e in mine) == sorted(e["name"] for e in EVENTS), mine
        for sent in EVENTS:
            got = next(e for e in mine if e["eventName"] == sent["name"])
            assert got.get("value") == sent["value"] and got.get("metadata") == sent["metadata"], got
            assert got["user"]["email"] == f"{uid}@example.com" and got["user"]["custom"] == {"plan": "pro"}
        gates = [e for e in exposures if e["eventName"] == "statsig::gate_exposure" and e["user"]["userID"] == uid]
        assert len(gates) == 1 and gates[0]["metadata"]["gate"] == "relay_gate", gates
        assert gates[0]["metadata"]["ruleID"] == "rule_parent" and gates[0]["secondaryExposures"] == [CHILD_EXPOSURE]
        configs = [e for e in exposures if e["eventName"] == "statsig::config_exposure" and e["user"]["userID"] == uid]
        assert len(configs) == 1 and configs[0]["metadata"]["config"] == "relay_config", configs
    assert all(started_ms <= e["time"] <= ended_ms for e in delivered), "each event keeps the SDK's own time"
    for request in fake.accepted_requests():  # the forwarder's request time is its own attempt's
        assert int(request.headers["statsig-client-time"]) >= max(e["time"] for e in request.events)
        assert request.headers["statsig-api-key"] == SECRET


@pytest.mark.parametrize("kind", ["python-core", "node-core", "python-legacy", "js-client"])
def test_sdk_events_and_exposures_reach_statsig_once(kind: str, spawn: Callable[..., Cli], fake: FakeStatsig,
                                                     tmp_path: Path) -> None:
    cli, sidecar = start_sidecar(spawn, fake, tmp_path)
    started = int(time.time() * 1000)
    logged = finish(run_sdk(kind, sidecar, fake))
    if kind == "js-client":  # again, gzip'd: marked only by gz=1 in the query
        logged += finish(run_sdk(kind, sidecar, fake, users=["u9"], compression="f"))
    ended = int(time.time() * 1000)
    assert logged == len(USERS) * (2 + len(EVENTS)) + (2 + len(EVENTS) if kind == "js-client" else 0)
    if kind == "js-client":
        assert wait_until(lambda: sum(e.get("user", {}).get("userID") == "u9" for e in fake.events) >= 5, 30)
    assert_sdk_events_arrived_once(fake, tmp_path, started, ended)
    metrics = httpx.get(f"{sidecar}/metrics").text
    encoding = {"python-core": "gzip", "node-core": "zstd", "python-legacy": "gzip", "js-client": "gzip"}[kind]
    assert any(line.startswith("statsig_forwarder_relay_bytes_total{") and f'encoding="{encoding}"' in line
               and 'outcome="accepted"' in line for line in metrics.splitlines()), metrics
    assert 'statsig_forwarder_relay_events_total{outcome="appended"' in metrics
    assert cli.stop() == 0
    for text in (bytes(cli.stderr).decode(), (tmp_path / "events.ndjson").read_text()):
        assert SECRET not in text and CLIENT_KEY not in text


def test_kill9_while_the_sdk_keeps_logging_loses_nothing(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                         tmp_path: Path) -> None:
    """statsig-python-core retries its connection failures; what the relay appended is delivered."""
    cli, sidecar = start_sidecar(spawn, fake, tmp_path)
    n = 600
    sdk = run_sdk("python-core", sidecar, fake, users=[], stream={"count": n, "per_second": 300},
                  flush_interval_ms=100)
    assert wait_until(lambda: len(log_lines(tmp_path)) > 100, 30)
    cli.kill9()
    time.sleep(0.3)  # the SDK meets refused connections, and retries
    listen = sidecar.removeprefix("http://")
    cli, _ = start_sidecar(spawn, fake, tmp_path, listen)
    assert finish(sdk) == n
    seqs = [int(e["metadata"]["seq"]) for e in log_lines(tmp_path) if e["eventName"] == "stream_event"]
    assert set(seqs) == set(range(n)), f"missing in the log: {sorted(set(range(n)) - set(seqs))[:20]}"
    assert wait_until(lambda: {int(e["metadata"]["seq"]) for e in fake.events
                               if e["eventName"] == "stream_event"} == set(range(n)), 30)
    # At-least-once: a batch appended but unanswered when the process died is sent again by the
    # SDK, and a batch delivered but not yet checkpointed is sent again by the forwarder.
    assert cli.stop() == 0


def test_statsig_down_the_sdk_sees_202_and_its_shutdown_flush_lands(spawn: Callable[..., Cli], fake: FakeStatsig,
                                                                  tmp_path: Path) -> None:
    fake.fail_always(503)
    cli, sidecar = start_sidecar(spawn, fake, tmp_path)
    started = int(time.time() * 1000)
    logged = finish(run_sdk("python-core", sidecar, fake))  # logs, then shutdown(): its own final flush
    ended = int(time.time() * 1000)
    lines = log_lines(tmp_path)
    app_events = [e for e in lines if not e["eventName"].startswith("statsig::diagnostics")]
    assert len(app_events) == logged, "the SDK lost nothing: every event is in the file"
    assert wait_until(lambda: len(fake.requests) >= 2, 10), "the forwarder tries, and Statsig refuses"
    assert fake.event_count == 0
    fake.clear_faults()
    assert_sdk_events_arrived_once(fake, tmp_path, started, ended)
    assert cli.stop() == 0
