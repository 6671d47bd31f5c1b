"""`status`: one screen on a forwarder, from its /metrics and /readyz, or its state directory.

A running instance is found through <state_dir>/runtime.json (control.py): its pid and the
address serving /metrics (metrics_listen, else the receiver). Two scrapes `interval` apart
give the rates. A stopped instance (or one serving no metrics) is described from its
checkpoints and the files' sizes. `top` (top.py) renders the same `Status` live.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from ..control import Runtime, pid_alive
from ..metrics import PREFIX
from ..settings import Settings
from ..source.fingerprint import FINGERPRINT_BYTES
from ..state.checkpoints import CHECKPOINT_FILE, Checkpoints
from ..state.lock import LOCK_FILE
from .checkpoints import rows

STATSIG_STATES = {"ok": "ok", "retrying": "retrying", "auth_failed": "refusing the key",
                  "stopped": "stopped", "unknown": "unknown"}
RELAY_PREFIXES = (PREFIX + "receiver_", PREFIX + "relay_")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Unreachable(Exception):
    """The instance's HTTP address does not answer."""


@dataclass
class FileStatus:
    """One followed (or checkpointed) file."""

    path: str
    offset: int  # delivered offset
    size: int | None
    bytes_behind: int | None
    seconds_behind: float  # since its offset last moved while bytes wait (0 when caught up)
    bytes_per_s: float | None = None  # delivered, between the two scrapes
    state: str = "following"  # following | checkpoint (stopped) | missing | replaced | unreadable: ...


@dataclass
class Status:
    """What `status` shows; `as_dict` is the --json document."""

    source: str  # live | state_dir
    state_dir: str
    running: bool
    pid: int | None = None
    address: str | None = None
    uptime_s: float | None = None
    ready: bool | None = None
    reasons: list[str] = field(default_factory=list)
    statsig: str = "unknown"  # ok | retrying | auth_failed | stopped | unknown
    last_error: dict[str, Any] | None = None  # {"time", "level", "reason", "message"}
    events: dict[str, float | None] = field(default_factory=dict)  # read, delivered, ... and *_per_s
    dead_letter: dict[str, int] = field(default_factory=dict)  # by reason, and total
    oldest_undelivered_age_s: float | None = None
    files: list[FileStatus] = field(default_factory=list)
    receiver: dict[str, int] = field(default_factory=dict)  # receiver/relay counters
    note: str | None = None

    @property
    def bytes_behind(self) -> int:
        return sum(f.bytes_behind or 0 for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["statsig_text"] = STATSIG_STATES.get(self.statsig, self.statsig)
        doc["bytes_behind"] = self.bytes_behind
        return doc


@dataclass(frozen=True)
class Scrape:
    at: float  # monotonic
    wall: float
    samples: Samples
    ready: bool
    reasons: list[str]
    problem: dict[str, Any] | None = None  # /readyz `last_problem`: the text the metric's label leaves out


def scrape(address: str, timeout: float = 3.0) -> Scrape:
    """GET /metrics and /readyz of `address` (HOST:PORT)."""
    base = f"http://{address}"
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=timeout) as r:
                body = orjson.loads(r.read())
        except urllib.error.HTTPError as e:  # 503: not ready, same body
            body = orjson.loads(e.read())
    except (OSError, ValueError) as e:
        raise Unreachable(f"{base}: {getattr(e, 'reason', None) or e}") from None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(time.monotonic(), time.time(), samples, bool(body.get("ready")), list(body.get("reasons", [])),
                  body.get("last_problem"))


