"""How `jointcredit serve` and `jointcredit exposure serve` run uvicorn: bounded request
headers, a deadline for them, and a connection limit.

uvicorn bounds neither the size of a request's headers (its httptools protocol; the h11 one
only with `h11_max_incomplete_event_size`) nor the time a client may take to send them, so
one client could hold thousands of connections open with half a request each, or send a
megabyte of headers. `LimitedHttpTools` closes a connection whose request headers are not
complete within `header_timeout` seconds of its first byte (or of the connection), and
answers 431 when they pass `max_header_bytes`. Beyond `max_connections` open connections
uvicorn answers 503. In production a reverse proxy in front does this and more
(docs/DEPLOYMENT.md).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess


@dataclass(frozen=True)
class ServerLimits:
    max_header_bytes: int = 32 * 2**10  # request line and headers together
    header_timeout: float = 5.0  # seconds for a request's headers to arrive
    max_connections: int = 1000  # open connections (and requests) before 503
    keep_alive: int = 5  # seconds an idle connection stays open between requests


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config with the limits `LimitedHttpTools` reads (pickled with it into each
    worker process)."""

    def __init__(self, app: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=LimitedHttpTools,
            limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keep_alive,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            **kwargs,
        )
        self.limits = limits


class _HeadersTooLarge(Exception):
    pass


class LimitedHttpTools(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.limits if isinstance(config, LimitedConfig) else ServerLimits()
        self._max_header_bytes = limits.max_header_bytes
        self._header_timeout = limits.header_timeout
        self._header_bytes = 0
        self._headers_due: asyncio.TimerHandle | None = None
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._expect_headers()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser reports an exception raised in a callback as a malformed request.
        if not self._too_large:
            super().send_400_response(msg)
            return
        text = b"request headers too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(text)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + text
        )
        self.transport.close()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def _expect_headers(self) -> None:
        if self._headers_due is None:
            self._headers_due = self.loop.call_later(self._header_timeout, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.close()


def address(sock: socket.socket, scheme: str = "http") -> str:
    """The URL a bound socket answers on (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's Server that says where it listens once it does (at log level warning uvicorn
    says nothing, and a port that was taken must not be announced)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self.announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.announce is not None and self.started:
            for listener in self.servers:
                for sock in listener.sockets or ():
                    self.announce(address(sock))


def run(
    app: Any,
    limits: ServerLimits,
    *,
    workers: int = 1,
    announce: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> None:
    """uvicorn.run with the limits (`app`: an app, or with `workers` > 1 an import string;
    `kwargs`: uvicorn.Config's); `announce(url)` once the socket listens."""
    config = LimitedConfig(app, limits, workers=workers, **kwargs)
    server = AnnouncingServer(config, announce if workers == 1 else None)
    try:
        if workers == 1:
            server.run()
        else:
            sock = config.bind_socket()
            if announce is not None:
                announce(address(sock))
            Multiprocess(config, target=server.run, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    if workers == 1 and not server.started:
        raise SystemExit(3)  # uvicorn's exit code for a failed start-up
