"""Signed updates on real Flower messages, in-process: the real ClientApp (signing mod, and the
simulation adversary mod outside it) answers, the coordinator's verifier judges."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from jointcredit.client.app import app
from jointcredit.data.catalog import resolve
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import InstitutionSummary, PreprocessingSpec, agree
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.updates import SIGNATURE_RECORD, Reason, Rejected

SETTINGS = RunSettings.from_run_config({"institutions": 3, "rounds": 2, "seed": 5})
RUN_ID = 7  # the task_identity fixture's run id


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    create_key_set(directory, resolve(SETTINGS.data).ids, federation="test")
    return directory


@pytest.fixture(scope="module")
def institutions() -> list[str]:
    return resolve(SETTINGS.data).ids


def _context(keys_dir: Path, partition: int, adversary: str = "") -> Context:
    return Context(
        run_id=RUN_ID,
        node_id=100 + partition,
        node_config={"partition-id": partition, "num-partitions": 3},
        state=RecordDict(),
        run_config={**SETTINGS.to_run_config(), "keys-dir": str(keys_dir), "adversary": adversary},
    )


def _message(content: RecordDict, mtype: str, partition: int) -> Message:
    msg = Message(content, dst_node_id=100 + partition, message_type=mtype)
    msg.metadata.__dict__["_message_id"] = f"m-{mtype}-{partition}"  # as the runtime would
    return msg


class Federation:
    """Three simulated institutions after the query round, and a verifier that knows them."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self.trust = store.load_store(keys_dir / "trust.json")
        self.verifier = UpdateVerifier(self.trust, run_id=RUN_ID)
        cfg = ConfigRecord({"max-categories": 64, "min-category-count": 5})
        summaries = []
        for p in range(3):
            sent = _message(RecordDict({"config": cfg}), MessageType.QUERY, p)
            reply = app(sent, _context(keys_dir, p))
            self.verifier.check(reply, sent)  # binds node -> institution
            summaries.append(
                InstitutionSummary.model_validate_json(str(reply.content["summary"]["json"]))
            )
            schema_json = str(reply.content["summary"]["schema"])
        from jointcredit.data.schema import Schema

        self.spec: PreprocessingSpec = agree(
            summaries, Schema.model_validate_json(schema_json), max_categories=64, min_count=5
        )
        model = build_model(architecture("logreg", self.spec.n_outputs), seed=0)
        self.arrays = ArrayRecord(model.state_dict())

    def train_message(self, partition: int, server_round: int = 1) -> Message:
        cfg = ConfigRecord({"preprocessing": self.spec.to_json(), "server-round": server_round})
        return _message(
            RecordDict({"arrays": self.arrays, "config": cfg}), MessageType.TRAIN, partition
        )

    def train(self, partition: int, adversary: str = "", server_round: int = 1) -> tuple:
        sent = self.train_message(partition, server_round)
        return sent, app(sent, _context(self.keys_dir, partition, adversary))


@pytest.fixture(scope="module")
def federation(keys_dir: Path) -> Federation:
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, 1, 1
    try:
        return Federation(keys_dir)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _rejected(fed: Federation, sent: Message, reply: Message) -> Rejected:
    with pytest.raises(Rejected) as info:
        fed.verifier.check(reply, sent)
    return info.value


@pytest.mark.usefixtures("task_identity")
def test_honest_update_is_accepted_and_names_its_signer(
    federation: Federation, institutions: list[str]
) -> None:
    sent, reply = federation.train(0)
    accepted = federation.verifier.check(reply, sent)
    assert accepted.institution == institutions[0]
    entry = federation.trust.active_keys(institutions[0])[0]
    assert accepted.key_id == entry.key_id and len(accepted.digest) == 32
    # The very same reply a second time is a replay, even though its signature is genuine.
    assert _rejected(federation, sent, reply).reason is Reason.REPLAYED


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("attack", "reason", "says"),
    [
        ("unsigned", Reason.UNSIGNED, "no signature"),
        ("tamper-array", Reason.TAMPERED, "changed array:arrays:"),
        ("tamper-metric", Reason.TAMPERED, "changed metric:metrics:num-examples"),
        ("arrays-only", Reason.TAMPERED, "metric:metrics:train-loss"),
        ("foreign-key", Reason.UNKNOWN_KEY, "not in the trust store"),
        ("impersonate", Reason.WRONG_INSTITUTION, "signed by"),
        ("key-swap", Reason.WRONG_INSTITUTION, "signed by"),
        ("truncate", Reason.MALFORMED, "32 bytes"),
        ("forge", Reason.BAD_SIGNATURE, "does not verify"),
    ],
)
def test_each_attack_is_rejected_with_its_reason(
    federation: Federation, institutions: list[str], attack: str, reason: Reason, says: str
) -> None:
    sent, reply = federation.train(1, adversary=f"{institutions[1]}:{attack}")
    rejection = _rejected(federation, sent, reply)
    assert rejection.reason is reason
    assert says in str(rejection)


