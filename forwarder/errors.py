"""Exception tree of statsig-forwarder.

    ForwarderError
    ├── ConfigError            bad option, unknown key, missing file: fail at start
    ├── StateLockedError       another process owns the state directory
    ├── ServeError             an HTTP server (receiver, metrics) cannot listen
    └── DeliveryError          one POST to Statsig did not succeed
        ├── RetryableError     transport errors, timeouts, 408, 429, 5xx, 2xx without success
        │   └── AuthError      401/403/404: configuration problem, retried slowly, reported in health
        └── RejectedError      400/413/422: the batch itself is refused; split and dead-letter
"""

from __future__ import annotations


class ForwarderError(Exception):
    """Base of every error the forwarder raises on purpose."""


class ConfigError(ForwarderError):
    """Invalid configuration; the message names the offending key."""


class StateLockedError(ForwarderError):
    """The state directory is locked by another running forwarder."""


class DeliveryError(ForwarderError):
    """A request to Statsig failed."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RetryableError(DeliveryError):
    """Transient failure: send the same batch again after a backoff."""


class AuthError(RetryableError):
    """The key or endpoint is wrong; nothing is acknowledged, retried slowly."""


class RejectedError(DeliveryError):
    """Statsig refused the batch's content; isolate the offending event."""


class ServeError(ForwarderError):
    """An HTTP server (receiver, metrics) cannot listen."""
