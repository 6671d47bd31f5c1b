"""Prometheus metrics of a run, in prometheus-client's default registry.

Counters and gauges are computed when scraped (`RunCollector` reads `Stats` and the lag
probe), so the pipeline pays nothing per event; only the two histograms are observed, once
per request and once per batch. Reference (all names start with `statsig_forwarder_`):

    lines_read_total{source}                 lines read (blank and invalid ones included)
    events_read_total{source}                valid events read
    events_delivered_total{source}           events Statsig accepted
    events_dead_lettered_total{source,reason} reason: invalid (line refused by the forwarder)
                                             | statsig_rules (a valid event Statsig would drop:
                                               its name, or oversize_fields = "reject")
                                             | rejected_by_statsig (400/413/422 for that event)
    events_over_statsig_limits_total{source,field} events with a field over Statsig's size limits
                                             (field: event_name | value | metadata | user), sent
                                             (oversize_fields = "send") or dead-lettered
    checkpoint_writes_total                  checkpoint files written
    checkpoint_syncs_total                   checkpoint files fsync'd (checkpoint_fsync_interval)
    events_retried_total{source}             events in requests that failed and were re-sent
    requests_retried_total{source}           requests that failed and were re-sent
    batches_total{source}                    batches delivered
    events_removed_total{source,origin,rule,action}  events removed by an event rule (origin: local | remote)
    events_rule_dry_run_total{source,origin,rule,action}  events a dry-run rule would have removed
    remote_rules_updates_total               remote rule lists applied
    remote_rules_refused_total               malformed remote rule values refused whole
    request_duration_seconds{outcome}        histogram of each POST: ok | retryable | auth_failed | rejected
    batch_latency_seconds                    histogram: first event of a batch read -> batch accepted
    file_bytes_behind{path}                  file size minus its delivered checkpoint
    file_size_bytes{path}                    size of each followed file
    file_delivered_offset_bytes{path}        its delivered checkpoint (where reading began, before any)
    file_last_delivery_timestamp_seconds{path}  when that checkpoint last moved (0: not yet)
    files_open                               files being followed
    oldest_undelivered_event_age_seconds     age of the oldest event read but not yet acknowledged
    sink_state{state}                        1 for the current state: ok | retrying | auth_failed
    ready                                    1 when /readyz answers 200
    last_error_info{level,reason}            1, labelled with the last warning or error logged (reason: a
                                             bounded code, e.g. delivery_failed; its text is in the
                                             log, /readyz `last_problem` and `status`)
    last_error_timestamp_seconds             when it was logged (0: none yet)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .decode.event import OVERSIZE_FIELDS
from .health import Lag
from .logs import LAST_PROBLEM
from .stats import Stats

PREFIX = "statsig_forwarder_"
SINK_STATES = ("ok", "retrying", "auth_failed")

REQUEST_SECONDS = Histogram(
    PREFIX + "request_duration_seconds",
    "Duration of each POST to Statsig, by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SECONDS = Histogram(
    PREFIX + "batch_latency_seconds",
    "Seconds from the first event of a batch being read to Statsig accepting the batch (retries included).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)


class RunCollector(Collector):
    """Exposes one run's counters, lag and state; registered for the life of the run."""

    def __init__(
        self,
        source: str,
        stats: Stats,
        lag: Callable[[], Lag],
        ready: Callable[[], tuple[bool, list[str]]],
    ) -> None:
        self.source = source
        self._stats = stats
        self._lag = lag
        self._ready = ready

    def register(self) -> RunCollector:
        REGISTRY.register(self)
        return self

    def unregister(self) -> None:
        REGISTRY.unregister(self)

    def describe(self) -> Iterator[Metric]:
        """Names only (lets the registry check for clashes without computing values)."""
        return self._families(None, None, None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._stats.snapshot(), self._lag(), self._ready()[0])

    def _rule_families(self, values: bool) -> Iterator[Metric]:
        labels = ["source", "origin", "rule", "action"]
        removed = CounterMetricFamily(PREFIX + "events_removed", "Events removed by an event rule.", labels=labels)
        dry = CounterMetricFamily(PREFIX + "events_rule_dry_run",
                                  "Events a dry-run event rule would have removed.", labels=labels)
        if values:
            for row in self._stats.removed_by_rule():
                family = dry if row["dry_run"] else removed
                family.add_metric([self.source, str(row["origin"]), str(row["rule"]), str(row["action"])],
                                  int(row["events"]))
        yield removed
        yield dry
        s = self._stats.snapshot() if values else None
        for name, key, doc in (("remote_rules_updates", "remote_rules_applied", "Remote rule lists applied."),
                               ("remote_rules_refused", "remote_rules_refused",
                                "Malformed remote rule values refused whole.")):
            family = CounterMetricFamily(PREFIX + name, doc)
            if s is not None:
                family.add_metric([], int(s[key]))
            yield family

    def _families(
        self, s: dict[str, int | str] | None, lag: Lag | None, ready: bool | None
    ) -> Iterator[Metric]:
        src = [self.source]

        def counter(name: str, doc: str, value: int | None, labels: tuple[str, ...] = ("source",),
                    values: list[str] = src) -> CounterMetricFamily:
            family = CounterMetricFamily(PREFIX + name, doc, labels=list(labels))
            if value is not None:
                family.add_metric(values, value)
            return family

        def num(key: str) -> int | None:
            return None if s is None else int(s[key])

        yield counter("lines_read", "Lines read (blank and invalid ones included).", num("lines_read"))
        yield counter("events_read", "Valid events read.", num("events_read"))
        yield counter("events_delivered", "Events Statsig accepted.", num("events_delivered"))
        dead = CounterMetricFamily(PREFIX + "events_dead_lettered", "Events written to the dead-letter file.",
                                   labels=["source", "reason"])
        if s is not None:
            by_statsig = int(s["events_rejected_by_statsig"])
            rules = int(s["events_statsig_rules"])
            dead.add_metric([self.source, "invalid"], int(s["events_dead_lettered"]) - by_statsig - rules)
            dead.add_metric([self.source, "statsig_rules"], rules)
            dead.add_metric([self.source, "rejected_by_statsig"], by_statsig)
        yield dead
        over = CounterMetricFamily(PREFIX + "events_over_statsig_limits",
                                   "Events with a field over Statsig's documented size limits.",
                                   labels=["source", "field"])
        if s is not None:
            for field in OVERSIZE_FIELDS:
                over.add_metric([self.source, field], int(s["over_limit_" + field]))
        yield over
        yield counter("events_retried", "Events in requests that failed and were sent again.",
                      num("events_retried"))
        yield counter("requests_retried", "Requests to Statsig that failed and were sent again.",
                      num("send_retries"))
        yield counter("batches", "Batches Statsig accepted.", num("batches_sent"))
        yield counter("checkpoint_writes", "Checkpoint files written.", num("checkpoint_writes"), (), [])
        yield counter("checkpoint_syncs", "Checkpoint files fsync'd.", num("checkpoint_syncs"), (), [])
        yield from self._rule_families(s is not None)

        behind = GaugeMetricFamily(PREFIX + "file_bytes_behind",
                                   "File size minus its delivered checkpoint.", labels=["path"])
        files = GaugeMetricFamily(PREFIX + "files_open", "Files being followed.")
        oldest = GaugeMetricFamily(PREFIX + "oldest_undelivered_event_age_seconds",
                                   "Age of the oldest event read but not yet acknowledged (0: none).")
        size = GaugeMetricFamily(PREFIX + "file_size_bytes", "Size of each followed file.", labels=["path"])
        offset = GaugeMetricFamily(PREFIX + "file_delivered_offset_bytes",
                                   "Delivered checkpoint of each followed file.", labels=["path"])
        moved = GaugeMetricFamily(PREFIX + "file_last_delivery_timestamp_seconds",
                                  "When each file's delivered checkpoint last moved (0: not yet).",
                                  labels=["path"])
        if lag is not None:
            for path, n in sorted(lag.bytes_behind.items()):
                behind.add_metric([path], n)
            for path, f in sorted(lag.files.items()):
                size.add_metric([path], f.size)
                offset.add_metric([path], f.delivered)
                moved.add_metric([path], f.moved)
            files.add_metric([], len(lag.bytes_behind))
            oldest.add_metric([], lag.oldest_age)
        yield behind
        yield size
        yield offset
        yield moved
        yield files
        yield oldest

        state = GaugeMetricFamily(PREFIX + "sink_state", "1 for the sink's current state.", labels=["state"])
        if s is not None:
            for name in SINK_STATES:
                state.add_metric([name], 1.0 if s["sink_state"] == name else 0.0)
        yield state
        ready_family = GaugeMetricFamily(PREFIX + "ready", "1 when ready (/readyz answers 200).")
        if ready is not None:
            ready_family.add_metric([], 1.0 if ready else 0.0)
        yield ready_family
        problem = GaugeMetricFamily(PREFIX + "last_error_info", "1, labelled with the last warning or error "
                                    "logged (reason: a short code; the text is in the log, /readyz and status).",
                                    labels=["level", "reason"])
        when = GaugeMetricFamily(PREFIX + "last_error_timestamp_seconds",
                                 "When the last warning or error was logged (0: none yet).")
        if s is not None:
            last = LAST_PROBLEM.last
            if last is not None:
                problem.add_metric([last.level, last.reason], 1.0)
            when.add_metric([], last.time if last is not None else 0.0)
        yield problem
        yield when