def _sum(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _by_path(samples: Samples, name: str) -> dict[str, float]:
    return {dict(ls)["path"]: v for (n, ls), v in samples.items() if n == name and "path" in dict(ls)}


def from_scrapes(runtime: Runtime | None, state_dir: Path, address: str, cur: Scrape,
                 prev: Scrape | None = None) -> Status:
    """A live Status from one scrape, with rates when an earlier one is given."""
    s = cur.samples
    dt = cur.at - prev.at if prev is not None else 0.0

    def rate(name: str, **labels: str) -> float | None:
        if prev is None or dt <= 0:
            return None
        return max(0.0, (_sum(s, name, **labels) - _sum(prev.samples, name, **labels)) / dt)

    state = next((dict(ls)["state"] for (n, ls), v in s.items() if n == PREFIX + "sink_state" and v == 1), "unknown")
    last_error = None
    for (n, ls), v in s.items():
        if n == PREFIX + "last_error_info" and v == 1:
            labels = dict(ls)
            last_error = {"time": _sum(s, PREFIX + "last_error_timestamp_seconds"), "level": labels["level"],
                          "reason": labels.get("reason", ""), "message": labels.get("reason", "")}
    if cur.problem:  # the same problem (or a newer one), with its text
        last_error = {k: cur.problem.get(k) for k in ("time", "level", "reason", "message")}
    events: dict[str, float | None] = {}
    for key, metric in (("read", "events_read_total"), ("delivered", "events_delivered_total"),
                        ("retried", "events_retried_total"), ("lines", "lines_read_total"),
                        ("removed", "events_removed_total")):
        events[key] = int(_sum(s, PREFIX + metric))
        events[key + "_per_s"] = rate(PREFIX + metric)
    dead = {reason: int(_sum(s, PREFIX + "events_dead_lettered_total", reason=reason))
            for reason in ("invalid", "rejected_by_statsig")}
    dead["total"] = sum(dead.values())
    events["dead_lettered_per_s"] = rate(PREFIX + "events_dead_lettered_total")

    sizes = _by_path(s, PREFIX + "file_size_bytes")
    offsets = _by_path(s, PREFIX + "file_delivered_offset_bytes")
    moved = _by_path(s, PREFIX + "file_last_delivery_timestamp_seconds")
    before = _by_path(prev.samples, PREFIX + "file_delivered_offset_bytes") if prev is not None else {}
    started = runtime.started if runtime is not None else cur.wall
    files = []
    for path in sorted(sizes):
        size, offset = int(sizes[path]), int(offsets.get(path, 0))
        behind = max(0, size - offset)
        since = max(moved.get(path, 0.0), started)
        per_s = None
        if path in before and dt > 0:
            per_s = max(0.0, (offset - before[path]) / dt)
        files.append(FileStatus(path, offset, size, behind, max(0.0, cur.wall - since) if behind else 0.0, per_s))
    receiver: dict[str, int] = {}
    serves_intake = runtime is None or runtime.receiver is not None  # else /metrics counts only scrapes
    for (n, _labels), v in sorted(s.items()):
        if serves_intake and n.startswith(RELAY_PREFIXES) and n.endswith("_total"):
            name = n[len(PREFIX):-len("_total")]
            receiver[name] = receiver.get(name, 0) + int(v)
    return Status(
        "live", str(state_dir), True, runtime.pid if runtime else None, address,
        cur.wall - runtime.started if runtime else None, cur.ready, cur.reasons, state, last_error, events, dead,
        _sum(s, PREFIX + "oldest_undelivered_event_age_seconds"), files, receiver,
    )


def from_state_dir(state_dir: Path, dead_letter_path: Path, running_pid: int | None = None,
                   fingerprint_bytes: int = FINGERPRINT_BYTES) -> Status:
    """What the state directory says: checkpoints, the files' sizes now, the dead-letter count."""
    now = time.time()
    files = []
    if (state_dir / CHECKPOINT_FILE).exists():
        for row in rows(Checkpoints(state_dir, readonly=True), fingerprint_bytes):  # as `checkpoints list` shows them
            since = _epoch(row.last_delivered)
            files.append(FileStatus(row.path, row.offset, row.size, row.lag,
                                    max(0.0, now - since) if row.lag and since else 0.0,
                                    state="checkpoint" if row.status == "ok" else row.status))
    dead = {"total": _count_lines(dead_letter_path)}
    running = running_pid is not None
    return Status("state_dir", str(state_dir), running, running_pid, statsig="unknown" if running else "stopped",
                  dead_letter=dead, files=files)


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def _lock_holder(state_dir: Path) -> int | None:
    try:
        text = (state_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


@dataclass
class Target:
    """Where `status`/`top` get their figures."""

    state_dir: Path
    dead_letter_path: Path
    address: str | None
    runtime: Runtime | None
    running_pid: int | None
    fingerprint_bytes: int = FINGERPRINT_BYTES  # files are identified as `run` identifies them

    @staticmethod
    def find(settings: Settings, address: str | None = None) -> Target:
        runtime = Runtime.read(settings.state_dir)
        if runtime is not None and not runtime.alive:
            runtime = None  # left behind by a killed process
        pid = runtime.pid if runtime is not None else _lock_holder(settings.state_dir)
        if address is None and runtime is not None:
            address = runtime.metrics
        if address is None and pid is not None:
            for configured in (settings.metrics_listen, settings.receiver.listen):
                if configured and not configured.endswith(":0"):
                    address = configured
                    break
        assert settings.dead_letter_path is not None
        return Target(settings.state_dir, settings.dead_letter_path, address, runtime, pid,
                      settings.fingerprint_bytes)

    def status(self, prev: Scrape | None = None) -> tuple[Status, Scrape | None]:
        """The status now, and the scrape it came from (None: from the state directory)."""
        if self.address is not None:
            try:
                cur = scrape(self.address)
            except Unreachable as e:
                st = from_state_dir(self.state_dir, self.dead_letter_path, self.running_pid, self.fingerprint_bytes)
                st.note = f"cannot scrape {e}; figures from the state directory"
                return st, None
            return from_scrapes(self.runtime, self.state_dir, self.address, cur, prev), cur
        st = from_state_dir(self.state_dir, self.dead_letter_path, self.running_pid, self.fingerprint_bytes)
        if self.running_pid is not None:
            st.note = (f"running (pid {self.running_pid}) without an HTTP address: start it with --metrics-listen "
                       "for live figures; these come from the state directory")
        return st, None


def sample(target: Target, interval: float) -> Status:
    """One Status; with a live instance and interval > 0, rates over `interval` seconds."""
    first, scraped = target.status()
    if scraped is None or interval <= 0:
        return first
    time.sleep(interval)
    second, _ = target.status(scraped)
    return second


# -- text -----------------------------------------------------------------------------------

def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s" if s >= 10 or s == 0 else f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def human_count(n: float | None) -> str:
    if n is None:
        return "-"
    if abs(n) < 10_000:
        return f"{n:.0f}" if n == int(n) else f"{n:.1f}"
    for unit in ("k", "M", "G"):
        n /= 1000
        if abs(n) < 1000 or unit == "G":
            return f"{n:.1f}{unit}"
    return f"{n:.1f}G"


def headline(st: Status) -> list[str]:
    """The lines above the file table, shared with `top`."""
    who = f"pid {st.pid}" if st.pid is not None else "not running"
    where = f" at http://{st.address}" if st.address else ""
    up = f", up {human_seconds(st.uptime_s)}" if st.uptime_s is not None else ""
    lines = [f"statsig-forwarder: {who}{where}{up} (state dir {st.state_dir})"]
    if st.source == "live":
        ready = "ready" if st.ready else "NOT READY"
        lines.append(f"Statsig: {STATSIG_STATES.get(st.statsig, st.statsig)}   {ready}"
                     + (f" ({'; '.join(st.reasons)})" if st.reasons else ""))
        e = st.events
        lines.append(f"events: {human_count(e.get('read'))} read ({_per_s(e.get('read_per_s'))}), "
                     f"{human_count(e.get('delivered'))} delivered ({_per_s(e.get('delivered_per_s'))}), "
                     f"{human_count(e.get('retried'))} retried;  oldest undelivered: "
                     f"{human_seconds(st.oldest_undelivered_age_s)}")
        d = st.dead_letter
        lines.append(f"dead-lettered: {human_count(d.get('total'))} ({human_count(d.get('invalid'))} invalid, "
                     f"{human_count(d.get('rejected_by_statsig'))} rejected by Statsig)")
        if e.get("removed"):  # event rules (README "Controlling events"); per rule in /metrics
            lines.append(f"removed by event rules: {human_count(e.get('removed'))} "
                         f"({_per_s(e.get('removed_per_s'))})")
    else:
        lines.append(f"Statsig: {STATSIG_STATES.get(st.statsig, st.statsig)};  dead-lettered: "
                     f"{human_count(st.dead_letter.get('total'))} lines in the dead-letter file")
    if st.last_error is not None:
        ago = human_seconds(max(0.0, time.time() - float(st.last_error["time"])))
        lines.append(f"last problem ({ago} ago, {st.last_error['level']}): {st.last_error['message']}")
    elif st.source == "live":
        lines.append("last problem: none")
    if st.receiver:
        lines.append("receiver: " + ", ".join(f"{k.removeprefix('receiver_')} {human_count(v)}"
                                              for k, v in st.receiver.items()))
    if st.note:
        lines.append(f"note: {st.note}")
    return lines


def _per_s(rate: float | None) -> str:
    return "-/s" if rate is None else f"{human_count(rate)}/s"


def render_text(st: Status) -> str:
    """The `status` screen."""
    out = headline(st)
    out.append("")
    if not st.files:
        out.append("no files" + (" followed" if st.source == "live" else " checkpointed"))
    else:
        out.append(f"{'DELIVERED':>10} {'SIZE':>10} {'BEHIND':>10} {'FOR':>7} {'RATE':>11}  PATH")
        for f in st.files:
            rate = "-" if f.bytes_per_s is None else f"{human_bytes(f.bytes_per_s)}/s"
            flag = "" if f.state in ("following", "checkpoint") else f"  ({f.state})"
            out.append(f"{human_bytes(f.offset):>10} {human_bytes(f.size):>10} {human_bytes(f.bytes_behind):>10} "
                       f"{human_seconds(f.seconds_behind):>7} {rate:>11}  {f.path}{flag}")
    return "\n".join(out)
