"""The Grafana dashboard and the Prometheus alert rules under deploy/.

The rules go through `promtool check rules` and `promtool test rules` (deploy/prometheus/alerts_test.yaml,
where each alert fires on one synthetic instance and stays silent on another); the metric names that the
dashboard's panels and the rules query are checked against the `/metrics` of a running forwarder that has
delivered events and answered a receiver request.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from fake_statsig import FakeStatsig
from kit import SECRET, Cli, append, event_line, fast_args, wait_until
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "statsig-forwarder.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"

# Series Prometheus adds itself (not exported by the forwarder).
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: .ci/run installs it (apt-get install prometheus)"
    return path


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and ranges left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if m.group().lower() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel (rows included)."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in panels(doc["panels"]) for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


RULES = """
[[rules]]
event = "drop_me"
action = "drop"

[[rules]]
event = "maybe_me"
action = "drop"
dry_run = true
"""


def exported_names(spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> set[str]:
    """Sample names on a live `/metrics` after a retry, deliveries, a dead letter, events removed by a rule
    and counted by a dry-run rule, a receiver request and a relay request."""
    config = tmp_path / "forwarder.toml"
    config.write_text(RULES)
    log = tmp_path / "events.ndjson"
    append(log, b"".join(event_line(i) for i in range(20)) + b"not json\n"
           + event_line(20, event_name="drop_me") + event_line(21, event_name="maybe_me"))
    fake.fail_next(1, 503)  # one retry: a warning logged (last_error_info), a retryable outcome
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"), "--config", str(config),
                "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    receiver = "http://" + cli.wait_log("receiver listening")["address"]
    metrics = "http://" + cli.wait_log("metrics listening")["address"]
    posts = [
        ("/v1/analytics/events", b'{"event_name": "e", "user_id": "u"}', {"content-type": "application/json"}),
        ("/v1/log_event", b'{"events": [{"eventName": "relayed", "user": {"userID": "u"}, "time": 1760000000000}]}',
         {"content-type": "application/json", "statsig-api-key": SECRET,
          "statsig-sdk-type": "statsig-server-core-python"}),
    ]
    for path, body, headers in posts:
        with urllib.request.urlopen(urllib.request.Request(receiver + path, data=body, headers=headers),
                                    timeout=10) as r:
            assert r.status in (200, 202), (path, r.status)
    assert fake.wait_for(23), bytes(cli.stderr).decode(errors="replace")  # 20 + maybe_me + receiver + relay

    def samples() -> list[Sample]:
        with urllib.request.urlopen(metrics + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    # The bad line is counted, and the file is still followed (file_bytes_behind has a series).
    assert wait_until(lambda: any(s.name == "statsig_forwarder_events_dead_lettered_total"
                                  and s.labels["reason"] == "invalid" and s.value == 1 for s in samples()))
    names = {s.name for s in samples()}
    assert cli.stop() == 0
    assert "statsig_forwarder_file_bytes_behind" in names, names
    return names


def test_alert_rules_pass_promtool_check() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_alert_rule_unit_tests_pass() -> None:
    proc = subprocess.run([promtool(), "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a case where it fires and one where it must not (promtool checks the exact set)."""
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t["exp_alerts"] else silent).add(t["alertname"])
            # a firing case whose expected set is exact also shows the `good` instance stays silent
            for a in t["exp_alerts"]:
                assert a["exp_labels"].get("instance") != "good", t
    names = {r["alert"] for r in alert_rules()}
    required = {"StatsigForwarderDown", "StatsigForwarderKeyRefused", "StatsigForwarderStalled",
                "StatsigForwarderOldestEventTooOld", "StatsigForwarderDeadLetterRate",
                "StatsigForwarderAbsent"}
    assert required <= names
    assert fires == names
    assert silent == names


def test_every_alert_has_a_runbook_line_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Dashboard and alerts", 1)[1].split("\n## ", 1)[0]
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]


def test_dashboard_and_alert_rules_use_only_exported_metrics(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    exported = exported_names(spawn, fake, tmp_path)
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule
        assert names - PROMETHEUS_OWN <= exported, (rule["alert"], names - exported)
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    used: set[str] = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= exported, (title, sorted(names - exported))
        used |= names
    # What on-call needs: throughput, lag per file, oldest event, Statsig outcomes and latency,
    # dead letters, receiver, relay, event rules, and what `status` shows (per-file progress, the last error).
    for family in ["lines_read_total", "events_delivered_total", "file_bytes_behind",
                   "oldest_undelivered_event_age_seconds", "request_duration_seconds_count",
                   "request_duration_seconds_bucket", "batch_latency_seconds_bucket", "sink_state",
                   "events_dead_lettered_total", "receiver_requests_total", "receiver_events_total",
                   "receiver_append_failures_total", "file_delivered_offset_bytes", "last_error_info",
                   "events_over_statsig_limits_total", "checkpoint_writes_total", "events_removed_total",
                   "events_rule_dry_run_total", "remote_rules_refused_total", "relay_requests_total",
                   "relay_events_total", "relay_bytes_total"]:
        assert "statsig_forwarder_" + family in used, family


def test_dashboard_is_importable_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = []
    cells: dict[tuple[int, int], str] = {}
    for p in doc["panels"]:
        ids.append(p["id"])
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert [t["refId"] for t in p["targets"]] == [chr(65 + i) for i in range(len(p["targets"]))]
            for t in p["targets"]:
                # every query is scoped to the chosen job/instance
                assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], (p["title"], t)
    assert len(ids) == len(set(ids))


def test_metric_names_parser() -> None:
    """The extraction the two tests above rely on."""
    assert metric_names('sum by (le, outcome) (rate(a_bucket{job=~"$job", x="y(z)"}[$__rate_interval]))') == {
        "a_bucket"}
    assert metric_names("sum by (job) (delta(b[10m])) > 0 and on (job) c == 0") == {"b", "c"}
    assert metric_names('up{job="x"} == 0') == {"up"}

