"""The vertical federation's ClientApp: the label party's and the feature parties' nodes.

Handlers (`jointcredit.federation.vertical`'s message types):
- `query.vertical_hello`: which party this node is, and its role;
- `query.vertical_psi`: the PSI steps (`client.vertical_label`, `client.vertical_feature`);
- `train.vertical_step` (label party): start training with every feature party's columns, or
  take a feature party's relayed answer; reply with the next request, or done;
- `train.vertical_serve` (feature party): answer one of the label party's requests, which the
  coordinator relays whole and the feature party verifies against the label party's own
  signature first (`client.vertical_feature`); its PSI requests come the same way.

Every reply names its party and is signed on its way out by `vertical_signing_mod` with the
party's institution key (the same signature and binding as the horizontal path's replies).

A party's session (its rows, its PSI scalar, the Paillier secret key, the training thread)
lives in one process of its node, keyed by run and node, and is never serialized: not into a
message, nor into Flower's node state. In a simulation that is the Ray actor every node runs
in (`simulations/vertical.py`), and `handle` runs in it. In a deployment each message runs in
a fork of the node's ClientApp worker, so the handlers forward the message to the node's
session host (`client.vertical_channel`, a unix socket private to the node), which runs
`handle` and keeps the sessions; the reply is signed in the fork as here. A message that
reaches a process without its session fails naming that. Sessions end with the run (the
label party's `done`, a feature party's `write-part`), with any message that fails (its error
ends the run), or when idle longer than the run's step timeout (`expire`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from jointcredit.client import vertical_channel as channel
from jointcredit.client.signing import signed_reply
from jointcredit.client.vertical_fairness import check_groups
from jointcredit.client.vertical_feature import LAST, FeatureSession
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.vertical import VerticalData, load_party
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.data.vertical_schema import VerticalSchema, load_vertical_schema
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation import vertical_fairness as fairness_wire
from jointcredit.federation.protocol import NodeConfig, ProtocolError
from jointcredit.federation.session_socket import SOCKET_ENV
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.trust import keys, pins, store
from jointcredit.trust.keyset import private_key_path

log = logging.getLogger(__name__)
Session = LabelSession | FeatureSession
VERTICAL_RUNS = "vertical"  # a deployed party's parts: <state-dir>/vertical/<run id>/model/
Arrays = dict[str, np.ndarray]
_SESSIONS: dict[tuple[int, int], Session] = {}
_USED: dict[tuple[int, int], float] = {}  # monotonic time of each session's last message
_LOCK = threading.Lock()
_registrar: Callable[[tuple[int, int]], None] | None = None  # register_sessions_with
# Runs the coordinator aborted: a hello of one is refused, also one still under way when the
# abort came (the coordinator gave up on it), so no session of it is left to idle.
_ABORTED: dict[tuple[int, int], None] = {}
MAX_ABORTED = 10_000  # keys remembered, the oldest forgotten first


@dataclass(frozen=True)
class Request:
    """What a vertical handler needs of a message and its context: all a forked task passes
    to the node's session host."""

    run_id: int
    node_id: int
    message_type: str
    content: RecordDict
    run_config: dict[str, Any]
    node_config: dict[str, Any]

    @classmethod
    def of(cls, msg: Message, context: Context) -> Request:
        return cls(
            msg.metadata.run_id, context.node_id, msg.metadata.message_type, msg.content,
            dict(context.run_config), dict(context.node_config),
        )  # fmt: skip

    @property
    def key(self) -> tuple[int, int]:
        return (self.run_id, self.node_id)


@cache
def _key(path: str, passphrase_env: str) -> Ed25519PrivateKey:
    return keys.load_private_key(Path(path), keys.passphrase_from_env(passphrase_env or None))


def _party_and_key(
    node_config: dict[str, Any], settings: VerticalSettings
) -> tuple[str, Ed25519PrivateKey]:
    node = NodeConfig.parse(node_config, "node config")
    schema = _schema(settings, node)
    if node.institution:
        party = node.institution
    elif node.partition_id is not None and node.partition_id < len(schema.parties):
        party = list(schema.parties)[node.partition_id]
    else:
        raise ValueError("node config names neither an institution nor a simulated partition")
    if party not in schema.parties:
        raise ValueError(f"{party} is not a party of the vertical schema")
    if node.signing_key:
        return party, _key(node.signing_key, node.signing_key_passphrase_env or "")
    if _deployed(node) or not settings.keys_dir:
        raise RuntimeError(_needs(protocol.SIGNING_KEY))
    return party, _key(str(private_key_path(Path(settings.keys_dir), party)), "")


