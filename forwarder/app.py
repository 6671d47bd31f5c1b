"""Wiring of one `run`: sources, reader, senders, acker, checkpoint writer, signals.

Stop order (first SIGTERM/SIGINT): stop the HTTP receiver (requests in progress finish
their append), stop reading, ship the partial batch, let the senders
deliver what was read until shutdown_timeout, write the final checkpoint, exit 0. A second
signal abandons delivery at once; checkpoints still record everything delivered.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING

from .commands.check import check_in_background
from .decode.reader import Reader, Selector
from .delivery.acker import Acker
from .delivery.batcher import Batcher
from .delivery.ratelimit import TokenBucket
from .delivery.senders import Backoff, Senders
from .delivery.sink import Sink, StatsigSink, StdoutSink
from .health import Lag, LagProbe, readiness
from .logs import redact
from .metrics import RunCollector
from .model import Batch
from .rules import ActiveRules
from .rules.remote import RemoteRules
from .sdnotify import Notifier, Watchdog
from .settings import Settings
from .source import Source
from .source.files import FileTailer, TailOptions
from .source.stdin import StreamSource
from .source.wake import Watching, start_observer
from .state.checkpoints import CHECKPOINT_FILE, Checkpoints
from .state.deadletter import DeadLetter
from .state.lock import LOCK_FILE, StateDirLock
from .state.writer import CheckpointWriter
from .stats import Stats

if TYPE_CHECKING:
    from .receiver import HttpServer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    stats: dict[str, int | str]
    clean: bool  # everything read was delivered
    interrupted: bool = False  # stopped by a signal before the source was exhausted
    failed: bool = False  # a worker thread crashed (a bug): exit non-zero
    removed_by_rule: list[dict[str, str | int | bool]] = field(default_factory=list)  # Stats.removed_by_rule


@dataclass
class RunHooks:
    """What a one-shot command such as `replay` changes in a run; the defaults are `run`'s."""

    namespace: str = CHECKPOINT_FILE  # checkpoint file name in the state dir
    lock_name: str = LOCK_FILE
    make_source: Callable[[Checkpoints], Source] | None = None  # instead of stdin / FileTailer
    select: Selector | None = None  # which valid events to send; the others are skipped
    limiter: TokenBucket | None = None  # pace the senders (events/s)
    tick: Callable[[Source, Stats], None] | None = None  # from the main thread, about 5 times a second


# Options SIGHUP applies to a running forwarder; any other change needs a restart.
RELOADABLE = ("paths", "glob_interval", "rotate_wait", "batch_size", "batch_bytes", "flush_interval",
              "retry_initial", "retry_max", "log_level", "ready_max_lag_bytes", "ready_max_lag_seconds",
              "rules")


@dataclass
class _Live:
    """The running parts a reload may adjust."""

    tailer: FileTailer | None
    observer: Watching | None
    dir_change: threading.Event
    batcher: Batcher
    backoff: Backoff
    rules: ActiveRules


