"""Wake the tailer when watched directories change: watchdog's native observer
(inotify on Linux), or its polling observer with --poll or when the native one fails
(inotify watches or instances used up).

Natively there are two observers: one for the directories' entries (files created, moved,
deleted: rotation and new files), always on, and one for writes to the files, which the
tailer pauses while it polls a busy file anyway (`Watching.pause`): one inotify event per
write costs four watchdog threads a wake-up each, far more than reading the lines.

`follow` is the one wiring of observers to a tailer, at start-up and on every reload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

if TYPE_CHECKING:
    from .tailer import FileTailer

log = logging.getLogger(__name__)

# What each native observer asks inotify for (watchdog turns the filter into the watch mask,
# so opens and reads, ours included, are not even reported).
ENTRY_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent,
                                             FileDeletedEvent, DirDeletedEvent]
WRITE_EVENTS: list[type[FileSystemEvent]] = [FileModifiedEvent, FileClosedEvent]


class _Waker(FileSystemEventHandler):
    def __init__(
        self, wake: threading.Event, on_dir_change: threading.Event, on_path: Callable[[str], None] | None
    ) -> None:
        self._wake = wake
        self._dir_change = on_dir_change
        self._on_path = on_path

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # readers (ourselves included) opening files change nothing
        if event.event_type in ("created", "moved", "deleted"):
            self._dir_change.set()
        if self._on_path is not None and not event.is_directory:
            self._on_path(os.fsdecode(event.src_path))
            if event.dest_path:
                self._on_path(os.fsdecode(event.dest_path))
        self._wake.set()


@dataclass
class Watching:
    """What the observers cover: `native` is True when file events are trustworthy.

    `writes` (native only) reports writes to files; `pause` and `resume` switch it off and on
    (from the reader thread) while the tailer polls busy files on its own.
    """

    observer: BaseObserver | None = None
    native: bool = False
    dirs: dict[str, bool] = field(default_factory=dict)  # real path -> recursive
    writes: BaseObserver | None = None
    handler: FileSystemEventHandler | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def pause(self) -> bool:
        """Stop reporting writes; True if they are paused (False: nothing to pause)."""
        with self._lock:
            if self.writes is None or self._stopped:
                return False
            self.writes.unschedule_all()
            return True

    def resume(self) -> bool:
        """Report writes again; False when that failed (inotify limits): the caller polls."""
        with self._lock:
            if self.writes is None or self._stopped or self.handler is None:
                return False
            try:
                self._watch_writes()
            except OSError as e:
                log.warning("cannot watch for writes again; polling files instead", extra={"error": str(e)})
                self.writes.unschedule_all()
                return False
            return True

    def _watch_writes(self) -> None:
        assert self.writes is not None and self.handler is not None
        for d, recursive in self.dirs.items():
            self.writes.schedule(self.handler, d, recursive=recursive, event_filter=WRITE_EVENTS)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        for observer in (self.observer, self.writes):
            if observer is not None:
                observer.stop()
                observer.join(2)


def start_observer(
    dirs: dict[str, bool],
    wake: threading.Event,
    dir_change: threading.Event,
    poll: bool,
    poll_interval: float,
    on_path: Callable[[str], None] | None = None,
    observer_factory: Callable[[], BaseObserver] = Observer,
) -> Watching:
    """Start an observer over `dirs` (path -> recursive).

    Directories are watched by their real path, so event paths are real paths. The
    tailer also checks files on its own timer, so a missing observer costs latency, not
    data.
    """
    handler = _Waker(wake, dir_change, on_path)
    existing: dict[str, bool] = {}
    for d, recursive in dirs.items():
        if os.path.isdir(d):
            real = os.path.realpath(d)
            existing[real] = existing.get(real, False) or recursive
        else:
            log.warning("directory does not exist; polling for it", extra={"path": d})
    if not existing:
        return Watching()
    observer: BaseObserver | None = None
    writes: BaseObserver | None = None
    watching = Watching(None, not poll, existing, handler=handler)
    try:
        if poll:
            observer = PollingObserver(timeout=poll_interval)
            for d, recursive in existing.items():
                observer.schedule(handler, d, recursive=recursive)
        else:
            observer = observer_factory()
            for d, recursive in existing.items():
                observer.schedule(handler, d, recursive=recursive, event_filter=ENTRY_EVENTS)
            writes = watching.writes = observer_factory()
            watching._watch_writes()
            writes.start()
        observer.start()
    except OSError as e:  # e.g. inotify watch or instance limits reached (ENOSPC, EMFILE)
        if poll:
            raise
        for started in (observer, writes):
            if started is not None:
                _stop_quietly(started)
        log.warning("native file watching failed, falling back to polling", extra={"error": str(e)})
        return start_observer(dirs, wake, dir_change, True, poll_interval, on_path)
    mode = "polling" if poll else "native"
    log.info("watching for changes", extra={"mode": mode, "dirs": sorted(existing)})
    watching.observer = observer
    return watching


def _stop_quietly(observer: BaseObserver) -> None:
    try:
        observer.unschedule_all()
        if observer.is_alive():
            observer.stop()
            observer.join(2)
    except (OSError, RuntimeError):
        pass


def follow(tailer: FileTailer, wake: threading.Event, poll: bool, poll_interval: float,
           previous: Watching | None = None) -> Watching:
    """Watch the directories of `tailer`'s paths: events wake `wake` and name files to the tailer.

    Stops `previous` first (a reload). The tailer learns which directories deliver native
    events, so it stops re-reading idle files there; changes in between are picked up by
    the rescan this triggers.
    """
    if previous is not None:
        previous.stop()
    watching = start_observer(tailer.watched_dirs(), wake, tailer.dir_change, poll, poll_interval, tailer.notify)
    tailer.set_watching(watching.native, watching.dirs, watching if watching.native else None)
    return watching
