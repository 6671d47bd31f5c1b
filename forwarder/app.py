"""Wiring of one run (`run`, and `replay` through RunHooks), in uvicorn's shape:

    Forwarder.run: lock the state dir -> build() -> start() -> main_loop() -> shutdown()

`build` makes every part (HTTP listeners bound first, so a busy port fails before anything
starts) and starts no thread; `start` starts them in data-flow order; `main_loop` ticks until
a signal, a crash or the end of the source, then stops in order; `shutdown` releases whatever
was started, also after a failed start. Adding a source or a sink is one module plus one line
in `_source` or `_sink`; `Forwarder(settings, sink=...)` delivers to a sink given by the caller.

Stop order (first SIGTERM/SIGINT): stop the HTTP receiver (requests in progress finish
their append), stop reading, ship the partial batch, let the senders
deliver what was read until shutdown_timeout, write the final checkpoint, exit 0. A second
signal abandons delivery at once; checkpoints still record everything delivered.

Threads, and what each owns (no other thread writes it):

    main               signals (the handlers only set flags), SIGHUP reload, the stop order,
                       the final checkpoint write; owns the Pipeline
    reader             the source (FileTailer, stdin or replay's sequence), the Batcher, the
                       dead-letter writes of invalid lines; fills the bounded batch queue
    sender-N           its own sink connection (StatsigSink keeps one per thread), retries,
                       dead-letter writes of events Statsig refuses
    acker (a lock)     not a thread: senders call Acker under its lock, which owns the in-flight
                       window and applies positions to the Checkpoints view in batch order
    checkpoint-writer  writes the Checkpoints view to disk as soon as it changes (dead-letter file synced first)
    observer           watchdog's thread: only sets Events and adds to FileTailer's dirty set
    receiver, metrics  uvicorn's event loop; the receiver's Appender owns the file it appends to
    remote-rules       statsig-python-core evaluating `remote_rules`; swaps ActiveRules' RuleSet
                       (one reference the reader takes per chunk; the reader owns its counters)
    sd-watchdog        pings systemd while the reader and the senders are alive

Read by other threads: Stats (its lock); the Checkpoints view (its lock: writer, lag probe,
/metrics); Acker.oldest_opened (its lock), Batcher.open_since and FileTailer.open_files (a
snapshot; the lag probe); `phase` and `stats.sink_state` (readiness). A reload, on the main
thread, assigns the tailer's options and patterns, the batcher's limits and the backoff's
bounds: single attribute writes the reader and senders pick up on their next pass.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from .control import ReloadReporter, Runtime
from .decode.reader import Reader, Selector
from .delivery.acker import Acker
from .delivery.batcher import Batcher
from .delivery.ratelimit import TokenBucket
from .delivery.senders import Backoff, Senders
from .delivery.sink import Sink, StatsigSink, StdoutSink
from .errors import ConfigError
from .health import Lag, LagProbe, PathWatch, readiness
from .logs import redact
from .metrics import RunCollector
from .model import Batch
from .rules import ActiveRules
from .rules.remote import RemoteRules
from .sdnotify import Notifier, Watchdog
from .settings import Settings
from .source import Source
from .source.stdin import StreamSource
from .source.tailer import FileTailer
from .source.wake import Watching, follow
from .startup import check_in_background
from .state.checkpoints import CHECKPOINT_FILE, Checkpoints
from .state.deadletter import DeadLetter
from .state.lock import LOCK_FILE, StateDirLock
from .state.writer import CheckpointWriter
from .stats import Stats

if TYPE_CHECKING:
    from .receiver import HttpServer

log = logging.getLogger(__name__)

Server = Literal["receiver", "metrics"]


@dataclass
class RunResult:
    stats: dict[str, int | str]
    clean: bool  # everything read was delivered
    interrupted: bool = False  # stopped by a signal before the source was exhausted
    failed: bool = False  # a worker thread crashed (a bug): exit non-zero
    removed_by_rule: list[dict[str, str | int | bool]] = field(default_factory=list)  # Stats.removed_by_rule


@dataclass(frozen=True)
class RunHooks:
    """What a command makes of a run. `serves` is always explicit: the HTTP servers it may
    start (when configured); a configured server the command does not serve is ignored
    with a warning."""

    serves: frozenset[Server]
    namespace: str = CHECKPOINT_FILE  # checkpoint file name in the state dir
    lock_name: str = LOCK_FILE
    make_source: Callable[[Checkpoints], Source] | None = None  # instead of stdin / FileTailer
    select: Selector | None = None  # which valid events to send; the others are skipped
    limiter: TokenBucket | None = None  # pace the senders (events/s)
    tick: Callable[[Source, Stats], None] | None = None  # from the main thread, about 5 times a second


RUN = RunHooks(serves=frozenset({"receiver", "metrics"}))
"""`run`: stdin or the tailed files, the receiver (--listen) and health/metrics (--metrics-listen)."""

# Options SIGHUP applies to a running forwarder; any other change needs a restart.
RELOADABLE = ("paths", "glob_interval", "rotate_wait", "batch_size", "batch_bytes", "flush_interval",
              "retry_initial", "retry_max", "log_level", "ready_max_lag_bytes", "ready_max_lag_seconds",
              "rules")


@dataclass
class Pipeline:
    """The parts of one run, in data-flow order; built by `Forwarder.build`."""

    servers: list[HttpServer]
    source: Source
    tailer: FileTailer | None  # the source when it follows files (reload adjusts it)
    reader: Reader
    reader_thread: threading.Thread
    senders: Senders
    backoff: Backoff
    sink: Sink
    delivering: bool  # False: a dry run
    writer: CheckpointWriter | None  # None: positions do not move (dry run, stdin)
    deadletter: DeadLetter
    collector: RunCollector
    rules: ActiveRules
    remote: RemoteRules | None  # remote_rules: started by `start`, before the reader
    paths: PathWatch | None = None  # says once that the paths do not exist yet, and when they appear
    watching: Watching | None = None  # started by `start`
    watchdog: Watchdog | None = None


class Forwarder:
    """One configured forwarding process.

    `reload` rebuilds Settings from the same sources (flags, env, TOML); SIGHUP calls it
    and applies the RELOADABLE options without stopping delivery. `sink` replaces the
    Statsig (or dry-run stdout) sink: positions then move as they do for Statsig.
    """

    def __init__(
        self,
        settings: Settings,
        reload: Callable[[], Settings] | None = None,
        hooks: RunHooks = RUN,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self._given_sink = sink
        self._reload_settings = reload
        self._reload_requested = threading.Event()
        self.stats = Stats()
        self.wake = threading.Event()
        self._signals = 0
        self._deadline: float | None = None  # set by the first stop signal
        self.phase = "starting"  # -> running -> stopping (readiness)
        self._lag: Callable[[], Lag] = Lag
        self.notifier = Notifier()
        self._stop_requested = threading.Event()
        self._pipeline: Pipeline | None = None
        self._check: threading.Thread | None = None
        self.failed = False  # a worker thread crashed

    def lag(self) -> Lag:
        """Undelivered work now: the files followed, their sizes and delivered offsets."""
        return self._lag()

    def ready(self) -> tuple[bool, list[str]]:
        """Readiness for /readyz: (ready, reasons it is not)."""
        s = self.settings
        return readiness(self.phase, str(self.stats.sink_state), self._lag(),
                         s.ready_max_lag_bytes, s.ready_max_lag_seconds)

    def run(self) -> RunResult:
        """Run to the end of the source or a signal; start-up failures raise ForwarderError."""
        s = self.settings
        _tune_interpreter()
        lock = self._lock_state_dir()
        restore = self._install_signals()
        previous_hook, threading.excepthook = threading.excepthook, self._thread_crashed
        try:
            pipeline = self._pipeline = self.build()
            try:
                self.start(pipeline)
                clean = self.main_loop(pipeline)
            finally:
                self.shutdown(pipeline)
        finally:
            threading.excepthook = previous_hook
            restore()
            lock.release()
            if self._check is not None:
                # statsig-python-core aborts the process if the interpreter exits under it.
                self._check.join(s.check_timeout + 5)
        snapshot = self.stats.snapshot()
        by_rule = self.stats.removed_by_rule()
        log.info("stopped", extra={**snapshot, "removed_by_rule": by_rule, "delivered_everything_read": clean})
        return RunResult(snapshot, clean, interrupted=self._signals > 0, failed=self.failed,
                         removed_by_rule=by_rule)

    # -- build: every part, no thread yet ------------------------------------------------
    def build(self) -> Pipeline:
        """Make the parts of a run. The listeners are bound first, so a busy port fails
        before anything else exists; nothing is started."""
        servers = self._bind_servers()
        try:
            return self._build(servers)
        except BaseException:
            for server in servers:
                server.stop()
            raise

    def _build(self, servers: list[HttpServer]) -> Pipeline:
        s, h = self.settings, self.hooks
        assert s.dead_letter_path is not None
        checkpoints = Checkpoints(s.state_dir, h.namespace)
        deadletter = DeadLetter(s.dead_letter_path)
        stdin_mode = s.paths == ["-"] and h.make_source is None
        sink, delivering = self._sink()
        commit = not stdin_mode and (delivering or s.commit)
        source, tailer = self._source(checkpoints)
        batches: queue.Queue[Batch | None] = queue.Queue(maxsize=s.max_in_flight)
        acker = Acker(checkpoints if commit else None, source.location)
        backoff = Backoff(s.retry_initial, s.retry_max)
        senders = Senders(sink, batches, acker, deadletter, self.stats, backoff, s.max_in_flight, h.limiter)
        rules = ActiveRules(s.rules, self.stats)
        reader = Reader(source, Batcher(s.batch_size, s.batch_bytes, s.flush_interval), batches, deadletter,
                        self.stats, self.wake, s.poll_interval, s.max_line_bytes, s.unknown_fields,
                        h.select, s.event_id_field, s.oversize_fields, rules)

        def delivered(key: str) -> tuple[int, float] | None:
            state = checkpoints.get(key)
            return None if state is None else (state.offset, state.updated)

        paths = PathWatch(lambda: tailer.patterns, tailer.open_files) if tailer is not None else None
        self._lag = LagProbe(tailer.open_files if tailer is not None else list, delivered,
                             lambda: [acker.oldest_opened(), reader.batcher.open_since()], paths)
        return Pipeline(
            servers=servers,
            source=source,
            tailer=tailer,
            reader=reader,
            reader_thread=threading.Thread(target=reader.run, name="reader", daemon=True),
            senders=senders,
            backoff=backoff,
            sink=sink,
            delivering=delivering,
            writer=CheckpointWriter(checkpoints, deadletter, s.checkpoint_interval, self.stats) if commit else None,
            deadletter=deadletter,
            collector=RunCollector("stdin" if stdin_mode else "file", self.stats, self._lag, self.ready),
            rules=rules,
            remote=RemoteRules(s, rules.set_remote, self.stats) if s.remote_rules else None,
            paths=paths,
        )

    def _source(self, checkpoints: Checkpoints) -> tuple[Source, FileTailer | None]:
        """The command's source, else stdin ('-'), else the tailed files: (source, tailer or None)."""
        s, h = self.settings, self.hooks
        if h.make_source is not None:
            return h.make_source(checkpoints), None
        if s.paths == ["-"]:
            return StreamSource(sys.stdin.buffer, s.max_line_bytes, self.wake), None
        tailer = FileTailer(s.paths, checkpoints, s, threading.Event())
        return tailer, tailer

    def _sink(self) -> tuple[Sink, bool]:
        """(the sink, whether it delivers): the one given, else Statsig, else a dry run to stdout."""
        s = self.settings
        if self._given_sink is not None:
            return self._given_sink, True
        key = s.secret_key
        if s.dry_run or key is None:
            why = "--dry-run given" if s.dry_run else "no STATSIG_SERVER_SECRET_KEY"
            log.warning(f"DRY RUN ({why}): events are printed to stdout, nothing is sent to Statsig; "
                        + ("checkpoints advance (--commit)" if s.commit else "checkpoints do not advance"))
            return StdoutSink(), False
        log.info("forwarding to Statsig", extra={"url": f"{s.statsig_api}/log_event", "key": redact(key)})
        self._check = check_in_background(s)
        return StatsigSink(s.statsig_api, key, s.request_timeout, s.gzip_level), True

    def _bind_servers(self) -> list[HttpServer]:
        """The receiver (--listen) and/or health+metrics (--metrics-listen) this command serves, bound."""
        s = self.settings
        configured: dict[Server, str | None] = {"receiver": s.receiver.listen, "metrics": s.metrics_listen}
        wanted: list[Server] = []
        for name, listen in configured.items():
            if listen is None:
                continue
            if name in self.hooks.serves:
                wanted.append(name)
            else:
                log.warning(f"this command serves no {name}: its listen address is ignored",
                            extra={"listen": listen})
        if not wanted:
            return []
        from .receiver import build_metrics, build_receiver  # FastAPI/uvicorn only when serving

        servers: list[HttpServer] = []
        try:
            if "receiver" in wanted:
                server, appender = build_receiver(s, self.ready)
                if not _is_tailed(appender.path, s.paths):
                    log.warning("receiver.log_path is not among the tailed paths: events posted to the "
                                "receiver are appended there but not forwarded by this process",
                                extra={"log_path": str(appender.path), "paths": s.paths})
                servers.append(server)
            if "metrics" in wanted:
                assert s.metrics_listen is not None
                servers.append(build_metrics(s.metrics_listen, self.ready))
        except BaseException:
            for built in servers:
                built.stop()
            raise
        return servers

    # -- start: threads in data-flow order ----------------------------------------------
    def start(self, p: Pipeline) -> None:
        """Start the watcher, senders, reader, checkpoint writer, then the HTTP servers."""
        p.collector.register()
        if p.tailer is not None:
            p.watching = follow(p.tailer, self.wake, self.settings.poll, self.settings.poll_interval)
        if p.remote is not None:
            p.remote.start()  # the saved rules, then Statsig's, apply before the first line is read
        p.senders.start()
        p.reader_thread.start()
        if p.writer is not None:
            p.writer.start()
        for server in p.servers:
            server.start()
        if self.hooks.lock_name == LOCK_FILE:  # `run`, not a replay beside it: what `status` reads
            Runtime.publish(self.settings.state_dir, {srv.name: srv.address for srv in p.servers},
                            self.settings.paths)
        self.phase = "running"
        self.notifier.ready("forwarding" if p.delivering else "dry run")
        if self.notifier.watchdog_usec:
            p.watchdog = Watchdog(self.notifier, self.notifier.watchdog_usec,
                                  lambda: p.reader_thread.is_alive() and p.senders.alive())
            p.watchdog.start()

    # -- main loop -----------------------------------------------------------------------
    def main_loop(self, p: Pipeline) -> bool:
        """Tick until stopped (signal, crash, end of the source), then stop in order.
        True if everything read was delivered."""
        reader = p.reader
        while p.reader_thread.is_alive() and not reader.stop.is_set() and not self._stop_requested.is_set():
            p.reader_thread.join(0.2)
            self._tick(p)
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload(p)
        # Stop order: the receiver first (its last appends are still read), then reading.
        for server in p.servers:
            server.stop()
        reader.stop.set()
        self.phase = "stopping"
        self.notifier.stopping("delivering what was read, then stopping")
        # Deliver what was read, within shutdown_timeout of the signal if there was one.
        while p.reader_thread.is_alive() and not reader.abort.is_set():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                break
            p.reader_thread.join(0.1)
            self._tick(p)
        p.senders.stop()  # the reader is done (or abandoned): no batch comes after these markers
        return self._drain(p) and not self.failed  # a crashed worker's batch was never delivered

    def _tick(self, p: Pipeline) -> None:
        if p.paths is not None:
            p.paths.check()
        if self.hooks.tick is not None:
            self.hooks.tick(p.source, self.stats)

    def _drain(self, p: Pipeline) -> bool:
        while not p.reader.abort.is_set():
            self._tick(p)
            deadline = self._deadline
            step = time.monotonic() + 0.1
            if deadline is not None:
                step = min(step, deadline)
            if p.senders.join(step):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("shutdown_timeout reached with undelivered events; they stay in the file "
                            "and are sent after restart")
                break
        self._abort(p)
        p.senders.join(time.monotonic() + 1.0)
        return False

    def _abort(self, p: Pipeline) -> None:
        """Give up delivering: what is not acknowledged stays in the files for the next run."""
        for server in p.servers:
            server.server.force_exit = True
        p.reader.abort.set()
        p.reader.stop.set()
        p.senders.abort.set()

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self, p: Pipeline) -> None:
        """Release everything `start` started (all of it after main_loop, some after a failed
        start), then write the final checkpoint."""
        self.phase = "stopping"
        for server in p.servers:
            server.stop()
        if self.hooks.lock_name == LOCK_FILE:
            Runtime.remove(self.settings.state_dir)
        if p.watchdog is not None:
            p.watchdog.stopped.set()
        with contextlib.suppress(KeyError):  # not registered: start failed before
            p.collector.unregister()
        if p.watching is not None:
            p.watching.stop()
        if p.remote is not None:
            p.remote.stop()
        # After main_loop the workers have finished (or were abandoned); after a failed start
        # they are stopped here. Either way none outlives the run.
        self._abort(p)
        p.senders.stop()
        p.senders.join(time.monotonic() + 2.0)
        if p.reader_thread.ident is not None:
            p.reader_thread.join(2.0)
        if p.writer is not None:
            p.writer.stop()
            if p.writer.ident is not None:
                p.writer.join(5.0)
        p.source.close()
        p.sink.close()
        if p.writer is not None:
            p.writer.flush()
        p.deadletter.close()

    # -- reload (SIGHUP) -----------------------------------------------------------------
    def _reload(self, p: Pipeline) -> None:
        """Re-read the configuration and apply what can change while running.

        Files no longer matched are drained to their end and released like rotated ones, and
        files matched anew start at their checkpoint: no event is skipped or lost.
        """
        reporter = ReloadReporter(self.settings.state_dir)  # what `statsig-forwarder reload` waits for
        if self._reload_settings is None:
            log.warning("SIGHUP ignored: no configuration to re-read")
            reporter.report("refused", "no configuration to re-read")
            return
        self.notifier.reloading()
        try:
            new = self._reload_settings()
        except Exception as e:  # keep running on the old configuration
            log.error("reload failed, keeping the current configuration", extra={"error": str(e)})
            reporter.report("refused", str(e))
            self.notifier.ready("forwarding (reload failed)")
            return
        old = self.settings
        changed = [k for k in type(old).model_fields if getattr(old, k) != getattr(new, k)]
        applied = [k for k in changed if k in RELOADABLE]
        if "paths" in applied and (p.tailer is None or "-" in new.paths or not new.paths):
            applied.remove("paths")  # stdin <-> files is another process
        restart = [k for k in changed if k not in applied]
        # Batching first: files matched anew must not be read into a batch of the old size.
        batcher = p.reader.batcher
        batcher.batch_size, batcher.batch_bytes, batcher.flush_interval = (
            new.batch_size, new.batch_bytes, new.flush_interval)
        p.backoff.initial, p.backoff.maximum = new.retry_initial, new.retry_max
        p.rules.set_local(new.rules)
        if p.tailer is not None:
            p.tailer.settings = p.tailer.settings.model_copy(
                update={"glob_interval": new.glob_interval, "rotate_wait": new.rotate_wait})
            if "paths" in applied:
                p.tailer.patterns = list(new.paths)
                p.tailer.rescan = True
                p.watching = follow(p.tailer, self.wake, old.poll, old.poll_interval, p.watching)
        logging.getLogger().setLevel(new.log_level.upper())
        self.settings = old.model_copy(update={k: getattr(new, k) for k in applied})
        self.wake.set()
        log.info("configuration reloaded", extra={"applied": applied, "paths": self.settings.paths})
        if restart:
            log.warning("changed options need a restart to take effect", extra={"options": restart})
        reporter.report("applied", applied=applied, restart=restart)
        self.notifier.ready("forwarding")

    # -- process: state dir, signals, crashed threads ------------------------------------
    def _lock_state_dir(self) -> StateDirLock:
        s = self.settings
        lock = StateDirLock(s.state_dir, self.hooks.lock_name)
        try:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as e:
            raise ConfigError(f"state_dir {s.state_dir}: {e.strerror or e}") from None
        return lock

    def _install_signals(self) -> Callable[[], None]:
        """Installed before anything starts, so a signal during start-up is handled too."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                self._deadline = time.monotonic() + self.settings.shutdown_timeout
                log.info("stopping: finishing delivery of what was read",
                         extra={"signal": signal.Signals(signum).name,
                                "timeout_s": self.settings.shutdown_timeout})
                self._stop_requested.set()  # the main loop stops the receiver, then the reader
            else:
                log.warning("second signal: stopping now; undelivered events stay in the file")
                if self._pipeline is not None:
                    self._abort(self._pipeline)
            self.wake.set()

        def hangup(signum: int, frame: FrameType | None) -> None:
            self._reload_requested.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _thread_crashed(self, args: threading.ExceptHookArgs) -> None:
        """A worker thread died of a bug: say so loudly, stop like on SIGTERM, exit non-zero."""
        name = args.thread.name if args.thread is not None else "?"
        log.critical("internal error in thread %s; stopping (nothing unacknowledged is lost)", name,
                     exc_info=args.exc_value or True)
        self.failed = True
        if self._deadline is None:
            self._deadline = time.monotonic() + self.settings.shutdown_timeout
        self._stop_requested.set()
        self.wake.set()


def _tune_interpreter() -> None:
    # The reader is CPU-bound; with the default 5 ms switch interval a sender coming back
    # from a socket wait queues for the GIL several times per request. 2 ms measured best
    # (0.5 ms: same speed, about 0.3 CPU s more per million events in forced switches).
    sys.setswitchinterval(0.002)
    # Events are short-lived acyclic dicts, freed by reference counting; the cyclic
    # collector's frequent young-generation passes cost about 20% CPU at full speed.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _is_tailed(path: Path, patterns: list[str]) -> bool:
    target = os.path.abspath(path)
    return any(fnmatch.fnmatchcase(target, os.path.abspath(p)) for p in patterns if p != "-")
