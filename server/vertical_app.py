"""The vertical federation's ServerApp: a coordinator that relays, and never computes on data.

It asks every node which party it is, runs the PSI between the label party and each feature
party by passing their messages along, then relays the label party's requests to the feature
parties and their answers back until the label party says it is done. Every reply is
verified (`UpdateVerifier`: the party's institution key, this run, this step, this message
kind, a fresh nonce) before it is used or relayed, and every relayed message goes whole, its
signature included: a feature party acts only on the label party's own signed request, and
the label party takes only the feature party's signed answer to that very request.

What passes through it is what the parties send each other (docs/PRIVACY.md, "Vertical runs:
what the coordinator sees"): blinded curve points, Paillier ciphertexts and public key, which
aligned rows are in which node (instance spaces), a split's local feature index and bin, which
rows went left, sides of test rows, part digests, the federated model's test metrics and, for
protected attributes, the label party's fairness figures of them (per-group aggregates); for
a scorecard of several platforms, one platform's coarse codes encrypted under the label
party's key, which it relays to another platform and never to the label party (`cross`). It
holds no label, no feature value and no secret key. It writes `OUT/vertical.json`: the run's
`vertical` facts and the federated metrics the label party reported.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from jointcredit.federation import vertical as v
from jointcredit.federation import vertical_fairness as fairness_wire
from jointcredit.federation.fairness import Fairness
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import push_and_pull, short_reason
from jointcredit.server.preprocessing import wait_for_nodes
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust.files import replace_file
from jointcredit.trust.keyset import TRUST_FILE, create_key_set
from jointcredit.trust.store import load_store
from jointcredit.trust.updates import Rejected

RESULT = "vertical.json"
METRICS = "metrics.json"
# Paths and node counts are the run's own, not settings to report.
RUN_ONLY = frozenset({"out-dir", "keys-dir", "trust-file", "parties", "timeout"})
MAX_METRICS = 64  # a `done` reply's metrics (about 15 are sent)
app = ServerApp()


@dataclass
class Relay:
    grid: Grid
    verifier: UpdateVerifier
    timeout: float
    step: int = 0
    bytes_sent: int = 0
    messages: int = 0
    nodes: dict[str, int] = field(default_factory=dict)  # party -> node
    addressed: set[int] = field(default_factory=set)  # every node sent a message, known or not

    def send(self, node: int, kind: str, content: RecordDict) -> tuple[Message, str]:
        """Send one message to `node`; its verified reply and the party that signed it."""
        sent = Message(content, dst_node_id=node, message_type=kind)
        self.addressed.add(node)
        self.bytes_sent += v.content_bytes(content)
        self.messages += 1
        # Polled promptly: one message per vertical step, hundreds per run (Flower's own
        # send_and_receive waits 3 s between polls over the network).
        _, replies = push_and_pull(self.grid, [sent], self.timeout)
        who = self.verifier.node_institution.get(node, f"node {node}")
        what = f"step {self.step} ({kind}, {v.request(content).get(v.ACTION)!s})"
        if not replies:
            raise FederationError(f"{who}: no reply within {self.timeout:g} s to {what}")
        reply = replies[0]
        if reply.has_error():
            raise FederationError(f"{who} failed {what}: {short_reason(reply.error.reason)}")
        try:
            accepted = self.verifier.check(reply, sent)
        except Rejected as exc:
            raise FederationError(f"{who}'s reply to {what} rejected: {exc}") from exc
        return reply, accepted.institution

    def abort(self, label: str | None) -> list[str]:
        """The run failed: tell every node it addressed to drop its session now (secrets,
        the label party's training thread) rather than when idle past the step timeout; a
        node whose hello went unanswered or was refused too (its party unknown here), since
        it may have started a session all the same. Best effort, for at most
        `ABORT_SECONDS`; the parties (or unknown nodes) that confirmed."""
        self.step += 1
        node_party = {node: party for party, node in self.nodes.items()}
        label_node = self.nodes.get(label) if label is not None else None
        sent = [
            Message(
                v.content(self.step, v.ABORT),
                dst_node_id=node,
                # Either type reaches a node's abort; the label party's own is STEP.
                message_type=v.STEP if node == label_node else v.SERVE,
            )
            for node in sorted(self.addressed)
        ]
        try:
            _, replies = push_and_pull(self.grid, sent, min(self.timeout, v.ABORT_SECONDS))
        except Exception:  # the run has failed already; its error is the one to report
            return []
        return sorted(
            node_party.get(r.metadata.src_node_id, f"node {r.metadata.src_node_id}")
            for r in replies
            if not r.has_error() and r.metadata.src_node_id in self.addressed
        )

    def ask(self, party: str, kind: str, content: RecordDict) -> Message:
        """Send one message to `party`'s node and return its verified reply."""
        reply, signer = self.send(self.nodes[party], kind, content)
        if signer != party:
            raise FederationError(f"{party}'s node answered as {signer}")
        return reply

    def message(
        self, action: str, arrays: dict[str, np.ndarray] | None = None, /, **values: object
    ) -> RecordDict:
        self.step += 1
        return v.content(self.step, action, arrays, **values)

    def forward(self, action: str, source: str, reply: Message, **values: object) -> RecordDict:
        """The next message, relaying `source`'s reply to the last message whole (its
        signature included, so the receiver verifies it against `source`'s own key)."""
        relayed = {v.RELAY_STEP: self.step, v.RELAY_NODE: self.nodes[source]}
        content = self.message(action, **relayed, **values)
        v.relay(reply.content, content, source)
        return content


def hello(relay: Relay, nodes: list[int]) -> tuple[str, list[str]]:
    """Each node's verified party; the label party and the feature parties."""
    roles: dict[str, str] = {}
    for node in nodes:
        reply, party = relay.send(node, v.HELLO, relay.message(v.HELLO_ACTION))
        if party in roles:
            raise FederationError(f"two nodes are {party}")
        relay.nodes[party] = node
        roles[party] = str(v.request(reply.content).get(v.ROLE))
    labels = [p for p, r in roles.items() if r == v.LABEL_ROLE]
    features = sorted(p for p, r in roles.items() if r == v.FEATURE_ROLE)
    if len(labels) != 1 or not features or len(labels) + len(features) != len(roles):
        raise FederationError(f"one label party and feature parties expected, got {roles}")
    return labels[0], features


def psi(
    relay: Relay, label: str, features: list[str]
) -> tuple[int, dict[str, Message], dict[str, int]]:
    """PSI of the label party with each feature party, then the aligned rows sent out: each
    of the label party's messages relayed whole to the feature party it is for, and back."""
    for party in features:
        blinded = relay.ask(label, v.PSI, relay.message(v.PSI_BLIND, party=party))
        answer = relay.ask(party, v.PSI, relay.forward(v.PSI_REBLIND, label, blinded))
        relay.ask(label, v.PSI, relay.forward(v.PSI_INTERSECT, party, answer, party=party))
    size = 0
    columns, steps = {}, {}
    for party in features:
        aligned = relay.ask(label, v.PSI, relay.message(v.PSI_ALIGN, party=party))
        size = int(str(v.request(aligned.content).get(v.SIZE)))
        columns[party] = relay.ask(party, v.PSI, relay.forward(v.PSI_ALIGNED, label, aligned))
        steps[party] = relay.step
    return size, columns, steps


def train(relay: Relay, label: str, columns: dict[str, Message], steps: dict[str, int]) -> Message:
    """Relay the label party's requests until it is done; `columns`: each feature party's
    reply to its aligned rows (its columns' layout), `steps`: the steps they answered; its
    verified `done` reply."""
    values: dict[str, object] = {}
    for party in columns:
        values[f"{v.RELAY_STEP}/{party}"] = steps[party]
        values[f"{v.RELAY_NODE}/{party}"] = relay.nodes[party]
    content = relay.message(v.START, **values)
    for party, reply in columns.items():
        v.relay(reply.content, content, party)
    reply = relay.ask(label, v.STEP, content)
    while (action := str(v.request(reply.content)[v.ACTION])) != v.DONE:
        party = str(v.request(reply.content).get(v.PARTY))
        if party not in relay.nodes or party == label:
            raise FederationError(f"the label party asked a party not in the run: {party!r}")
        if action == v.SC_CROSS:
            answer = cross(relay, label, party, reply)
        else:
            answer = relay.ask(party, v.SERVE, relay.forward(action, label, reply))
        reply = relay.ask(label, v.STEP, relay.forward(v.NEXT, party, answer, party=party))
    return reply


def done_figures(
    reply: Message, settings: VerticalSettings
) -> tuple[dict[str, float], Fairness | None]:
    """The label party's `done`: its metrics and, for protected attributes, its fairness
    figures; read as a hostile message (signed by the label party, still bounded and
    type-checked before use); `FederationError` naming the problem."""
    request = v.request(reply.content)
    metrics: dict[str, float] = {}
    for key, value in request.items():
        if not key.startswith(v.METRIC_PREFIX):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FederationError(f"the label party's metric {key!r} is not a number")
        if not math.isfinite(value) or len(metrics) >= MAX_METRICS:
            raise FederationError(f"the label party's metric {key!r}: not finite, or too many")
        metrics[key.removeprefix(v.METRIC_PREFIX)] = float(value)
    figures = request.get(v.FAIRNESS)
    if figures is None:
        return metrics, None
    if not settings.fairness:
        raise FederationError("the label party sent fairness figures the run turned off")
    try:
        return metrics, fairness_wire.decode(figures, settings)
    except ProtocolError as exc:
        raise FederationError(f"the label party's fairness figures refused: {exc}") from exc


def cross(relay: Relay, label: str, party: str, request: Message) -> Message:
    """A scorecard cross table: the label party's request relayed to its peer first, whose
    answer (its coarse codes encrypted under the label party's key) goes, with the request,
    to `party`, and never to the label party, which could decrypt it; `party`'s answer."""
    peer = str(v.request(request.content).get(v.PEER))
    if peer not in relay.nodes or peer in (label, party):
        raise FederationError(f"a cross table with a party not in the run: {peer!r}")
    asked_at = relay.step  # the step the label party's request answered
    slots = relay.ask(peer, v.SERVE, relay.forward(v.SC_CROSS, label, request))
    content = relay.message(
        v.SC_CROSS,
        **{v.RELAY_STEP: asked_at, v.RELAY_NODE: relay.nodes[label],
           f"{v.RELAY_STEP}/{peer}": relay.step, f"{v.RELAY_NODE}/{peer}": relay.nodes[peer]},
    )  # fmt: skip
    v.relay(request.content, content, label)
    v.relay(slots.content, content, peer)
    return relay.ask(party, v.SERVE, content)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = VerticalSettings.of(dict(context.run_config), context.run_id)
    generated = _generate_keys(settings, context.run_id) if settings.generated_keys else None
    try:
        _run(grid, context, settings)
    finally:
        if generated is not None:  # the run's private keys: gone with the run
            shutil.rmtree(generated, ignore_errors=True)


def _generate_keys(settings: VerticalSettings, run_id: int) -> Path:
    """A local `flwr run .` simulation given no keys: a key set for the dataset's parties,
    where the simulated nodes on this machine find theirs (as the horizontal ServerApp)."""
    from jointcredit.data.vertical_datasets import load_vertical_dataset

    schema = Path(settings.schema_file) if settings.schema_file else None
    parties = list(
        load_vertical_dataset(
            settings.dataset, schema=schema, seed=settings.seed, rows=settings.synthetic_rows
        ).schema.parties
    )
    directory = Path(settings.keys_dir)
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's keys in a reused out-dir
    create_key_set(directory, parties, federation=f"simulation-{run_id}")
    return directory


def _run(grid: Grid, context: Context, settings: VerticalSettings) -> None:
    trust = load_store(settings.trust_path)
    relay = Relay(grid, UpdateVerifier(trust, context.run_id), settings.timeout)
    nodes = wait_for_nodes(grid, settings.parties, settings.timeout)
    label: str | None = None
    try:
        label, features = hello(relay, nodes)
        started = time.perf_counter()
        size, columns, steps = psi(relay, label, features)
        psi_seconds = time.perf_counter() - started
        if size == 0:
            raise FederationError("the parties have no applicant in common")
        started = time.perf_counter()
        federated, fairness = done_figures(train(relay, label, columns, steps), settings)
    except BaseException:
        relay.abort(label)
        raise
    result: dict[str, object] = {
        "federated": federated,
        # The horizontal run's key and shape (`federation.fairness`), the label party's figures.
        **({v.FAIRNESS: fairness.model_dump(mode="json")} if fairness is not None else {}),
        "vertical": {
            "label_party": label,
            "parties": [label, *features],
            "intersection_size": size,
            "psi_seconds": psi_seconds,
            "training_seconds": time.perf_counter() - started,
            "bytes_sent": relay.bytes_sent,
            "messages": relay.messages,
            "verified_replies": relay.verifier.accepted,
        },
    }
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "parties" in context.run_config:  # `jointcredit simulate`: it writes OUT from this
        replace_file(out / RESULT, json.dumps(result, indent=2).encode(), mode=0o644)
        return
    # `flwr run` / `jointcredit link run`: OUT as a simulation leaves it, without the
    # baselines (the coordinator holds no rows to compute them on).
    hidden = RUN_ONLY | (v.TREE_KEYS if settings.model == "scorecard" else set())
    metrics = dict(
        layout=v.VERTICAL,
        dataset=settings.dataset,
        **result,
        centralized=None,
        label_party_only=None,
        config={k: x for k, x in settings.to_run_config().items() if k not in hidden},
    )
    replace_file(out / TRUST_FILE, settings.trust_path.read_bytes(), mode=0o644)
    replace_file(out / METRICS, json.dumps(metrics, indent=2).encode(), mode=0o644)
