"""A deployed node's vertical sessions outlive its forked tasks: the session host keeps them
and answers over a node-local unix socket. Here the host's server runs in a thread of the
test: a hello creates the party's session there and a later message finds it; a message for
a session it does not hold, and hostile bytes on the socket (oversized, not a record dict, a
forged channel record), get clear errors; idle sessions are dropped. And the `layout` key:
the app's run config with `layout = "vertical"` gives the vertical settings, refusing
horizontal-only keys."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common.config import get_fused_config_from_dir

from jointcredit.client import vertical_app
from jointcredit.client import vertical_channel as channel
from jointcredit.client.vertical_app import Request
from jointcredit.client.vertical_host import SessionServer, _Handler
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.session_socket import SOCKET_NAME
from jointcredit.federation.settings import SettingsError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.trust import keys
from jointcredit.trust.keyset import TRUST_FILE, create_key_set, private_key_path
from jointcredit.trust.updates import SIGNATURE_RECORD, Binding, fresh_nonce, sign_content

ROOT = Path(__file__).resolve().parents[1]
RUN, NODE = 21, 5


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="jc-channel-")  # short: unix socket paths are bounded
    path = str(Path(directory) / SOCKET_NAME)
    server = SessionServer(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    keys_dir = tmp_path_factory.mktemp("keys")
    create_key_set(keys_dir, ["bank", "platform"], federation="channel-test")
    settings = VerticalSettings.model_validate(
        {"synthetic-rows": 200, "keys-dir": str(keys_dir), "trust-file": str(keys_dir / TRUST_FILE)}
    )
    return dict(settings.to_run_config())


def _request(kind: str, content: RecordDict, run_config: dict[str, object]) -> Request:
    node_config = {"partition-id": 1, "num-partitions": 2}  # the platform, simulated
    return Request(RUN, NODE, kind, content, dict(run_config), node_config)


def test_a_request_survives_the_channel_encoding(run_config: dict[str, object]) -> None:
    content = v.content(3, v.PSI_REBLIND, {v.BLINDED: np.arange(6, dtype=np.uint8)}, party="x")
    req = _request(v.PSI, content, run_config)
    back = channel.decode_request(channel.encode_request(req))
    assert (back.run_id, back.node_id, back.message_type) == (RUN, NODE, v.PSI)
    assert back.run_config == req.run_config and back.node_config == req.node_config
    assert v.request(back.content)[v.PARTY] == "x"
    assert v.arrays(back.content)[v.BLINDED].tolist() == list(range(6))
    assert channel.META not in back.content
    forged = RecordDict({channel.META: ConfigRecord({"run-id": 1})})
    with pytest.raises(channel.ChannelError, match="channel's own record"):
        channel.encode_request(_request(v.PSI, forged, run_config))


def _from_the_bank(request: RecordDict, run_config: dict[str, object]) -> RecordDict:
    """The coordinator's message relaying the bank's signed request (step 2, its node 4)."""
    bank = keys.load_private_key(private_key_path(Path(str(run_config["keys-dir"])), "bank"))
    request[protocol.IDENTITY] = protocol.identity_record("bank")
    binding = Binding(RUN, 2, 4, "bank", v.PSI, fresh_nonce())
    request[SIGNATURE_RECORD] = sign_content(request, binding, bank)
    content = v.content(3, v.PSI_REBLIND, **{v.RELAY_STEP: 2, v.RELAY_NODE: 4})
    v.relay(request, content, "bank")
    return content


def test_the_host_keeps_a_session_between_messages(
    host: str, run_config: dict[str, object]
) -> None:
    hello = _request(v.HELLO, v.content(1, v.HELLO_ACTION), run_config)
    reply = channel.forward(host, hello, timeout=60)
    assert v.request(reply)[v.ROLE] == v.FEATURE_ROLE
    assert (RUN, NODE) in vertical_app.sessions()
    # A later message (another task, another connection) finds the same session.
    blinded = np.zeros((3, 32), dtype=np.uint8)
    blinded[:, 0] = [9, 10, 11]
    psi = _from_the_bank(
        v.content(2, v.PSI_BLIND, {v.BLINDED: blinded}, party="platform"), run_config
    )
    reply = channel.forward(host, _request(v.PSI, psi, run_config), timeout=60)
    assert v.REBLINDED in v.arrays(reply)
    # A message of a run it holds no session of: refused, naming why.
    other = Request(RUN + 1, NODE, v.PSI, psi, dict(run_config), {"partition-id": 1})
    with pytest.raises(channel.ChannelError, match="session is not in this process"):
        channel.forward(host, other, timeout=60)
    # Idle longer than the run's step timeout: dropped.
    assert (RUN, NODE) in vertical_app.expire(now=1e12)
    assert (RUN, NODE) not in vertical_app.sessions()


def test_an_abort_drops_the_session_at_once(host: str, run_config: dict[str, object]) -> None:
    """The coordinator's abort when a run fails (`server.vertical_app.Relay.abort`): the
    session goes now, not after the step timeout, and the run's later messages are refused."""
    run = RUN + 5
    node_config = {"partition-id": 1, "num-partitions": 2}
    hello = Request(run, NODE, v.HELLO, v.content(1, v.HELLO_ACTION), dict(run_config), node_config)
    channel.forward(host, hello, timeout=60)
    assert (run, NODE) in vertical_app.sessions()
    abort = Request(run, NODE, v.SERVE, v.content(9, v.ABORT), dict(run_config), node_config)
    reply = channel.forward(host, abort, timeout=60)
    assert v.request(reply)[v.ACTION] == v.ABORT
    assert protocol.claimed_institution(reply) == "platform"  # so the node signs it
    assert (run, NODE) not in vertical_app.sessions()
    with pytest.raises(channel.ChannelError, match=f"no vertical session of run {run}"):
        channel.forward(host, abort, timeout=60)
    later = Request(run, NODE, v.SERVE, v.content(10, v.HISTOGRAMS), dict(run_config), node_config)
    with pytest.raises(channel.ChannelError, match=f"run {run} was aborted by the coordinator"):
        channel.forward(host, later, timeout=60)
    with pytest.raises(channel.ChannelError, match=f"run {run} was aborted by the coordinator"):
        channel.forward(host, hello, timeout=60)  # no fresh session of an aborted run