def _deployed(node: NodeConfig) -> bool:
    """A deployed node: its node config names its institution or data file (a simulated one
    has partition ids only). It takes its trust store, signing key, data file, schema and
    output directory (`state-dir`/vertical/<run id>) from its node config alone: the run
    config is the coordinator's to set."""
    return node.institution is not None or node.data_file is not None


def _needs(key: str) -> str:
    return (
        f"a deployed vertical node needs {key} in its node config (flower-supernode "
        "--node-config): it takes none from the run config, which the coordinator sets"
    )


def _schema(settings: VerticalSettings, node: NodeConfig) -> VerticalSchema:
    if node.schema_file:
        return load_vertical_schema(node.schema_file)
    if _deployed(node):
        raise ValueError(_needs(protocol.NODE_SCHEMA))
    return _dataset(settings).schema


def _trust(settings: VerticalSettings, node: NodeConfig) -> store.TrustStore:
    """A deployed node's own trust store (its kit's), held to the coordinator key pinned for
    its federation when this machine recorded one; a simulation's, the run's."""
    if not _deployed(node):
        return store.load_store(settings.trust_path)
    if not node.trust_store:
        raise ValueError(_needs(protocol.NODE_TRUST_STORE))
    path = Path(node.trust_store)
    return store.load_store(path, pin=pins.pinned_key(pins.federation_of(path)))


@cache
def _dataset_cached(dataset: str, schema: str, seed: int, rows: int) -> VerticalData:
    return load_vertical_dataset(
        dataset, schema=Path(schema) if schema else None, seed=seed, rows=rows
    )


def _dataset(settings: VerticalSettings) -> VerticalData:
    return _dataset_cached(
        settings.dataset, settings.schema_file, settings.seed, settings.synthetic_rows
    )


def _session(req: Request) -> Session:
    """The node's session of this run: created by the hello message, found afterwards."""
    with _LOCK:
        found = _SESSIONS.get(req.key)
        if found is not None:
            _USED[req.key] = time.monotonic()
        aborted = req.key in _ABORTED
    if found is not None:
        return found
    if aborted:
        raise RuntimeError(_aborted(req.run_id))
    if req.message_type != v.HELLO:
        raise RuntimeError(
            "this node's vertical session is not in this process (never started, ended, or "
            "dropped after the run's timeout): a vertical run needs every message of a node "
            "handled where its session started"
        )
    settings = VerticalSettings.of(req.run_config, req.run_id)
    party, signer = _party_and_key(req.node_config, settings)
    node = NodeConfig.parse(req.node_config, "node config")
    if _deployed(node):
        if not node.data_file:
            raise ValueError(_needs(protocol.DATA_FILE))
        if not node.state_dir:
            raise ValueError(_needs(protocol.STATE_DIR))
        # Its part of the model goes to its own directory, not where the run config says.
        own = Path(node.state_dir) / VERTICAL_RUNS / str(req.run_id)
        settings = settings.model_copy(update={"out_dir": str(own)})
        schema = _schema(settings, node)
        rows = load_party(Path(node.data_file), schema, party)
    else:
        data = _dataset(settings)
        schema, rows = data.schema, data.parties[party]
    frame = rows.frame
    # A deployed node checks relayed messages against its own kit's trust store.
    trust = _trust(settings, node)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    session: Session
    if schema.parties[party].label:
        if settings.split == "time" and _deployed(node) and not node.allow_time_split:
            # The split is the coordinator's to set; what it discloses is the bank's to accept.
            raise ValueError(
                "split = time tells every feature party which of its shared customers are the "
                "label party's latest applicants (docs/PRIVACY.md); a deployed label party takes "
                f"it only with {protocol.ALLOW_TIME_SPLIT} = true in its node config"
            )
        groups = rows.groups
        if groups is not None and _deployed(node) and not node.share_fairness:
            # The figures leave the bank only as it says, not as the coordinator asks.
            if settings.fairness:
                log.info("fairness figures withheld: %s is not true in this node's config",
                         protocol.SHARE_FAIRNESS)  # fmt: skip
            groups = None
        check_groups(groups, schema, settings)  # what `done` could not carry: refused now
        session = LabelSession(
            party, schema, frame, settings, trust, req.run_id, signer, created, groups
        )
    else:
        session = FeatureSession(party, schema, frame, settings, trust, signer, created, req.run_id)
        session.pair_min_rows = node.pair_min_rows  # its own floor, not the coordinator's to set
    if _registrar is not None:  # outside _LOCK: the registry reads `sessions` under its lock
        _registrar(req.key)
    with _LOCK:
        aborted = req.key in _ABORTED
        if not aborted:
            _SESSIONS[req.key] = session
            _USED[req.key] = time.monotonic()
    if aborted:
        if isinstance(session, LabelSession):
            session.close("the coordinator ended the run")
        raise RuntimeError(_aborted(req.run_id))
    return session


