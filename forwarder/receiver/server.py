"""uvicorn in a thread of its own, and the receiver-only process (`statsig-forwarder receive`).

The listening socket is bound by the caller's thread, so a busy port fails at start with a
clear error. uvicorn installs no signal handlers outside the main thread: the process
(app.py, or `receive` below) keeps owning SIGTERM/SIGINT and stops the server first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ..errors import ServeError
from ..settings import Settings, parse_listen
from ..state.deadletter import DeadLetter
from .api import Ready, create_app, default_ready
from .appender import Appender
from .intake import Intake
from .relay import Relay

log = logging.getLogger(__name__)

DEFAULT_RECEIVE_LISTEN = "127.0.0.1:8080"


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline on request headers.

    uvicorn bounds idle keep-alive connections and the app bounds slow bodies (408), but a
    client that connects and then sends its headers slowly, or nothing at all (slowloris),
    would hold a connection forever: it is closed `header_timeout` after the request began.
    """

    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        _date_header(self.server_state)
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self.transport.close()


_date_second = [0]


def _date_header(state: ServerState) -> None:
    """Refresh the Date header uvicorn sends, at most once a second, when a request comes
    (uvicorn's own tick, which `_QuietServer` does not run, did it 10 times a second)."""
    now = int(time.time())
    if now != _date_second[0]:
        _date_second[0] = now
        headers = [h for h in state.default_headers if h[0] != b"date"]
        state.default_headers = [(b"date", formatdate(now, usegmt=True).encode()), *headers]


class _QuietServer(uvicorn.Server):
    """uvicorn's server, minus its main loop's tick every 0.1 s: the loop sleeps until `exit`
    (an idle receiver wakes only for requests; relay clients flush every few seconds)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _exit: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._exit = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.on_tick(0)  # the first Date header
        if not self.should_exit:
            await self._exit.wait()

    def exit(self) -> None:
        """Stop serving (from any thread): like setting should_exit, without the tick to notice it."""
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(event.set)


class HttpServer:
    """One ASGI app served by uvicorn on its own event loop thread."""

    def __init__(self, app: FastAPI, listen: str, idle_timeout: float, name: str = "http",
                 after_stop: Callable[[], None] | None = None,
                 before_stop: Callable[[], None] | None = None) -> None:
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it each
        # response (head and body written separately) stalls ~40 ms on delayed ACKs.
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.bind((host, port))
            self.sock.listen(2048)
        except OSError as e:
            self.sock.close()
            raise ServeError(f"cannot listen on {listen}: {e.strerror or e}") from None
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # our own start/stop lines suffice
        protocol = type("HeaderDeadline", (_HeaderDeadline,), {"header_timeout": idle_timeout})
        config = uvicorn.Config(app, http=protocol, log_config=None, access_log=False, lifespan="off",
                                server_header=False,
                                proxy_headers=False, timeout_keep_alive=max(1, int(idle_timeout)),
                                timeout_graceful_shutdown=5)
        self.server = _QuietServer(config)
        self.name = name
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._error: BaseException | None = None
        self._after_stop = after_stop
        self._before_stop = before_stop
        self._stopped = False

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as e:  # reported by start()
            self._error = e
            log.error("HTTP server failed", extra={"server": self.name, "error": repr(e)})

    def start(self, timeout: float = 10.0) -> None:
        """Serve, returning once uvicorn accepts connections."""
        self._thread.start()
        waited = 0.0
        while not self.server.started and self._thread.is_alive() and waited < timeout:
            self._thread.join(0.01)
            waited += 0.01
        if not self.server.started:
            raise ServeError(f"HTTP server on {self.address} did not start: {self._error!r}")
        log.info(f"{self.name} listening", extra={"address": self.address, "url": f"http://{self.address}"})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish the requests in progress (each waits for its append). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._before_stop is not None:
            self._before_stop()
        self.server.exit()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(2.0)
        self.sock.close()
        if self._after_stop is not None:
            self._after_stop()
        log.info(f"{self.name} stopped")


def ignore_file_size_signal() -> None:
    """Over a file size limit (RLIMIT_FSIZE), get EFBIG and answer 503 instead of dying of SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def build_receiver(settings: Settings, ready: Ready | None = None) -> tuple[HttpServer, Appender]:
    """The receiver (intake + health + metrics) on receiver.listen, and its Appender."""
    r = settings.receiver
    listen = r.listen or DEFAULT_RECEIVE_LISTEN
    appender = Appender(settings.receiver_log_path, r.durability)
    relay = None
    closers = [appender.close]
    if settings.relay.enabled:
        assert settings.dead_letter_path is not None  # derived by Settings
        deadletter = DeadLetter(settings.dead_letter_path)
        relay = Relay(deadletter, settings.relay, settings.secret_key, r.secret_token, settings.max_line_bytes,
                      settings.unknown_fields, settings.oversize_fields, fsync=appender.fsync)
        closers.append(deadletter.close)
        log.info(relay.status.describe())
    intake = Intake(appender, r, settings.max_line_bytes, settings.unknown_fields, settings.oversize_fields, relay)

    def stopping() -> None:
        if relay is not None:
            relay.stopping = True

    def after_stop() -> None:
        for close in closers:
            close()

    app = create_app(default_ready(appender, ready), intake)
    server = HttpServer(app, listen, r.read_timeout, "receiver", after_stop, before_stop=stopping)
    ignore_file_size_signal()
    return server, appender


def build_metrics(listen: str, ready: Ready | None) -> HttpServer:
    """Health and metrics only (`run --metrics-listen`)."""
    return HttpServer(create_app(default_ready(None, ready)), listen, 5.0, "metrics")


def receive(settings: Settings) -> None:
    """Run the receiver alone until SIGTERM/SIGINT."""
    server, appender = build_receiver(settings)
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        log.info("receiver appending", extra={"path": str(appender.path), "durability": appender.durability,
                                              "token": settings.receiver.secret_token is not None})
        stop.wait()  # the signal handler sets it
        log.info("stopping receiver")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped", extra={"requests": appender.requests, "commits": appender.commits})
