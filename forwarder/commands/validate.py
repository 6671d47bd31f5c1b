"""`validate`: check NDJSON files (plain, .gz, or stdin) line by line; send nothing.

Lines are split and judged exactly as `run` does (LineBuffer with max_line_bytes, then
codec.decode_line), so a line reported here is a line `run` would dead-letter.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import BinaryIO

from ..decode.codec import ChunkDecoder, LineError, decode_line
from ..decode.event import OversizeFields, UnknownFields
from ..model import Chunk, Item
from ..source.lines import LineBuffer, too_long_reason

READ_SIZE = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class BadLine:
    """One line `run` would dead-letter; `line` counts from 1, `offset` is its first byte."""

    file: str
    line: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.offset}: {self.reason}"


@dataclass
class FileReport:
    file: str
    lines: int = 0
    valid: int = 0
    bad: int = 0
    blank: int = 0

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def open_input(name: str) -> BinaryIO:
    """The decompressed bytes of a file or of stdin ('-'); gzip detected by its magic bytes."""
    raw: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def validate_stream(name: str, stream: BinaryIO, max_line_bytes: int, unknown: UnknownFields,
                    on_bad: Callable[[BadLine], None], oversize: OversizeFields = "send") -> FileReport:
    """Judge every line of `stream`; call `on_bad` for each bad one, in order."""
    report = FileReport(name)
    lines = LineBuffer(None, name, 0, max_line_bytes)
    items: list[Item] = []
    chunks = ChunkDecoder()
    while True:
        data = stream.read(READ_SIZE)
        if data:
            lines.feed(data, items)
        else:
            lines.finish(items)
        for item in items:
            if isinstance(item, Chunk) and len(item.data) <= max_line_bytes and b"\0" not in item.data:
                many = chunks.decode(item.data, oversize)  # all good: one call, as `run` does
                if many is not None:
                    report.lines += len(many.events)
                    report.valid += len(many.events)
                    continue
            _judge(item, report, max_line_bytes, unknown, on_bad, oversize)
        items.clear()
        if not data:
            return report


def _judge(item: Item, report: FileReport, max_len: int, unknown: UnknownFields,
           on_bad: Callable[[BadLine], None], oversize: OversizeFields) -> None:
    if not isinstance(item, Chunk):  # a line LineBuffer skipped for being too long
        report.lines += 1
        report.bad += 1
        on_bad(BadLine(report.file, report.lines, item.offset, item.reason))
        return
    pieces = item.data.split(b"\n")
    if not item.final:
        pieces.pop()
    offset = item.start
    for line in pieces:
        report.lines += 1
        start = offset
        offset += len(line) + 1
        if len(line) > max_len:
            reason = too_long_reason(len(line), max_len)
        elif not line.strip():
            report.blank += 1
            continue
        else:
            try:
                decode_line(line, unknown, oversize)
                report.valid += 1
                continue
            except LineError as e:
                reason = str(e)
        report.bad += 1
        on_bad(BadLine(report.file, report.lines, start, reason))
