"""The outermost client mod: signs every reply exactly as it leaves the node.

Registered app-wide (`ClientApp(mods=[..., signing_mod])`), so it wraps the handler and any
handler-specific mods (DP clipping, ...): what it signs is what the coordinator receives. Error
replies carry no content and go unsigned; the coordinator records them as errors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from jointcredit.federation import protocol
from jointcredit.federation.protocol import NodeConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.trust import keys
from jointcredit.trust.keyset import RUN_KEYS_SUBDIR, private_key_path
from jointcredit.trust.updates import (
    SIGNATURE_RECORD,
    Binding,
    fresh_nonce,
    sign_content,
)


@cache
def _load(path: str, passphrase_env: str) -> Ed25519PrivateKey:
    return keys.load_private_key(Path(path), keys.passphrase_from_env(passphrase_env or None))


def signing_key(context: Context, institution: str) -> Ed25519PrivateKey:
    """Deployment: the node config's `signing-key`. Simulation: the run's key set
    (`keys-dir`, or the keys the ServerApp generated under the run directory)."""
    node = NodeConfig.parse(context.node_config, "node config")
    if node.signing_key:
        return _load(node.signing_key, node.signing_key_passphrase_env or "")
    settings = RunSettings.from_run_config(context.run_config)
    if not node.simulated and not settings.keys_dir:
        raise RuntimeError(
            "no update-signing key: set signing-key='/path/to/<institution>.key' in the node "
            "config (flower-supernode --node-config)"
        )
    directory = (
        Path(settings.keys_dir)
        if settings.keys_dir
        else settings.run_dir(context.run_id) / RUN_KEYS_SUBDIR
    )
    return _load(str(private_key_path(directory, institution)), "")


def binding_for(msg: Message, context: Context, institution: str) -> Binding:
    server_round = protocol.server_round(msg.content) if msg.has_content() else None
    return Binding(
        run_id=msg.metadata.run_id,
        server_round=server_round or 0,
        node_id=context.node_id,
        institution=institution,
        message_type=msg.metadata.message_type,
        nonce=fresh_nonce(),
    )


def signed_reply(
    msg: Message,
    context: Context,
    reply: Message,
    key_for: Callable[[str], Ed25519PrivateKey],
    signer: str = "institution",
) -> Message:
    """`reply` to `msg` signed with the key of the institution (or party: `signer`) it
    names, `key_for(institution)`; an error reply (no content) as it is."""
    if not reply.has_content():
        return reply
    institution = protocol.claimed_institution(reply.content)
    if institution is None:
        raise protocol.ProtocolError(f"a reply must name its {signer} before it is signed")
    key = key_for(institution)
    reply.content[SIGNATURE_RECORD] = sign_content(
        reply.content, binding_for(msg, context, institution), key
    )
    return reply


def signing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    return signed_reply(msg, context, reply, lambda institution: signing_key(context, institution))
