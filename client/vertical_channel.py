"""The node-local channel between a deployed node's forked ClientApp tasks and its vertical
session host (`client.vertical_host`).

Each task runs in a fork that ends with its message, so a vertical party's session (rows, PSI
scalar, Paillier secret key, the label party's training thread) lives in the session host, a
long-lived process of the same node. A task sends it the message (`vertical_app.Request`) and
gets back the unsigned reply content, or an error message; the task signs the reply as in a
simulation.

The channel is a unix socket in a 0700 directory the node's ClientApp worker makes at start
(its path inherited by the forks through `federation.session_socket.SOCKET_ENV`): only the
node's own user reaches it, never the network. Frames are length-prefixed protobuf (Flower's
own `RecordDict` serialisation), never pickle: a peer on the socket can send bytes, not code.
Every frame is bounded (`MAX_FRAME`) and every read has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from flwr.app import ConfigRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

if TYPE_CHECKING:
    from jointcredit.client.vertical_app import Request

MAX_ADDRESS: Final = 107  # bytes of a unix socket's address (Linux: 108 with its NUL)
MAX_FRAME: Final = 1 << 30  # 1 GiB: far above a run's largest message (PSI of 1M ids: ~32 MB)
HEADER: Final = struct.Struct("!BQ")  # status, payload length
OK: Final = 0
ERROR: Final = 1
REQUEST_STATUS: Final = 2
MAX_ERROR: Final = 4096  # characters of an error message sent back
GRACE: Final = 30.0  # seconds a task waits beyond the run's step timeout for the host's reply
META: Final = "jointcredit.channel"  # the request's own record, beside the message content


class ChannelError(RuntimeError):
    """The session host refused or failed a request, or the channel broke."""


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ChannelError(f"the channel closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send_frame(sock: socket.socket, status: int, payload: bytes) -> None:
    if len(payload) > MAX_FRAME:
        raise ChannelError(f"a frame of {len(payload)} bytes (at most {MAX_FRAME})")
    sock.sendall(HEADER.pack(status, len(payload)) + payload)


def recv_frame(sock: socket.socket, statuses: tuple[int, ...]) -> tuple[int, bytes]:
    status, size = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if status not in statuses:
        raise ChannelError(f"a frame of unknown status {status}")
    if size > MAX_FRAME:
        raise ChannelError(f"a frame of {size} bytes announced (at most {MAX_FRAME})")
    return status, _recv_exactly(sock, size)


def encode_content(content: RecordDict) -> bytes:
    return bytes(recorddict_to_proto(content).SerializeToString())


def decode_content(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    try:
        proto.ParseFromString(data)
        return recorddict_from_proto(proto)
    except Exception as exc:  # protobuf's DecodeError and Flower's own checks
        raise ChannelError(f"not a record dict ({type(exc).__name__})") from exc


def encode_request(req: Request) -> bytes:
    content = RecordDict(dict(req.content.items()))
    if META in content:
        raise ChannelError(f"a message carrying the channel's own record {META!r}")
    content[META] = ConfigRecord(
        {
            "run-id": req.run_id,
            "node-id": req.node_id,
            "message-type": req.message_type,
            "run-config": json.dumps(req.run_config),
            "node-config": json.dumps(req.node_config),
        }
    )
    return encode_content(content)


def _json_object(value: Any, what: str) -> dict[str, Any]:
    try:
        found = json.loads(str(value))
    except ValueError as exc:
        raise ChannelError(f"{what}: not JSON") from exc
    if not isinstance(found, dict):
        raise ChannelError(f"{what}: not a JSON object")
    return found


def decode_request(data: bytes) -> Request:
    from jointcredit.client.vertical_app import Request

    content = decode_content(data)
    meta = content.pop(META, None)
    if not isinstance(meta, ConfigRecord):
        raise ChannelError(f"a request without its {META!r} record")
    run_id, node_id, kind = meta.get("run-id"), meta.get("node-id"), meta.get("message-type")
    if not isinstance(run_id, int) or not isinstance(node_id, int) or not isinstance(kind, str):
        raise ChannelError("a request without its run id, node id or message type")
    return Request(
        run_id, node_id, kind, content,
        _json_object(meta.get("run-config"), "run-config"),
        _json_object(meta.get("node-config"), "node-config"),
    )  # fmt: skip


@contextlib.contextmanager
def socket_address(path: str) -> Iterator[str]:
    """`path` as a unix socket's address, for `bind` or `connect`: itself when it fits, else
    the same file through a descriptor of its directory (`/proc/self/fd/N/NAME`, Linux), since
    a node's state directory may be deeper than an address may be long (`MAX_ADDRESS`)."""
    if len(os.fsencode(path)) <= MAX_ADDRESS:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def forward(path: str, req: Request, *, timeout: float) -> RecordDict:
    """Send `req` to the session host at `path`; its reply content. Raises `ChannelError`
    with the host's reason when it failed the request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with socket_address(path) as address:
                sock.connect(address)
        except OSError as exc:
            raise ChannelError(f"the node's vertical session host is not reachable: {exc}") from exc
        send_frame(sock, REQUEST_STATUS, encode_request(req))
        try:
            status, payload = recv_frame(sock, (OK, ERROR))
        except (OSError, ChannelError) as exc:  # the host died or hung with the request
            raise ChannelError(
                f"the node's vertical session host gave no reply to run {req.run_id}'s "
                f"{req.message_type} within {timeout:g} s ({exc}); if it stopped, the run's "
                "session was lost with it"
            ) from exc
    if status == ERROR:
        raise ChannelError(payload.decode("utf-8", errors="replace"))
    return decode_content(payload)
