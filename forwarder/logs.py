"""Structured logging: text on a terminal, JSON lines otherwise; secrets redacted.

When stderr is systemd's journal stream, each line starts with its syslog priority
(`<3>` error, ...), which journald strips and records, so `journalctl -p err` works.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(secret: str) -> str:
    """What may be shown of a secret: its first 10 characters at most."""
    return secret[: min(10, len(secret) // 3)] + "..."


class Scrubber:
    """Replaces each secret, and any longer-than-allowed prefix of it, by its `redact` form.

    Prefixes matter: statsig-python-core masks the key in its own error messages as
    `secret-abcde*****` (or with the rest of a short key appended), which shows more than
    `secret-abc...`.
    """

    def __init__(self, secrets: list[str]) -> None:
        self._rules: list[tuple[re.Pattern[str], str]] = []
        for secret in secrets:
            if not secret:
                continue
            shown = redact(secret)
            self._rules.append((re.compile(re.escape(secret)), shown))
            visible = len(shown) - 3
            if len(secret) >= 8:
                longer = re.escape(secret[: visible + 1]) + r"[A-Za-z0-9*_\-]*"
                self._rules.append((re.compile(longer), shown))

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __call__(self, text: str) -> str:
        for pattern, shown in self._rules:
            text = pattern.sub(shown, text)
        return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))
        return line


# syslog priorities (sd-daemon(3)): what journald files each line under.
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels in between take the next lower one's)."""
    return next((p for level, p in SYSLOG_PRIORITY.items() if levelno >= level), 7)


def is_journal_stream(fd: int, env: Mapping[str, str] | None = None) -> bool:
    """Is `fd` the stream systemd connected to the journal? ($JOURNAL_STREAM is its "dev:inode")."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, OSError):  # replaced by a test runner, or closed
        return None


class JournalFormatter(logging.Formatter):
    """Prefixes every line of another formatter's output with `<N>`, N the record's syslog priority.

    Every line: journald reads a multi-line record (a text traceback) as one entry per line.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class RedactingFilter(logging.Filter):
    """Last line of defence: replaces the secret wherever it appears in a record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._scrub = Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._scrub:
            return True
        record.msg, record.args = self._scrub(record.getMessage()), None
        for k, v in _fields(record).items():
            if isinstance(v, str):
                setattr(record, k, self._scrub(v))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
        return True


@dataclass(frozen=True)
class Problem:
    """A warning or error that was logged."""

    time: float  # epoch s
    level: str
    message: str  # the message, then its `error` field if any (secrets scrubbed, at most 300 chars)
    reason: str = "unnamed"  # bounded code for a metric label (`reason_code`)


_FIRST_CLAUSE = re.compile(r"[,;:(%]")


def reason_code(record: logging.LogRecord) -> str:
    """A short, bounded name for what was logged, fit for a metric label.

    Our messages are fixed phrases with the variable parts in fields (`error`, `path`, ...), so
    the first clause of the message template names the problem: "delivery failed, will retry"
    -> `delivery_failed`. A library's record is named after its top-level logger
    (`library_uvicorn`): its wording is not ours to bound.
    """
    if record.name != "forwarder" and not record.name.startswith("forwarder."):
        return "library_" + _slug(record.name.split(".")[0])
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    return _slug(_FIRST_CLAUSE.split(template, 1)[0])[:48].rstrip("_") or "unnamed"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class LastProblem(logging.Handler):
    """Remembers the last warning or error logged: its reason code for metrics (`last_error_info`),
    its text for /readyz and `status`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: Problem | None = None
        self.scrub = Scrubber([])

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        error = getattr(record, "error", None)
        if error:
            text += f": {error}"
        self.last = Problem(record.created, record.levelname.lower(), self.scrub(text)[:300], reason_code(record))

    def as_dict(self) -> dict[str, Any] | None:
        """The last problem for /readyz: {"time", "level", "reason", "message"}, or None."""
        last = self.last
        return None if last is None else {"time": last.time, "level": last.level, "reason": last.reason,
                                          "message": last.message}


LAST_PROBLEM = LastProblem()


def setup_logging(level: str, fmt: str, secrets: list[str]) -> None:
    """Configure the root logger on stderr (stdout carries dry-run events)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    fd = _fileno(sys.stderr)
    if fd is not None and is_journal_stream(fd):
        formatter = JournalFormatter(formatter)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    LAST_PROBLEM.scrub = Scrubber(secrets)
    root = logging.getLogger()
    root.handlers[:] = [handler, LAST_PROBLEM]
    root.setLevel(level.upper())
    for noisy in ("watchdog",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