@pytest.mark.usefixtures("task_identity")
def test_replay_of_an_earlier_round_is_rejected(
    federation: Federation, institutions: list[str]
) -> None:
    context = _context(federation.keys_dir, 2, adversary=f"{institutions[2]}:replay")
    first = federation.train_message(2, server_round=1)
    federation.verifier.check(app(first, context), first)  # round 1: nothing to replay yet
    second = federation.train_message(2, server_round=2)
    rejection = _rejected(federation, second, app(second, context))
    assert rejection.reason is Reason.REPLAYED
    assert "signed for round 1, this is round 2" in str(rejection)


@pytest.mark.usefixtures("task_identity")
def test_reply_from_another_run_or_to_another_node_is_rejected(
    federation: Federation, institutions: list[str]
) -> None:
    sent, reply = federation.train(0)
    other_run = UpdateVerifier(federation.trust, run_id=RUN_ID + 1)
    other_run.node_institution.update(federation.verifier.node_institution)
    with pytest.raises(Rejected, match="signed for run 7, this is run 8"):
        other_run.check(reply, sent)
    # Not asked: the coordinator never sent this node a message in this exchange.
    with pytest.raises(Rejected, match="was not asked"):
        federation.verifier.check(reply, None)


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("change", ["dtype", "shape"])
def test_a_changed_dtype_or_shape_is_tampering(federation: Federation, change: str) -> None:
    sent, reply = federation.train(0)
    record = reply.content.array_records["arrays"]
    name = next(iter(record))
    old = record[name]
    if change == "dtype":  # same bytes read as another type
        new = Array(dtype="int32", shape=old.shape, stype=old.stype, data=old.data)
    else:
        new = Array(dtype=old.dtype, shape=tuple(old.shape[::-1]), stype=old.stype, data=old.data)
    record[name] = new
    rejection = _rejected(federation, sent, reply)
    assert rejection.reason is Reason.TAMPERED and f"array:arrays:{name}" in str(rejection)


@pytest.mark.usefixtures("task_identity")
def test_revoked_key_is_rejected(
    federation: Federation, keys_dir: Path, institutions: list[str]
) -> None:
    coordinator = keys.load_private_key(keys_dir / "coordinator.key")
    revoked, ids = store.revoke(
        federation.trust, coordinator, institution=institutions[0], reason="laptop stolen"
    )
    verifier = UpdateVerifier(revoked, run_id=RUN_ID)
    sent, reply = federation.train(0)
    with pytest.raises(Rejected) as info:
        verifier.check(reply, sent)
    assert info.value.reason is Reason.REVOKED_KEY
    assert ids[0] in str(info.value) and "laptop stolen" in str(info.value)


@pytest.mark.usefixtures("task_identity")
def test_signature_record_fields_are_bound(federation: Federation) -> None:
    """Changing any bound field of the signature record itself breaks it."""
    for field, value in (("server-round", 9), ("node-id", "999"), ("nonce", bytes(16))):
        sent, reply = federation.train(0)
        reply.content.config_records[SIGNATURE_RECORD][field] = value
        assert _rejected(federation, sent, reply).reason is Reason.MALFORMED


@pytest.mark.usefixtures("task_identity")
def test_deployed_node_signs_with_the_key_in_its_node_config(
    federation: Federation, keys_dir: Path, institutions: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A deployed node has no partition-id and no run-wide key set: its node config names its
    own (here passphrase-encrypted) key, and nothing else is used."""
    from jointcredit.client.data import NodeData, node_data

    key = keys.load_private_key(keys_dir / f"{institutions[0]}.key")
    keys.write_private_key(tmp_path / "own.key", key, b"s3cret")
    monkeypatch.setenv("BANK_KEY_PASS", "s3cret")
    simulated: NodeData = node_data({"partition-id": 0}, SETTINGS)  # same rows, own file below
    data_file = tmp_path / f"{institutions[0]}.parquet"
    train = simulated.data.train
    frame = train.x.assign(**{simulated.schema.label: train.y})
    if simulated.schema.time is not None:  # the file carries the time column too
        frame[simulated.schema.time] = train.time
    frame.to_parquet(data_file)
    schema_file = tmp_path / "schema.toml"
    from jointcredit.data.sba import SAMPLE_DIR

    schema_file.write_text((SAMPLE_DIR / "schema.toml").read_text())
    node_config = {
        "data-file": str(data_file),
        "schema": str(schema_file),
        "signing-key": str(tmp_path / "own.key"),
        "signing-key-passphrase-env": "BANK_KEY_PASS",
    }
    context = Context(
        run_id=RUN_ID, node_id=100, node_config=node_config, state=RecordDict(),
        run_config=SETTINGS.to_run_config(),
    )  # fmt: skip
    sent = federation.train_message(0)
    accepted = federation.verifier.check(app(sent, context), sent)
    assert accepted.institution == institutions[0]

    del node_config["signing-key"]
    with pytest.raises(Exception, match="no update-signing key"):
        app(federation.train_message(0), context)


@pytest.mark.usefixtures("task_identity")
def test_a_stragglers_late_reply_cannot_count_for_a_later_round(federation: Federation) -> None:
    """A reply that arrives after its round ended, never checked (so its nonce is new), handed
    over as the reply to the next round's message: its signature binds the round it answered."""
    _, late = federation.train(1, server_round=1)
    now = federation.train_message(1, server_round=2)
    rejection = _rejected(federation, now, late)
    assert rejection.reason is Reason.REPLAYED
    assert "signed for round 1, this is round 2" in str(rejection)
