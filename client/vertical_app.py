"""The vertical federation's ClientApp: the label party's and the feature parties' nodes.

Handlers (`jointcredit.federation.vertical`'s message types):
- `query.vertical_hello`: which party this node is, and its role;
- `query.vertical_psi`: the PSI steps (`client.vertical_label`, `client.vertical_feature`);
- `train.vertical_step` (label party): start training with every feature party's columns, or
  take a feature party's relayed answer; reply with the next request, or done;
- `train.vertical_serve` (feature party): answer one of the label party's requests.

Every reply names its party and is signed on its way out by `vertical_signing_mod` with the
party's institution key (the same signature and binding as the horizontal path's replies).

A party's session (its rows, its PSI scalar, the Paillier secret key, the training thread)
lives in its node's process, keyed by run and node, and is never serialized: not into a
message, nor into Flower's node state. A simulation therefore runs every node in one Ray actor
(`simulations/vertical.py`); a message that reaches a process without its session fails
naming that.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from jointcredit.client.signing import binding_for
from jointcredit.client.vertical_feature import FeatureSession
from jointcredit.client.vertical_label import LabelSession
from jointcredit.data.vertical import VerticalData, load_party
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.data.vertical_schema import VerticalSchema, load_vertical_schema
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import NodeConfig, ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import private_key_path
from jointcredit.trust.updates import SIGNATURE_RECORD, sign_content

Session = LabelSession | FeatureSession
_SESSIONS: dict[tuple[int, int], Session] = {}
_LOCK = threading.Lock()


@cache
def _key(path: str, passphrase_env: str) -> Ed25519PrivateKey:
    return keys.load_private_key(Path(path), keys.passphrase_from_env(passphrase_env or None))


def _party_and_key(context: Context, settings: VerticalSettings) -> tuple[str, Ed25519PrivateKey]:
    node = NodeConfig.parse(context.node_config, "node config")
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
    if not settings.keys_dir:
        raise RuntimeError("no signing key: set signing-key in the node config")
    return party, _key(str(private_key_path(Path(settings.keys_dir), party)), "")


def _schema(settings: VerticalSettings, node: NodeConfig) -> VerticalSchema:
    if node.schema_file:
        return load_vertical_schema(node.schema_file)
    return _dataset(settings).schema


@cache
def _dataset_cached(dataset: str, schema: str, seed: int, rows: int) -> VerticalData:
    return load_vertical_dataset(
        dataset, schema=Path(schema) if schema else None, seed=seed, rows=rows
    )


def _dataset(settings: VerticalSettings) -> VerticalData:
    return _dataset_cached(
        settings.dataset, settings.schema_file, settings.seed, settings.synthetic_rows
    )


def _session(msg: Message, context: Context) -> Session:
    """The node's session of this run: created by the hello message, found afterwards."""
    key = (msg.metadata.run_id, context.node_id)
    with _LOCK:
        found = _SESSIONS.get(key)
    if found is not None:
        return found
    if msg.metadata.message_type != v.HELLO:
        raise RuntimeError(
            "this node's vertical session is not in this process: a vertical run needs every "
            "message of a node handled by the process that started its session"
        )
    settings = VerticalSettings.from_run_config(dict(context.run_config))
    party, signer = _party_and_key(context, settings)
    node = NodeConfig.parse(context.node_config, "node config")
    if node.data_file:
        schema = load_vertical_schema(node.schema_file or settings.schema_file)
        frame = load_party(Path(node.data_file), schema, party).frame
    else:
        data = _dataset(settings)
        schema, frame = data.schema, data.parties[party].frame
    trust = store.load_store(Path(settings.trust_file))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    session: Session
    if schema.parties[party].label:
        session = LabelSession(
            party, schema, frame, settings, trust, msg.metadata.run_id, signer, created
        )
    else:
        session = FeatureSession(party, schema, frame, settings, trust, signer, created)
    with _LOCK:
        _SESSIONS[key] = session
    return session


def _signing_key(msg: Message, context: Context) -> Ed25519PrivateKey:
    settings = VerticalSettings.from_run_config(dict(context.run_config))
    return _party_and_key(context, settings)[1]