def _aborted(run_id: int) -> str:
    return f"run {run_id} was aborted by the coordinator: this node starts no session of it"


def _signing_key(msg: Message, context: Context) -> Ed25519PrivateKey:
    settings = VerticalSettings.of(dict(context.run_config), msg.metadata.run_id)
    return _party_and_key(dict(context.node_config), settings)[1]


def vertical_signing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Signs every reply as it leaves the node (`client.signing`'s format and binding)."""
    reply = call_next(msg, context)
    return signed_reply(msg, context, reply, lambda _: _signing_key(msg, context), "party")


app = ClientApp(mods=[vertical_signing_mod])


def _answer(msg: Message, context: Context) -> Message:
    """This node's reply: from its session host when the node runs one (deployment), else
    handled here (simulation)."""
    req = Request.of(msg, context)
    path = os.environ.get(SOCKET_ENV)
    if path:
        # A step may take the run's step timeout in the host; its own error comes first.
        timeout = VerticalSettings.of(req.run_config, req.run_id).timeout + channel.GRACE
        return Message(channel.forward(path, req, timeout=timeout), reply_to=msg)
    return Message(handle(req), reply_to=msg)


@app.query(v.HELLO_ACTION)
def hello_handler(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.query(v.PSI_ACTION)
def psi_handler(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.train(v.STEP_ACTION)
def step_handler(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@app.train(v.SERVE_ACTION)
def serve_handler(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


def handle(req: Request) -> RecordDict:
    """The reply content to one vertical message (unsigned), with the node's session."""
    handlers = {v.HELLO: hello, v.PSI: psi, v.STEP: step, v.SERVE: serve}
    handler = handlers.get(req.message_type)
    if handler is None:
        raise ProtocolError(f"not a vertical message: {req.message_type!r}")
    if req.message_type in (v.STEP, v.SERVE) and _is_abort(req.content):
        handler = abort
    try:
        return handler(req)
    except BaseException:
        drop(req.key, "a message failed")  # the run fails: its secrets and thread go with it
        raise


def _is_abort(content: RecordDict) -> bool:
    try:
        return v.request(content).get(v.ACTION) == v.ABORT
    except ProtocolError:
        return False  # the handler refuses it, naming why


def abort(req: Request) -> RecordDict:
    """The coordinator ended the run: drop its session now (its secrets, a label party's
    training thread) rather than when idle past the step timeout."""
    with _LOCK:
        session = _SESSIONS.get(req.key)
        _ABORTED[req.key] = None  # a hello of it, even one still under way, starts nothing
        while len(_ABORTED) > MAX_ABORTED:
            del _ABORTED[next(iter(_ABORTED))]
    if session is None:
        raise ProtocolError(
            f"no vertical session of run {req.run_id} on this node to abort (a hello of it "
            "still under way is refused when it ends)"
        )
    drop(req.key, "the coordinator ended the run")
    return _reply(session, v.content(_step(req), v.ABORT))


def _reply(session: Session, content: RecordDict) -> RecordDict:
    content[protocol.IDENTITY] = protocol.identity_record(session.party)
    return content


def _step(req: Request) -> int:
    step = protocol.server_round(req.content)
    if step is None:
        raise ProtocolError("a vertical message without its step")
    return step


def hello(req: Request) -> RecordDict:
    session = _session(req)
    role = v.LABEL_ROLE if isinstance(session, LabelSession) else v.FEATURE_ROLE
    return _reply(session, v.content(_step(req), v.HELLO_ACTION, role=role))


def psi(req: Request) -> RecordDict:
    session = _session(req)
    step, request = _step(req), v.request(req.content)
    if isinstance(session, FeatureSession):
        return _answer_label(session, step, session.handle(req.content, v.PSI))
    action = str(request[v.ACTION])
    party = str(request.get(v.PARTY, ""))
    if action == v.PSI_BLIND:
        out = v.content(step, action, session.blind(party), party=party)
        return session.sent(party, _reply(session, out))
    if action == v.PSI_INTERSECT:
        answer = session.answer(
            v.relayed(req.content, party), party, int(str(request[v.RELAY_STEP])),
            int(str(request[v.RELAY_NODE])), v.PSI, v.PSI_REBLIND,
        )  # fmt: skip
        session.intersect(party, answer)
        return _reply(session, v.content(step, action))
    if action == v.PSI_ALIGN:
        size, index, arrays = session.aligned_for(party)
        out = v.content(step, action, arrays, size=size, party=party, **{v.INDEX: index})
        return session.sent(party, _reply(session, out))
    raise ProtocolError(f"the label party does not do {action!r}")


def _answer_label(
    session: FeatureSession, step: int, answer: tuple[str, Arrays, bytes]
) -> RecordDict:
    action, out, digest = answer
    return _reply(session, v.content(step, action, out, **{v.REQUEST_SHA256: digest}))


def step(req: Request) -> RecordDict:
    session = _session(req)
    if not isinstance(session, LabelSession):
        raise ProtocolError("only the label party takes training steps")
    step, request = _step(req), v.request(req.content)
    action = str(request[v.ACTION])
    if action == v.START:
        columns = {}
        # In the order they were answered: each relayed answer must be newer than the last.
        steps = {p: int(str(request[f"{v.RELAY_STEP}/{p}"])) for p in session.indices}
        for p in sorted(steps, key=steps.__getitem__):
            relay_node = int(str(request[f"{v.RELAY_NODE}/{p}"]))
            relayed = v.relayed(req.content, p)
            columns[p] = session.answer(relayed, p, steps[p], relay_node, v.PSI, v.PSI_ALIGNED)
        session.start(columns)
    elif action == v.NEXT:
        party = str(request[v.PARTY])
        session.deliver(
            v.relayed(req.content, party), party, int(str(request[v.RELAY_STEP])),
            int(str(request[v.RELAY_NODE])),
        )  # fmt: skip
    else:
        raise ProtocolError(f"unknown training step {action!r}")
    kind, value = session.next_request(step)
    if kind == "done":
        _end(req.key)  # the thread has ended; nothing of the run stays in the process
        done: dict[str, float | str] = {f"{v.METRIC_PREFIX}{k}": float(x) for k, x in value.items()}
        if session.fairness is not None:  # the figures only: no row, no row's group
            done[v.FAIRNESS] = fairness_wire.encode(session.fairness)
        return _reply(session, v.content(step, v.DONE, **done))
    party, wanted, arrays, values = value
    out = v.content(step, wanted, arrays, party=party, **values)
    return session.sent(party, _reply(session, out))


def serve(req: Request) -> RecordDict:
    session = _session(req)
    if not isinstance(session, FeatureSession):
        raise ProtocolError("only feature parties serve the label party's requests")
    answer = session.handle(req.content, v.STEP)
    if answer[0] == LAST[session.settings.model]:  # its last request
        _end(req.key)
    return _answer_label(session, _step(req), answer)


def _end(key: tuple[int, int]) -> Session | None:
    with _LOCK:
        _USED.pop(key, None)
        return _SESSIONS.pop(key, None)


def expire(now: float | None = None) -> list[tuple[int, int]]:
    """Drop every session idle longer than its run's step timeout (the coordinator has given
    up on it by then); a label party's training thread is stopped. The keys dropped."""
    now = time.monotonic() if now is None else now
    with _LOCK:
        idle = [k for k, s in _SESSIONS.items() if now - _USED.get(k, now) > s.settings.timeout]
    for key in idle:
        drop(key)
    return idle


def drop(key: tuple[int, int], why: str = "idle too long") -> None:
    """End a session now (its label party's training thread stopped)."""
    session = _end(key)
    if isinstance(session, LabelSession):
        session.close(why)


def register_sessions_with(registrar: Callable[[tuple[int, int]], None] | None) -> None:
    """Have every new session's key recorded (`registrar`, the session host's registry)
    before its hello is answered; it may refuse the session by raising."""
    global _registrar
    _registrar = registrar


def sessions() -> list[tuple[int, int]]:
    with _LOCK:
        return list(_SESSIONS)