class Forwarder:
    """One configured forwarding process.

    `reload` rebuilds Settings from the same sources (flags, env, TOML); SIGHUP calls it
    and applies the RELOADABLE options without stopping delivery.
    """

    def __init__(
        self,
        settings: Settings,
        reload: Callable[[], Settings] | None = None,
        hooks: RunHooks | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks or RunHooks()
        self._reload_settings = reload
        self._reload_requested = threading.Event()
        self.stats = Stats()
        self.wake = threading.Event()
        self._signals = 0
        self._deadline: float | None = None  # set by the first stop signal
        self.phase = "starting"  # -> running -> stopping (readiness)
        self._lag: Callable[[], Lag] = Lag
        self.notifier = Notifier()
        self._http: list[HttpServer] = []
        self._stop_requested = threading.Event()
        self._reader: Reader | None = None
        self._senders: Senders | None = None
        self._check: threading.Thread | None = None
        self.failed = False  # a worker thread crashed

    def ready(self) -> tuple[bool, list[str]]:
        """Readiness for /readyz: (ready, reasons it is not)."""
        s = self.settings
        return readiness(self.phase, str(self.stats.sink_state), self._lag(),
                         s.ready_max_lag_bytes, s.ready_max_lag_seconds)

    def _abort(self) -> None:
        """Give up delivering: what is not acknowledged stays in the files for the next run."""
        for server in self._http:
            server.server.force_exit = True
        for stoppable in (self._reader, self._senders):
            if stoppable is not None:
                stoppable.abort.set()
        if self._reader is not None:
            self._reader.stop.set()

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

    def run(self) -> RunResult:
        s = self.settings
        # The reader is CPU-bound; with the default 5 ms switch interval a sender coming back
        # from a socket wait queues for the GIL several times per request. 2 ms measured best
        # (0.5 ms: same speed, about 0.3 CPU s more per million events in forced switches).
        sys.setswitchinterval(0.002)
        # Events are short-lived acyclic dicts, freed by reference counting; the cyclic
        # collector's frequent young-generation passes cost about 20% CPU at full speed.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        s.state_dir.mkdir(parents=True, exist_ok=True)
        lock = StateDirLock(s.state_dir, self.hooks.lock_name)
        lock.acquire()
        restore = self._install_signals()
        previous_hook, threading.excepthook = threading.excepthook, self._thread_crashed
        try:
            return self._run()
        finally:
            threading.excepthook = previous_hook
            restore()
            lock.release()
            if self._check is not None:
                # statsig-python-core aborts the process if the interpreter exits under it.
                self._check.join(s.check_timeout + 5)

    def _run(self) -> RunResult:
        s = self.settings
        h = self.hooks
        assert s.dead_letter_path is not None
        stdin_mode = s.paths == ["-"] and h.make_source is None
        dry_run = s.dry_run or s.secret_key is None
        checkpoints = Checkpoints(s.state_dir, h.namespace)
        deadletter = DeadLetter(s.dead_letter_path)
        sink = self._sink(dry_run)
        commit = not stdin_mode and (not dry_run or s.commit)

        source: Source
        observer = None
        tailer: FileTailer | None = None
        dir_change = threading.Event()
        if h.make_source is not None:
            source = h.make_source(checkpoints)
        elif stdin_mode:
            source = StreamSource(sys.stdin.buffer, s.max_line_bytes, self.wake)
        else:
            tailer = FileTailer(s.paths, checkpoints, TailOptions.from_settings(s), dir_change)
            observer = start_observer(tailer.watched_dirs(), self.wake, dir_change, s.poll, s.poll_interval,
                                      tailer.notify)
            tailer.set_watching(observer.native, observer.dirs)
            source = tailer

        self._http = self._http_servers()
        rules = ActiveRules(s.rules, self.stats)
        remote = RemoteRules(s, rules.set_remote, self.stats) if s.remote_rules else None
        batches: queue.Queue[Batch | None] = queue.Queue(maxsize=s.max_in_flight)
        acker = Acker(checkpoints if commit else None, source.location)
        backoff = Backoff(s.retry_initial, s.retry_max)
        senders = Senders(sink, batches, acker, deadletter, self.stats, backoff, s.max_in_flight,
                          h.limiter)
        reader = Reader(source, Batcher(s.batch_size, s.batch_bytes, s.flush_interval), batches, deadletter,
                        self.stats, self.wake, s.poll_interval, s.max_line_bytes, s.unknown_fields,
                        s.max_in_flight, h.select, s.event_id_field, rules)
        on_tick = h.tick

        def tick() -> None:
            if on_tick is not None:
                on_tick(source, self.stats)

        writer = CheckpointWriter(checkpoints, deadletter, s.checkpoint_interval)
        reader_thread = threading.Thread(target=reader.run, name="reader", daemon=True)

        def delivered(key: str) -> int | None:
            state = checkpoints.get(key)
            return None if state is None else state.offset

        self._lag = LagProbe(tailer.open_files if tailer is not None else list, delivered,
                             lambda: [acker.oldest_opened(), reader.batcher.open_since()])
        collector = RunCollector("stdin" if stdin_mode else "file", self.stats, self._lag, self.ready)
        collector.register()
        watchdog = None
        live = _Live(tailer, observer, dir_change, reader.batcher, backoff, rules)
        self._reader, self._senders = reader, senders
        try:
            if remote is not None:
                remote.start()  # the saved rules apply before the first line is read
            senders.start()
            reader_thread.start()
            if commit:
                writer.start()
            for server in self._http:
                server.start()
            self.phase = "running"
            self.notifier.ready("forwarding" if not dry_run else "dry run")
            if self.notifier.watchdog_usec:
                watchdog = Watchdog(self.notifier, self.notifier.watchdog_usec,
                                    lambda: reader_thread.is_alive() and senders.alive())
                watchdog.start()
            while reader_thread.is_alive() and not reader.stop.is_set() and not self._stop_requested.is_set():
                reader_thread.join(0.2)
                tick()
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self._reload(live)
            # Stop order: the receiver first (its last appends are still read), then reading.
            self._stop_servers()
            reader.stop.set()
            self.phase = "stopping"
            self.notifier.stopping("delivering what was read, then stopping")
            # Deliver what was read, within shutdown_timeout of the signal if there was one.
            while reader_thread.is_alive() and not reader.abort.is_set():
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    break
                reader_thread.join(0.1)
                tick()
            clean = self._drain(senders, reader, tick)
        finally:
            self.phase = "stopping"
            self._stop_servers()
            if watchdog is not None:
                watchdog.stopped.set()
            if remote is not None:
                remote.stop()
            collector.unregister()
            writer.stopped.set()
            if live.observer is not None:
                live.observer.stop()
            source.close()
            sink.close()
            if commit:
                writer.flush()
            deadletter.close()
        snapshot = self.stats.snapshot()
        by_rule = self.stats.removed_by_rule()
        log.info("stopped", extra={**snapshot, "removed_by_rule": by_rule, "delivered_everything_read": clean})
        return RunResult(snapshot, clean, interrupted=self._signals > 0, failed=self.failed, removed_by_rule=by_rule)

    def _drain(self, senders: Senders, reader: Reader, tick: Callable[[], None] = lambda: None) -> bool:
        while not reader.abort.is_set():
            tick()
            deadline = self._deadline
            step = time.monotonic() + 0.1
            if deadline is not None:
                step = min(step, deadline)
            if senders.join(step):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("shutdown_timeout reached with undelivered events; they stay in the file "
                            "and are sent after restart")
                break
        reader.abort.set()
        senders.abort.set()
        senders.join(time.monotonic() + 1.0)
        return False

    def _http_servers(self) -> list[HttpServer]:
        """The receiver (--listen) and/or the health+metrics server (--metrics-listen), bound now."""
        s = self.settings
        servers: list[HttpServer] = []
        if s.receiver.listen is None and s.metrics_listen is None:
            return servers
        from .receiver import build_metrics, build_receiver  # FastAPI/uvicorn only when serving

        if s.receiver.listen is not None:
            server, appender = build_receiver(s, self.ready)
            if not _is_tailed(appender.path, s.paths):
                log.warning("receiver.log_path is not among the tailed paths: events posted to the receiver "
                            "are appended there but not forwarded by this process",
                            extra={"log_path": str(appender.path), "paths": s.paths})
            servers.append(server)
        if s.metrics_listen is not None:
            servers.append(build_metrics(s.metrics_listen, self.ready))
        return servers

    def _stop_servers(self) -> None:
        for server in self._http:
            server.stop()

    def _sink(self, dry_run: bool) -> Sink:
        s = self.settings
        key = s.secret_key
        if dry_run:
            why = "--dry-run given" if s.dry_run else "no STATSIG_SERVER_SECRET_KEY"
            log.warning(f"DRY RUN ({why}): events are printed to stdout, nothing is sent to Statsig; "
                        + ("checkpoints advance (--commit)" if s.commit else "checkpoints do not advance"))
            return StdoutSink()
        assert key is not None
        log.info("forwarding to Statsig", extra={"url": f"{s.statsig_api}/log_event", "key": redact(key)})
        self._check = check_in_background(s)
        return StatsigSink(s.statsig_api, key, s.request_timeout, s.gzip_level)

    def _reload(self, live: _Live) -> None:
        """Re-read the configuration and apply what can change while running.

        Files no longer matched are drained to their end and released like rotated ones, and
        files matched anew start at their checkpoint: no event is skipped or lost.
        """
        if self._reload_settings is None:
            log.warning("SIGHUP ignored: no configuration to re-read")
            return
        self.notifier.reloading()
        try:
            new = self._reload_settings()
        except Exception as e:  # keep running on the old configuration
            log.error("reload failed, keeping the current configuration", extra={"error": str(e)})
            self.notifier.ready("forwarding (reload failed)")
            return
        old = self.settings
        changed = [k for k in type(old).model_fields if getattr(old, k) != getattr(new, k)]
        applied = [k for k in changed if k in RELOADABLE]
        if "paths" in applied and (live.tailer is None or "-" in new.paths or not new.paths):
            applied.remove("paths")  # stdin <-> files is another process
        restart = [k for k in changed if k not in applied]
        if live.tailer is not None:
            live.tailer.options.scan_interval = new.glob_interval
            live.tailer.options.rotate_wait = new.rotate_wait
            if "paths" in applied:
                live.tailer.patterns = list(new.paths)
                live.tailer.rescan = True
                if live.observer is not None:
                    live.observer.stop()
                live.observer = start_observer(live.tailer.watched_dirs(), self.wake, live.dir_change,
                                               new.poll, new.poll_interval)
        live.batcher.batch_size = new.batch_size
        live.batcher.batch_bytes = new.batch_bytes
        live.batcher.flush_interval = new.flush_interval
        live.backoff.initial, live.backoff.maximum = new.retry_initial, new.retry_max
        live.rules.set_local(new.rules)
        logging.getLogger().setLevel(new.log_level.upper())
        self.settings = old.model_copy(update={k: getattr(new, k) for k in applied})
        self.wake.set()
        log.info("configuration reloaded", extra={"applied": applied, "paths": self.settings.paths})
        if restart:
            log.warning("changed options need a restart to take effect", extra={"options": restart})
        self.notifier.ready("forwarding")

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
                self._abort()
            self.wake.set()

        def hangup(signum: int, frame: FrameType | None) -> None:
            self._reload_requested.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _is_tailed(path: Path, patterns: list[str]) -> bool:
    target = os.path.abspath(path)
    return any(fnmatch.fnmatchcase(target, os.path.abspath(p)) for p in patterns if p != "-")