def vertical_signing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Signs every reply as it leaves the node (`client.signing`'s format and binding)."""
    reply = call_next(msg, context)
    if not reply.has_content():
        return reply
    institution = protocol.claimed_institution(reply.content)
    if institution is None:
        raise ProtocolError("a reply must name its party before it is signed")
    reply.content[SIGNATURE_RECORD] = sign_content(
        reply.content, binding_for(msg, context, institution), _signing_key(msg, context)
    )
    return reply


app = ClientApp(mods=[vertical_signing_mod])


def _reply(msg: Message, session: Session, content: RecordDict) -> Message:
    content[protocol.IDENTITY] = protocol.identity_record(session.party)
    return Message(content, reply_to=msg)


def _step(msg: Message) -> int:
    step = protocol.server_round(msg.content)
    if step is None:
        raise ProtocolError("a vertical message without its step")
    return step


@app.query(v.HELLO_ACTION)
def hello(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    role = v.LABEL_ROLE if isinstance(session, LabelSession) else v.FEATURE_ROLE
    return _reply(msg, session, v.content(_step(msg), v.HELLO_ACTION, role=role))


@app.query(v.PSI_ACTION)
def psi(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    step, request = _step(msg), v.request(msg.content)
    action = str(request[v.ACTION])
    if isinstance(session, FeatureSession):
        if action == v.PSI_REBLIND:
            out = session.reblind(v.arrays(msg.content))
        elif action == v.PSI_ALIGNED:
            out = session.aligned(v.arrays(msg.content), int(str(request.get(v.PARTY, "0"))))
        else:
            raise ProtocolError(f"a feature party does not do {action!r}")
        return _reply(msg, session, v.content(step, action, out))
    party = str(request.get(v.PARTY, ""))
    if action == v.PSI_BLIND:
        return _reply(msg, session, v.content(step, action, session.blind(party)))
    if action == v.PSI_INTERSECT:
        answer = session.answer(
            v.relayed(msg.content, party), party, int(str(request[v.RELAY_STEP])),
            int(str(request[v.RELAY_NODE])), v.PSI,
        )  # fmt: skip
        session.intersect(party, answer)
        return _reply(msg, session, v.content(step, action))
    if action == v.PSI_ALIGN:
        size, per_party = session.align()
        arrays = {f"{p}/{k}": a for p, d in per_party.items() for k, a in d.items()}
        indices = ",".join(f"{p}={i}" for p, i in session.indices.items())
        return _reply(msg, session, v.content(step, action, arrays, size=size, party=indices))
    raise ProtocolError(f"the label party does not do {action!r}")


@app.train(v.STEP_ACTION)
def step(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    if not isinstance(session, LabelSession):
        raise ProtocolError("only the label party takes training steps")
    step, request = _step(msg), v.request(msg.content)
    action = str(request[v.ACTION])
    if action == v.START:
        columns = {}
        # In the order they were answered: each relayed answer must be newer than the last.
        steps = {p: int(str(request[f"{v.RELAY_STEP}/{p}"])) for p in session.indices}
        for p in sorted(steps, key=steps.__getitem__):
            relay_node = int(str(request[f"{v.RELAY_NODE}/{p}"]))
            relayed = v.relayed(msg.content, p)
            columns[p] = session.answer(relayed, p, steps[p], relay_node, v.PSI)
        session.start(columns)
    elif action == v.NEXT:
        party = str(request[v.PARTY])
        session.deliver(
            v.relayed(msg.content, party), party, int(str(request[v.RELAY_STEP])),
            int(str(request[v.RELAY_NODE])),
        )  # fmt: skip
    else:
        raise ProtocolError(f"unknown training step {action!r}")
    kind, value = session.next_request(step)
    if kind == "done":
        _end(msg, context)  # the thread has ended; nothing of the run stays in the process
        metrics = {f"{v.METRIC_PREFIX}{k}": float(x) for k, x in value.items()}
        return _reply(msg, session, v.content(step, v.DONE, **metrics))
    party, wanted, arrays = value
    return _reply(msg, session, v.content(step, wanted, arrays, party=party))


@app.train(v.SERVE_ACTION)
def serve(msg: Message, context: Context) -> Message:
    session = _session(msg, context)
    if not isinstance(session, FeatureSession):
        raise ProtocolError("only feature parties serve the label party's requests")
    action = str(v.request(msg.content)[v.ACTION])
    out = session.serve(action, v.arrays(msg.content))
    if action == v.WRITE_PART:  # its last request
        _end(msg, context)
    return _reply(msg, session, v.content(_step(msg), action, out))


def _end(msg: Message, context: Context) -> None:
    with _LOCK:
        _SESSIONS.pop((msg.metadata.run_id, context.node_id), None)
