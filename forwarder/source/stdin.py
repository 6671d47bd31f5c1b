"""Read NDJSON from a stream (stdin) until EOF; no checkpoints."""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

from ..model import Item
from .lines import LineBuffer

READ_SIZE = 256 * 1024


class StreamSource:
    """A Source over a blocking byte stream, read by a helper thread."""

    def __init__(self, stream: BinaryIO, max_line_bytes: int, wake: threading.Event, name: str = "-") -> None:
        self._stream = stream
        self._wake = wake
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._lines = LineBuffer(None, name, 0, max_line_bytes)
        self._eof = False
        self._thread = threading.Thread(target=self._reader, name="stdin-reader", daemon=True)
        self._thread.start()

    @property
    def exhausted(self) -> bool:
        return self._eof

    def location(self, key: str) -> tuple[str, int, int]:
        return (self._lines.path, 0, 0)

    def poll(self, budget: int) -> list[Item]:
        out: list[Item] = []
        while budget > 0 and not self._eof:
            try:
                data = self._queue.get_nowait()
            except queue.Empty:
                break
            if data is None:
                self._eof = True
                self._lines.finish(out)
                break
            budget -= len(data)
            self._lines.feed(data, out)
        return out

    def close(self) -> None:
        """The reader thread is a daemon blocked in read(); it ends with the process."""

    def _reader(self) -> None:
        read = getattr(self._stream, "read1", self._stream.read)
        try:
            while True:
                data = read(READ_SIZE)
                if not data:
                    break
                self._queue.put(data)
                self._wake.set()
        finally:
            self._queue.put(None)
            self._wake.set()
