"""A deployed node's vertical session host: the long-lived process that keeps the node's
vertical sessions (`client.vertical_app`) and answers its forked tasks over the node-local
channel (`client.vertical_channel`).

Its own process, started by the node's ClientApp worker (`deploy.session_host`), rather than
threads of the worker: the worker forks a task per message, and forking a process whose other
threads (the label party's training, the channel's) may hold locks can deadlock the child.
One thread per connection; sessions idle longer than their run's step timeout are dropped
(`vertical_app.expire`). It exits when the worker that started it is gone, or on SIGTERM.

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
from types import FrameType

from jointcredit.client import vertical_app
from jointcredit.client import vertical_channel as channel

READ_TIMEOUT = 120.0  # seconds a task may take to send its request
EXPIRE_EVERY = 10.0  # seconds between looks for idle sessions
WATCH_EVERY = 1.0  # seconds between checks that the worker still runs


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(READ_TIMEOUT)
        try:
            _, data = channel.recv_frame(sock, (channel.REQUEST_STATUS,))
            req = channel.decode_request(data)
        except (channel.ChannelError, OSError) as exc:
            self._error(sock, f"bad request on the session channel: {exc}")
            return
        try:
            reply = channel.encode_content(vertical_app.handle(req))
        except Exception as exc:  # the task reports it as its error reply
            self._error(sock, f"{type(exc).__name__}: {exc}")
            return
        sock.settimeout(None)
        with contextlib.suppress(OSError):  # the task is gone (killed, timed out)
            channel.send_frame(sock, channel.OK, reply)

    @staticmethod
    def _error(sock: socket.socket, reason: str) -> None:
        with contextlib.suppress(OSError):
            channel.send_frame(sock, channel.ERROR, reason[: channel.MAX_ERROR].encode())


class SessionServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def serve(path: str, parent: int | None = None) -> None:
    """Serve the channel at `path` until stopped (SIGTERM, SIGINT, or `parent` gone)."""
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    old = os.umask(0o177)  # the socket file: the node's own user only
    try:
        server = SessionServer(path, _Handler)
    finally:
        os.umask(old)
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
    finally:
        server.shutdown()
        server.server_close()
        for key in vertical_app.sessions():
            vertical_app.drop(key)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--socket", required=True, help="the channel's unix socket path")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv)
    serve(args.socket, args.parent)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
