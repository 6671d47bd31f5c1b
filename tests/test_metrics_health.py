"""Metrics and readiness of the real CLI, scraped over HTTP while events flow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fake_statsig import FakeStatsig
from kit import SECRET, Cli, Http, P, append, event_line, fast_args, wait_until


def start(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path, *extra: str
) -> tuple[Path, Http, Cli]:
    log = tmp_path / "events.ndjson"
    log.touch()
    cli = spawn("run", str(log), *fast_args(fake, tmp_path / "state"), "--metrics-listen", "127.0.0.1:0",
                *extra)
    return log, Http(cli), cli


def test_metrics_move_as_events_flow_and_lag_flips_readiness(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log, http, cli = start(spawn, fake, tmp_path, "--ready-max-lag-bytes", "2000")
    assert http.get("/healthz")[0] == 200
    assert wait_until(lambda: http.ready()[0] == 200)
    append(log, b"".join(event_line(i) for i in range(50)) + b"not json\n")
    assert fake.wait_for(50)
    assert wait_until(lambda: http.value(P + "events_delivered_total", source="file") == 50)
    m = http.metrics()
    assert m[(P + "events_read_total", (("source", "file"),))] == 50
    assert m[(P + "lines_read_total", (("source", "file"),))] == 51
    assert m[(P + "events_dead_lettered_total", (("reason", "invalid"), ("source", "file")))] == 1
    assert m[(P + "batches_total", (("source", "file"),))] >= 1
    assert m[(P + "batch_latency_seconds_count", ())] == m[(P + "batches_total", (("source", "file"),))]
    assert m[(P + "request_duration_seconds_count", (("outcome", "ok"),))] >= 1
    assert m[(P + "sink_state", (("state", "ok"),))] == 1
    assert wait_until(lambda: http.value(P + "file_bytes_behind", path=str(log)) == 0)
    assert http.value(P + "oldest_undelivered_event_age_seconds") == 0

    # Statsig down: reading goes on, nothing is delivered, lag grows, readiness fails.
    fake.stop()
    append(log, b"".join(event_line(i) for i in range(50, 80)))
    assert wait_until(lambda: http.value(P + "events_read_total", source="file") == 80)
    assert wait_until(lambda: http.value(P + "sink_state", state="retrying") == 1)
    assert wait_until(lambda: http.value(P + "events_retried_total", source="file") > 0)
    assert http.value(P + "events_delivered_total", source="file") == 50
    unsent = sum(len(event_line(i)) for i in range(50, 80))
    assert http.value(P + "file_bytes_behind", path=str(log)) == unsent
    assert wait_until(lambda: http.value(P + "oldest_undelivered_event_age_seconds") > 0.3)
    status, body = http.ready()
    assert status == 503 and any("ready_max_lag_bytes" in r for r in body["reasons"]), body
    assert http.value(P + "ready") == 0

    # Back up: everything delivered, lag gone, ready again.
    fake.start()
    assert fake.wait_for(80)
    assert wait_until(lambda: http.ready()[0] == 200)
    m = http.metrics()
    assert m[(P + "events_delivered_total", (("source", "file"),))] == 80
    assert m[(P + "file_bytes_behind", (("path", str(log)),))] == 0
    assert m[(P + "sink_state", (("state", "ok"),))] == 1
    assert m[(P + "requests_retried_total", (("source", "file"),))] >= 1
    assert m[(P + "request_duration_seconds_count", (("outcome", "retryable"),))] >= 1
    assert cli.stop() == 0


def test_readiness_flips_on_401_and_back(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log, http, cli = start(spawn, fake, tmp_path)
    append(log, event_line(1))
    assert fake.wait_for(1)
    assert wait_until(lambda: http.ready()[0] == 200)

    fake.expected_key = "secret-some-other-key-000000"
    append(log, event_line(2))
    assert wait_until(lambda: http.ready()[0] == 503)
    _, body = http.ready()
    assert body["ready"] is False and any("401" in r for r in body["reasons"]), body
    assert http.value(P + "sink_state", state="auth_failed") == 1
    assert http.value(P + "request_duration_seconds_count", outcome="auth_failed") >= 1
    assert http.get("/healthz")[0] == 200  # alive, just not ready

    fake.expected_key = SECRET  # the key is fixed on Statsig's side
    assert fake.wait_for(2)
    assert wait_until(lambda: http.ready()[0] == 200)
    assert http.value(P + "sink_state", state="ok") == 1
    assert cli.stop() == 0
    errors = [r for r in cli.logs() if r["level"] == "error" and "401" in r.get("error", "")]
    assert errors, "the 401 was logged as an error"


def test_readiness_bound_on_lag_seconds(spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path) -> None:
    log, http, cli = start(spawn, fake, tmp_path, "--ready-max-lag-seconds", "0.5")
    assert wait_until(lambda: http.ready()[0] == 200)
    fake.fail_always(503)
    append(log, event_line(1))
    assert wait_until(lambda: http.ready()[0] == 503)
    assert any("ready_max_lag_seconds" in r for r in http.ready()[1]["reasons"])
    fake.clear_faults()
    assert fake.wait_for(1)
    assert wait_until(lambda: http.ready()[0] == 200)
    assert cli.stop() == 0


def test_metrics_listen_port_in_use_is_a_clear_error(
    spawn: Callable[..., Cli], fake: FakeStatsig, tmp_path: Path
) -> None:
    log, http, cli = start(spawn, fake, tmp_path)
    taken = http.base.removeprefix("http://")
    other = spawn("run", str(log), *fast_args(fake, tmp_path / "state2"), "--metrics-listen", taken)
    assert other.wait() != 0
    assert "cannot listen on" in bytes(other.stderr).decode()
    assert cli.stop() == 0
