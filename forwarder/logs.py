"""Structured logging: text on a terminal, JSON lines otherwise; secrets redacted."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(secret: str) -> str:
    """What may be shown of a secret: its first 10 characters at most."""
    return secret[: min(10, len(secret) // 3)] + "..."


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RedactingFilter(logging.Filter):
    """Last line of defence: replaces the secret wherever it appears in a record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [(s, redact(s)) for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        msg = record.getMessage()
        for secret, shown in self._secrets:
            msg = msg.replace(secret, shown)
        record.msg, record.args = msg, None
        for k, v in _fields(record).items():
            if isinstance(v, str):
                for secret, shown in self._secrets:
                    v = v.replace(secret, shown)
                setattr(record, k, v)
        return True


def setup_logging(level: str, fmt: str, secrets: list[str]) -> None:
    """Configure the root logger on stderr (stdout carries dry-run events)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
