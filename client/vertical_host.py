"""A deployed node's vertical session host: the long-lived process that keeps the node's
vertical sessions (`client.vertical_app`) and answers its forked tasks over the node-local
channel (`client.vertical_channel`).

Its own process, started by the node's ClientApp worker (`deploy.session_host`), rather than
threads of the worker: the worker forks a task per message, and forking a process whose other
threads (the label party's training, the channel's) may hold locks can deadlock the child.
One thread per connection; sessions idle longer than their run's step timeout are dropped
(`vertical_app.expire`). It exits when the worker that started it is gone, or on SIGTERM.
When it dies otherwise, the worker starts another on the same socket (`--restarted WHY`),
which refuses every message of the sessions its predecessor held, naming their runs
(`client.vertical_registry`).

Run by the worker as `python -m jointcredit.client.vertical_host --socket PATH --parent PID`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from jointcredit.client import vertical_app
from jointcredit.client import vertical_channel as channel
from jointcredit.client.vertical_registry import Registry
from jointcredit.federation import vertical as v

READ_TIMEOUT = 120.0  # seconds a task may take to send its request
EXPIRE_EVERY = 10.0  # seconds between looks for idle sessions
WATCH_EVERY = 1.0  # seconds between checks that the worker still runs


class _Handler(socketserver.BaseRequestHandler):
    server: SessionServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(READ_TIMEOUT)
        try:
            _, data = channel.recv_frame(sock, (channel.REQUEST_STATUS,))
            req = channel.decode_request(data)
        except (channel.ChannelError, OSError) as exc:
            self._error(sock, f"bad request on the session channel: {exc}")
            return
        registry = self.server.registry
        lost = registry.lost_reason(req.run_id, req.node_id) if registry else None
        if lost is not None:  # no fresh session in the middle of a run, hello or not
            self._error(sock, lost)
            return
        try:
            reply = channel.encode_content(vertical_app.handle(req))
        except Exception as exc:  # the task reports it as its error reply
            self._error(sock, f"{type(exc).__name__}: {exc}")
            return
        finally:
            if registry is not None:
                # Only a hello registers a session (`Registry.register`), so only it settles one.
                hello = req.message_type == v.HELLO
                registry.sync(vertical_app.sessions, settled=req.key if hello else None)
        sock.settimeout(None)
        with contextlib.suppress(OSError):  # the task is gone (killed, timed out)
            channel.send_frame(sock, channel.OK, reply)

    @staticmethod
    def _error(sock: socket.socket, reason: str) -> None:
        with contextlib.suppress(OSError):
            channel.send_frame(sock, channel.ERROR, reason[: channel.MAX_ERROR].encode())


class SessionServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    registry: Registry | None = None  # None: no record kept (the channel's in-process tests)


def serve(path: str, parent: int | None = None, restarted: str | None = None) -> None:
    """Serve the channel at `path` until stopped (SIGTERM, SIGINT, or `parent` gone);
    `restarted`: why the node's previous host stopped, when this one replaces it."""
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    old = os.umask(0o177)  # the socket file: the node's own user only
    try:
        with channel.socket_address(path) as address:
            server = SessionServer(address, _Handler, bind_and_activate=False)
            server.registry = registry = Registry(Path(path).parent, restarted)
            vertical_app.register_sessions_with(registry.register)
            server.server_bind()
            server.server_activate()
    finally:
        os.umask(old)
    if registry.lost:
        print(f"vertical sessions lost with the previous host: {registry.lost}", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"vertical session host ready ({path})", flush=True)
    last_expiry = 0.0
    waited = 0.0
    try:
        while not stop.wait(WATCH_EVERY):
            if parent is not None and os.getppid() != parent:
                break
            waited += WATCH_EVERY
            if waited - last_expiry >= EXPIRE_EVERY:
                last_expiry = waited
                for run_id, _node_id in vertical_app.expire():
                    print(f"vertical session of run {run_id} dropped (idle)", flush=True)
                registry.sync(vertical_app.sessions)
    finally:
        registry.stop()  # handler threads outlive `shutdown`: a hello from now on starts nothing
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):  # this host's own (it holds the lock)
            os.unlink(path)
        # Whatever it held is lost with it, however it stops (its worker gone, SIGTERM): a
        # successor on this directory refuses those runs by name.
        registry.close(vertical_app.sessions)
        for key in vertical_app.sessions():
            vertical_app.drop(key, "the session host stopped")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--socket", required=True, help="the channel's unix socket path")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    ap.add_argument("--restarted", default=None, help="why the previous host stopped")
    args = ap.parse_args(argv)
    serve(args.socket, args.parent, args.restarted)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
