"""Misbehaving institutions for simulations: what the coordinator's verification must catch.

`adversary = "bank-a:tamper-array,bank-b:replay"` in the run config makes those simulated
nodes alter their signed train replies on the way out (this mod sits outside the signing mod).
`secagg-dropout` makes a node crash at SecAgg+'s masked-vector stage instead (the protocol
must recover its masks from the others' shares). It is refused outside simulations: a
deployed node (no `partition-id`) never misbehaves on purpose. Data-poisoning attacks (sign
flips, label flips...) belong to the robust-aggregation work; these are protocol attacks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from jointcredit.client.data import node_data
from jointcredit.client.signing import binding_for, signing_key
from jointcredit.federation import protocol
from jointcredit.federation.choices import ADVERSARY_ATTACKS, parse_adversary
from jointcredit.federation.protocol import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SIGNATURE,
    STATE_ADVERSARY_REPLAY,
    NodeConfig,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.trust import keys
from jointcredit.trust.updates import DOMAIN, Field, content_parts, sign_content, update_digest

# Acts before the node answers rather than on its reply: crash at SecAgg+'s masked-vector
# stage, after sharing its keys.
DROPOUT = "secagg-dropout"


@cache
def _stranger() -> Ed25519PrivateKey:
    return keys.generate()


def _signature(reply: Message) -> ConfigRecord:
    return reply.content.config_records[SIGNATURE]


def _unsigned(msg: Message, reply: Message, context: Context) -> None:
    del reply.content[SIGNATURE]


def _own(reply: Message) -> str:
    return protocol.claimed_institution(reply.content) or ""


def _tamper_array(msg: Message, reply: Message, context: Context) -> None:
    record = reply.content.array_records[ARRAYS]
    name = next(iter(record))
    old = record[name]
    data = bytearray(old.data)
    data[-1] ^= 0x01  # one bit of one weight
    record[name] = Array(dtype=old.dtype, shape=old.shape, stype=old.stype, data=bytes(data))


def _tamper_metric(msg: Message, reply: Message, context: Context) -> None:
    metrics = reply.content.metric_records[METRICS]
    metrics[NUM_EXAMPLES] = int(metrics[NUM_EXAMPLES]) * 10  # type: ignore[arg-type]


def _resign(
    msg: Message, reply: Message, context: Context, key: Ed25519PrivateKey, as_: str
) -> None:
    del reply.content[SIGNATURE]
    reply.content[SIGNATURE] = sign_content(reply.content, binding_for(msg, context, as_), key)


def _foreign_key(msg: Message, reply: Message, context: Context) -> None:
    """Sign with a key the federation never registered."""
    _resign(msg, reply, context, _stranger(), _own(reply))


def _truncate(msg: Message, reply: Message, context: Context) -> None:
    sig = _signature(reply)
    sig[Field.SIGNATURE] = bytes(sig[Field.SIGNATURE])[:32]  # type: ignore[arg-type]


def _forge(msg: Message, reply: Message, context: Context) -> None:
    sig = _signature(reply)
    sig[Field.SIGNATURE] = bytes(64)


def _key_swap(msg: Message, reply: Message, context: Context) -> None:
    """Keep its own signature but name another institution's key and identity."""
    settings = RunSettings.from_run_config(context.run_config)
    victim = _others(settings, _own(reply))[0]
    sig = _signature(reply)
    sig[Field.KEY_ID] = keys.key_id(signing_key(context, victim))
    sig[Field.INSTITUTION] = victim


def _impersonate(msg: Message, reply: Message, context: Context) -> None:
    """Sign, correctly, with another institution's key (a stolen key)."""
    settings = RunSettings.from_run_config(context.run_config)
    victim = _others(settings, _own(reply))[0]
    _resign(msg, reply, context, signing_key(context, victim), victim)


def _arrays_only(msg: Message, reply: Message, context: Context) -> None:
    """An honest key and signature, but over a digest of the arrays only (not the metrics)."""
    institution = _own(reply)
    key = signing_key(context, institution)
    sig = _signature(reply)
    parts = {n: d for n, d in content_parts(reply.content).items() if n.startswith("array:")}
    binding = binding_for(msg, context, institution)
    digest = update_digest(parts, binding)
    sig[Field.NONCE] = binding.nonce
    sig[Field.PARTS] = list(parts)
    sig[Field.PART_DIGESTS] = list(parts.values())
    sig[Field.DIGEST] = digest
    sig[Field.SIGNATURE] = key.sign(DOMAIN + digest)


def _replay(msg: Message, reply: Message, context: Context) -> None:
    """Send the previous round's (validly signed) reply again instead of this one."""
    state = context.state
    previous = {
        k[len(STATE_ADVERSARY_REPLAY) :]: v
        for k, v in state.items()
        if k.startswith(STATE_ADVERSARY_REPLAY)
    }
    current = dict(reply.content.items())
    for name, record in current.items():
        state[STATE_ADVERSARY_REPLAY + name] = record
    if not previous:
        return  # the first round: nothing to replay yet
    for name in list(reply.content.keys()):
        del reply.content[name]
    for name, record in previous.items():
        reply.content[name] = record


def _others(settings: RunSettings, own: str) -> list[str]:
    from jointcredit.data.catalog import resolve

    return [i for i in resolve(settings.data).ids if i != own]


ATTACKS: dict[str, Callable[[Message, Message, Context], None]] = {
    "unsigned": _unsigned,
    "tamper-array": _tamper_array,
    "tamper-metric": _tamper_metric,
    "foreign-key": _foreign_key,
    "truncate": _truncate,
    "forge": _forge,
    "key-swap": _key_swap,
    "impersonate": _impersonate,
    "arrays-only": _arrays_only,
    "replay": _replay,
    DROPOUT: lambda msg, reply, context: None,  # acts before the reply: see adversary_mod
}
if set(ATTACKS) != set(ADVERSARY_ATTACKS):  # the settings validate names against that list
    raise RuntimeError("client.adversary and federation.settings list different attacks")


def _dropping_out(msg: Message, context: Context, institution: str) -> bool:
    settings = RunSettings.from_run_config(context.run_config)
    if parse_adversary(settings.adversary).get(institution) != DROPOUT:
        return False
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return configs is not None and configs.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS


def adversary_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    settings = RunSettings.from_run_config(context.run_config)
    if settings.adversary and msg.metadata.message_type == MessageType.TRAIN:
        institution = node_data(dict(context.node_config), settings).institution
        if _dropping_out(msg, context, institution):
            raise RuntimeError(f"{institution} dropped out (simulated)")
    reply = call_next(msg, context)
    if not settings.adversary or not reply.has_content():
        return reply
    if not NodeConfig.parse(context.node_config, "node config").simulated:
        raise RuntimeError("the adversary setting exists for simulations only")
    if msg.metadata.message_type != MessageType.TRAIN:
        return reply
    institution = _own(reply)
    attack = parse_adversary(settings.adversary).get(institution)
    if attack is not None and attack != DROPOUT:
        ATTACKS[attack](msg, reply, context)
    return reply
