"""Wiring of one `run`: sources, reader, senders, acker, checkpoint writer, signals.

Stop order (first SIGTERM/SIGINT): stop the HTTP receiver (requests in progress finish
their append), stop reading, ship the partial batch, let the senders
deliver what was read until shutdown_timeout, write the final checkpoint, exit 0. A second
signal abandons delivery at once; checkpoints still record everything delivered.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .batcher import Batcher
from .checkpoint import Checkpoints, StateDirLock
from .deadletter import DeadLetter
from .delivery import Acker, Backoff, Senders
from .logs import redact
from .model import Batch
from .pipeline import Reader
from .settings import Settings
from .sink import Sink, StatsigSink, StdoutSink
from .source import Source
from .source.files import FileTailer, TailOptions
from .source.stdin import StreamSource
from .source.wake import start_observer
from .startup_check import check_in_background
from .stats import Stats

if TYPE_CHECKING:
    from .receiver import HttpServer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    stats: dict[str, int | str]
    clean: bool  # everything read was delivered


class CheckpointWriter(threading.Thread):
    """Flushes the dead-letter file, then the checkpoints, every interval."""

    def __init__(self, checkpoints: Checkpoints, deadletter: DeadLetter, interval: float) -> None:
        super().__init__(name="checkpoint-writer", daemon=True)
        self.checkpoints = checkpoints
        self.deadletter = deadletter
        self.interval = interval
        self.stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.flush()

    def flush(self) -> bool:
        try:
            self.deadletter.sync()
            self.checkpoints.flush()
        except OSError as e:
            # The previous checkpoint file is intact (atomic replace); retry next interval.
            if not self._failing:
                log.error("cannot write checkpoint, will retry", extra={"error": str(e),
                          "path": str(self.checkpoints.path)})
            self._failing = True
            return False
        if self._failing:
            log.info("checkpoint writes recovered")
        self._failing = False
        return True


class Forwarder:
    """One configured forwarding process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.wake = threading.Event()
        self._signals = 0
        self._deadline: float | None = None  # set by the first stop signal
        self._http: list[HttpServer] = []
        self._stop_http = threading.Event()

    def run(self) -> RunResult:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        lock = StateDirLock(s.state_dir)
        lock.acquire()
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> RunResult:
        s = self.settings
        assert s.dead_letter_path is not None
        stdin_mode = s.paths == ["-"]
        dry_run = s.dry_run or s.secret_key is None
        checkpoints = Checkpoints(s.state_dir)
        deadletter = DeadLetter(s.dead_letter_path)
        sink = self._sink(dry_run)
        commit = not stdin_mode and (not dry_run or s.commit)

        source: Source
        observer = None
        dir_change = threading.Event()
        if stdin_mode:
            source = StreamSource(sys.stdin.buffer, s.max_line_bytes, self.wake)
        else:
            tailer = FileTailer(
                s.paths, checkpoints,
                TailOptions(s.start_at, s.max_line_bytes, s.rotate_wait, s.glob_interval, s.once), dir_change,
            )
            observer = start_observer(tailer.watched_dirs(), self.wake, dir_change, s.poll, s.poll_interval)
            source = tailer

        self._http = self._http_servers()
        batches: queue.Queue[Batch | None] = queue.Queue(maxsize=s.max_in_flight)
        acker = Acker(checkpoints if commit else None, source.location)
        senders = Senders(sink, batches, acker, deadletter, self.stats,
                          Backoff(s.retry_initial, s.retry_max), s.max_in_flight)
        reader = Reader(source, Batcher(s.batch_size, s.batch_bytes, s.flush_interval), batches, deadletter,
                        self.stats, self.wake, s.poll_interval, s.max_line_bytes, s.unknown_fields,
                        s.max_in_flight)
        writer = CheckpointWriter(checkpoints, deadletter, s.checkpoint_interval)
        reader_thread = threading.Thread(target=reader.run, name="reader", daemon=True)

        restore = self._install_signals(reader, senders)
        try:
            senders.start()
            reader_thread.start()
            if commit:
                writer.start()
            for server in self._http:
                server.start()
            # Runs until a signal or the end of the input; then delivers what was read,
            # within shutdown_timeout of the signal if there was one.
            while reader_thread.is_alive() and not reader.abort.is_set():
                if self._stop_http.is_set() and not reader.stop.is_set():
                    self._stop_servers()
                    reader.stop.set()
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    break
                reader_thread.join(0.1)
            clean = self._drain(senders, reader)
        finally:
            self._stop_servers()
            restore()
            writer.stopped.set()
            if observer is not None:
                observer.stop()
            source.close()
            sink.close()
            if commit:
                writer.flush()
            deadletter.close()
        snapshot = self.stats.snapshot()
        log.info("stopped", extra={**snapshot, "delivered_everything_read": clean})
        return RunResult(snapshot, clean)

    def _drain(self, senders: Senders, reader: Reader) -> bool:
        while not reader.abort.is_set():
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
            server, appender = build_receiver(s, lambda: self.stats.sink_state)
            if not _is_tailed(appender.path, s.paths):
                log.warning("receiver.log_path is not among the tailed paths: events posted to the receiver "
                            "are appended there but not forwarded by this process",
                            extra={"log_path": str(appender.path), "paths": s.paths})
            servers.append(server)
        if s.metrics_listen is not None:
            servers.append(build_metrics(s.metrics_listen, lambda: self.stats.sink_state))
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
        check_in_background(s)
        return StatsigSink(s.statsig_api, key, s.request_timeout, s.max_in_flight, s.gzip_level)

    def _install_signals(self, reader: Reader, senders: Senders) -> Callable[[], None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                self._deadline = time.monotonic() + self.settings.shutdown_timeout
                log.info("stopping: finishing delivery of what was read",
                         extra={"signal": signal.Signals(signum).name,
                                "timeout_s": self.settings.shutdown_timeout})
                if self._http:
                    self._stop_http.set()  # the main loop stops the receiver, then the reader
                else:
                    reader.stop.set()
            else:
                log.warning("second signal: stopping now; undelivered events stay in the file")
                for server in self._http:
                    server.server.force_exit = True
                reader.stop.set()
                reader.abort.set()
                senders.abort.set()
            self.wake.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _is_tailed(path: Path, patterns: list[str]) -> bool:
    target = os.path.abspath(path)
    return any(fnmatch.fnmatchcase(target, os.path.abspath(p)) for p in patterns if p != "-")
