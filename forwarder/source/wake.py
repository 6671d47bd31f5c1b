"""Wake the tailer when watched directories change: watchdog's native observer
(inotify on Linux), or its polling observer with --poll or when the native one fails."""

from __future__ import annotations

import logging
import os
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)


class _Waker(FileSystemEventHandler):
    def __init__(self, wake: threading.Event, on_dir_change: threading.Event) -> None:
        self._wake = wake
        self._dir_change = on_dir_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "deleted"):
            self._dir_change.set()
        self._wake.set()


def start_observer(
    dirs: dict[str, bool], wake: threading.Event, dir_change: threading.Event, poll: bool, poll_interval: float
) -> BaseObserver | None:
    """Start an observer over `dirs` (path -> recursive); None if nothing could be watched.

    The tailer also polls on its own timer, so a missing observer costs latency, not data.
    """
    handler = _Waker(wake, dir_change)
    existing = {d: r for d, r in dirs.items() if os.path.isdir(d)}
    for d in sorted(set(dirs) - set(existing)):
        log.warning("directory does not exist; polling for it", extra={"path": d})
    if not existing:
        return None
    observer: BaseObserver = PollingObserver(timeout=poll_interval) if poll else Observer()
    try:
        for d, recursive in existing.items():
            observer.schedule(handler, d, recursive=recursive)
        observer.start()
    except OSError as e:  # e.g. inotify watch or instance limits reached
        if poll:
            raise
        log.warning("native file watching failed, falling back to polling", extra={"error": str(e)})
        return start_observer(dirs, wake, dir_change, True, poll_interval)
    log.info("watching for changes", extra={"mode": "polling" if poll else "native", "dirs": sorted(existing)})
    return observer