def _raw(host: str, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(host)
        sock.sendall(data)
        status, payload = channel.recv_frame(sock, (channel.OK, channel.ERROR))
    assert status == channel.ERROR
    return payload.decode()


def test_hostile_bytes_on_the_channel_get_clear_errors(host: str) -> None:
    huge = channel.HEADER.pack(channel.REQUEST_STATUS, channel.MAX_FRAME + 1)
    assert "at most" in _raw(host, huge)
    garbage = b"\xff" * 40
    assert "not a record dict" in _raw(
        host, channel.HEADER.pack(channel.REQUEST_STATUS, len(garbage)) + garbage
    )
    assert "unknown status" in _raw(host, channel.HEADER.pack(7, 0))
    no_meta = channel.encode_content(v.content(1, v.HELLO_ACTION))
    assert "without its" in _raw(
        host, channel.HEADER.pack(channel.REQUEST_STATUS, len(no_meta)) + no_meta
    )


def test_the_app_run_config_selects_the_vertical_settings() -> None:
    fused = get_fused_config_from_dir(ROOT, {"layout": "vertical", "trees": 3, "seed": 5})
    settings = VerticalSettings.from_app_config(fused)
    # Keys the run set; the rest at the vertical defaults (not the horizontal trees').
    assert (settings.trees, settings.seed) == (3, 5)
    assert (settings.max_depth, settings.max_bins) == (3, 32)
    assert settings.parties == fused["min-nodes"]
    assert v.is_vertical(fused)
    assert not v.is_vertical(get_fused_config_from_dir(ROOT, {}))
    with pytest.raises(SettingsError, match="rounds"):
        VerticalSettings.from_app_config({**fused, "rounds": 5})
    with pytest.raises(SettingsError, match="model"):
        VerticalSettings.from_app_config({**fused, "model": "logreg"})
    with pytest.raises(SettingsError, match="layout"):
        VerticalSettings.from_app_config({**fused, "layout": "diagonal"})
    with pytest.raises(SettingsError, match="trees"):
        VerticalSettings.from_app_config({**fused, "trees": 0})
    run = VerticalSettings.of(fused, run_id=99)
    assert run.out_dir.endswith("/99") and run.generated_keys


def test_the_deployed_client_app_hands_vertical_runs_to_the_vertical_app(
    monkeypatch: pytest.MonkeyPatch, task_identity: None
) -> None:
    from flwr.app import Context, Message

    from jointcredit.client import app as client_app

    msg = Message(v.content(1, v.HELLO_ACTION), dst_node_id=3, message_type=v.HELLO)
    seen: list[str] = []

    def vertical(m: Message, c: Context) -> Message:
        seen.append("vertical")
        return m

    def horizontal(m: Message, c: Context) -> Message:
        seen.append("horizontal")
        return m

    monkeypatch.setattr(client_app.vertical_app, "app", vertical)
    for layout in ("vertical", "horizontal"):
        context = Context(3, 3, {}, RecordDict(), {"layout": layout})
        client_app.layout_mod(msg, context, horizontal)
    assert seen == ["vertical", "horizontal"]


def test_the_deployed_server_app_runs_the_vertical_coordinator_for_vertical_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.app import Context

    from jointcredit.server import app as server_app

    ran: list[int] = []
    monkeypatch.setattr(server_app.vertical_app, "main", lambda grid, context: ran.append(1))
    server_app.main(None, Context(3, 0, {}, RecordDict(), {"layout": "vertical"}))  # type: ignore[arg-type]
    assert ran == [1]
