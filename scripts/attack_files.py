"""Tampering and artifact attacks for `scripts/attack.py`, each on a fresh copy, each checked
by the `jointcredit` command (in process, one case at a time): `audit verify --anchors` must
catch every edit of a decision log a service wrote, `verify` (`score` for a rollback) must
refuse every altered model artifact. Caught/refused: a non-zero exit with a message, no
uncaught exception, within the time limit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attack_serve import Model, Server, client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "attacks"))
from forge import forge
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.service.chain import canonical, chain_hash

TIMEOUT = 120  # seconds a check may take before it counts as hanging


@dataclass
class Case:
    name: str
    caught: bool
    exit_code: int | None
    message: str
    chain_alone_caught: bool | None = None  # the truncation cases: without the anchors


class _Hung(BaseException):  # not caught by CliRunner, which catches Exception
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hung


def _cli(args: list[str]) -> tuple[int | None, str]:
    """Exit code and output of `jointcredit ARGS`; None for an uncaught exception or no
    answer within TIMEOUT (SIGALRM interrupts a blocking open, e.g. of a FIFO)."""
    outer = signal.alarm(0)  # the caller's own alarm (attack.py's budget), resumed after
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(min(TIMEOUT, outer) if outer else TIMEOUT)
    try:
        result = CliRunner().invoke(app, args)
    except _Hung:
        return None, f"no answer within {TIMEOUT} s"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.alarm(max(1, outer - int(time.monotonic() - started)))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return None, f"{type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.output.strip()


def _refused(code: int | None) -> bool:
    return code not in (0, None)


def _last_line(output: str) -> str:
    return " ".join(output.splitlines()[-1:])[:300]


# --- the decision log ------------------------------------------------------------------------

Tamper = Callable[[Path], None]


def _sql(*statements: str) -> Tamper:
    def apply(db: Path) -> None:
        con = sqlite3.connect(db)
        for s in statements:
            con.execute(s)
        con.commit()
        con.close()

    return apply


def _truncate(db: Path) -> None:
    """Delete the newest rows and rewind the head to what is left: the chain alone agrees."""
    con = sqlite3.connect(db)
    (top,) = con.execute("SELECT max(seq) FROM audit_log").fetchone()
    keep = top // 2
    (h,) = con.execute("SELECT hash FROM audit_log WHERE seq = ?", (keep,)).fetchone()
    con.execute("DELETE FROM decisions WHERE last_seq > ?", (keep,))
    con.execute("DELETE FROM audit_log WHERE seq > ?", (keep,))
    con.execute("UPDATE chain_head SET seq = ?, hash = ?", (keep, h))
    con.commit()
    con.close()


def _rewrite(db: Path) -> None:
    """Change what an early applicant declared (a feature the response does not repeat) and
    recompute every later hash and the head, as someone who knows the hash function would: the
    chain alone agrees."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT seq, kind, decision_id, institution, created_at, payload, "
                       "prev_hash FROM audit_log ORDER BY seq").fetchall()  # fmt: skip
    prev = rows[0][6]
    edited = False
    for seq, kind, decision_id, institution, created_at, payload, _ in rows:
        if not edited and seq >= 3 and kind == "decision":
            entry = json.loads(payload)
            name = next(k for k, v in entry["features"].items() if isinstance(v, float | int))
            entry["features"][name] += 100
            payload, edited = canonical(entry), True
        digest = chain_hash(prev, seq, kind, decision_id, institution, created_at, payload)
        con.execute("UPDATE audit_log SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (payload, prev, digest, seq))  # fmt: skip
        prev = digest
    con.execute("UPDATE chain_head SET seq = ?, hash = ?", (rows[-1][0], prev))
    con.commit()
    con.close()


def _not_a_database(db: Path) -> None:
    db.write_bytes(b"this is not a database\n" * 100)


_MID = "(SELECT seq FROM audit_log ORDER BY seq LIMIT 1 OFFSET 5)"
# A decision still under review: marking it decided and approved in the view is a real change.
_ONE_DECISION = (
    "(SELECT decision_id FROM decisions WHERE status = 'under_review' ORDER BY decision_id LIMIT 1)"
)
_REVIEWED = "(SELECT decision_id FROM decisions WHERE final_decision IS NOT NULL LIMIT 1)"

NEEDS_REVIEW = "a review's outcome flipped in the view"

# name: (tampering, needs the anchors to be caught)
LOG_CASES: dict[str, tuple[Tamper, bool]] = {
    "a decision's payload edited (score raised)": (_sql(
        f"UPDATE audit_log SET payload = replace(payload, '\"score\":', '\"score\":9') "
        f"WHERE seq = {_MID}"), False),
    "a row's hash replaced": (_sql(
        f"UPDATE audit_log SET hash = '{'0' * 64}' WHERE seq = {_MID}"), False),
    "a row's previous hash replaced": (_sql(
        f"UPDATE audit_log SET prev_hash = '{'1' * 64}' WHERE seq = {_MID}"), False),
    "a row's institution changed": (_sql(
        f"UPDATE audit_log SET institution = 'bank-b' WHERE seq = {_MID}"), False),
    "a row's time changed": (_sql(
        f"UPDATE audit_log SET created_at = '2020-01-01T00:00:00+00:00' WHERE seq = {_MID}"),
        False),
    "a row's kind changed": (_sql(
        f"UPDATE audit_log SET kind = 'batch' WHERE seq = {_MID}"), False),
    "two rows' payloads swapped": (_sql(
        "UPDATE audit_log SET payload = (SELECT payload FROM audit_log WHERE seq = 3) "
        "WHERE seq = 4"), False),
    "a middle row deleted": (_sql(f"DELETE FROM audit_log WHERE seq = {_MID}"), False),
    "the newest row deleted": (_sql(
        "DELETE FROM decisions WHERE last_seq = (SELECT max(seq) FROM audit_log)",
        "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)"), False),
    "the chain head rewound alone": (_sql("UPDATE chain_head SET seq = seq - 1"), False),
    "a decision's status changed in the view": (_sql(
        f"UPDATE decisions SET status = 'decided', final_decision = 'approve' "
        f"WHERE decision_id = {_ONE_DECISION}"), False),
    "a decision flipped in the view": (_sql(
        f"UPDATE decisions SET decision = CASE decision WHEN 'approve' THEN 'decline' "
        f"ELSE 'approve' END WHERE decision_id = {_ONE_DECISION}"), False),
    "a review's outcome flipped in the view": (_sql(
        f"UPDATE decisions SET final_decision = CASE final_decision WHEN 'approve' "
        f"THEN 'decline' ELSE 'approve' END WHERE decision_id = {_REVIEWED}"), False),
    "a decision deleted from the view": (_sql(
        f"DELETE FROM decisions WHERE decision_id = {_ONE_DECISION}"), False),
    "a decision inserted into the view only": (_sql(
        "INSERT INTO decisions SELECT 'forged-1', institution, status, decision, "
        "final_decision, created_at, updated_at, response, last_seq FROM decisions LIMIT 1"),
        False),
    "the newest rows deleted and the head rewound (truncation)": (_truncate, True),
    "every table emptied": (_sql("DELETE FROM decisions", "DELETE FROM audit_log",
                                 "DELETE FROM chain_head"), True),
    "an early row rewritten, every later hash recomputed": (_rewrite, True),
    "the audit_log table dropped": (_sql("DROP TABLE audit_log"), False),
    "the database replaced by a file that is not one": (_not_a_database, False),
}  # fmt: skip


def make_log(model: Model, token: str, workdir: Path, decisions: int = 30) -> Server:
    """A decision log written by a real `serve`: `decisions` decisions, two referrals of the
    first ten reviewed right after them, anchored every 5 entries and at its clean shutdown."""
    server = Server(model, workdir / "decisions.sqlite", workdir / "serve.log", anchor_every=5)
    server.start()
    try:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {token}"}
        with client(server.base) as http:
            schemas = http.get("/openapi.json").json()["components"]["schemas"]
            example = schemas["DecisionRequest"]["examples"][0]
            review = schemas["ReviewIn"]["examples"][0]
            referred = []
            for i in range(decisions):
                # The documented applicant is approved: every third one asks for a person, so
                # the log also holds decisions under review (and reviews of them).
                asked = {"human_review_requested": True} if i % 3 == 0 else {}
                r = http.post("/v1/decisions", json={**example, **asked, "reference": f"app-{i}"},
                              headers=headers)  # fmt: skip
                r.raise_for_status()
                if r.json()["status"] == "under_review":
                    referred.append(r.json()["decision_id"])
                if i == 9:  # reviews early: truncating the newest half leaves them whole
                    for decision_id in referred[:2]:
                        http.post(f"/v1/reviews/{decision_id}", json=review,
                                  headers=headers).raise_for_status()  # fmt: skip
    finally:
        server.stop()
    con = sqlite3.connect(server.db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copies need only the database file
    con.close()
    return server


def _check_log(server: Server, name: str, tamper: Tamper | None, anchors: bool) -> Case:
    with tempfile.TemporaryDirectory(prefix="attack-log-") as tmp:
        db = Path(tmp) / "decisions.sqlite"
        shutil.copy(server.db, db)
        shutil.copy(server.anchors, Path(tmp) / "anchors.jsonl")
        if tamper is not None:
            tamper(db)
        args = ["audit", "verify", "--db", f"sqlite:///{db}"]
        anchored = ["--anchors", str(Path(tmp) / "anchors.jsonl"),
                    "--anchor-public-key", f"{server.anchor_key}.pub"]  # fmt: skip
        code, out = _cli(args + anchored)
        alone = None
        if anchors:
            alone = _refused(_cli(args)[0])
    return Case(name, _refused(code), code, _last_line(out), alone)


def _forge_anchor(server: Server) -> Case:
    """An anchor moved to an earlier row (to hide the rows after it)."""
    with tempfile.TemporaryDirectory(prefix="attack-log-") as tmp:
        anchors = Path(tmp) / "anchors.jsonl"
        lines = [json.loads(x) for x in server.anchors.read_text().splitlines()]
        lines[-1]["seq"] = max(1, lines[-1]["seq"] - 3)
        anchors.write_text("".join(json.dumps(x) + "\n" for x in lines))
        code, out = _cli(["audit", "verify", "--db", f"sqlite:///{server.db}",
                          "--anchors", str(anchors),
                          "--anchor-public-key", f"{server.anchor_key}.pub"])  # fmt: skip
    return Case("an anchor moved to an earlier row", _refused(code), code, _last_line(out))


def tamper_log(server: Server) -> tuple[Case, list[Case]]:
    """The untouched log's check (must pass) and every tampering case's."""
    control = _check_log(server, "the log as written", None, False)
    con = sqlite3.connect(server.db)
    (reviews,) = con.execute("SELECT count(*) FROM audit_log WHERE kind = 'review'").fetchone()
    con.close()
    cases = [
        _check_log(server, n, t, a)
        for n, (t, a) in LOG_CASES.items()
        if reviews or n != NEEDS_REVIEW
    ]  # the model referred nobody: nothing to flip
    return control, [*cases, _forge_anchor(server)]


# --- the model artifact ----------------------------------------------------------------------

Attack = Callable[[Path], None]


def _flip(name: str) -> Attack:
    def apply(run: Path) -> None:
        path = run / "model" / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    return apply


def _cut(name: str) -> Attack:
    def apply(run: Path) -> None:
        path = run / "model" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return apply


def _swap_weights(run: Path) -> None:
    shutil.copy(run / CHECKPOINT / "weights.npz", run / "model" / "weights.npz")


def _delete(name: str) -> Attack:
    return lambda run: (run / "model" / name).unlink()


def _fifo(run: Path) -> None:
    (run / "model" / "weights.npz").unlink()
    os.mkfifo(run / "model" / "weights.npz")


def _directory(run: Path) -> None:
    (run / "model" / "weights.npz").unlink()
    (run / "model" / "weights.npz").mkdir()


def _symlink(run: Path) -> None:
    """The same bytes, through a symlink: signed files are read only as regular files."""
    real = run / "elsewhere.npz"
    (run / "model" / "weights.npz").rename(real)
    (run / "model" / "weights.npz").symlink_to(real)


def _relabel(run: Path) -> None:
    path = run / "model" / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["institutions"] = manifest["institutions"][:1]
    path.write_text(json.dumps(manifest))


def _rollback(run: Path) -> None:
    shutil.rmtree(run / "model")
    shutil.copytree(run / CHECKPOINT, run / "model")


def _trust_edited(run: Path) -> None:
    path = run / "trust.json"
    trust = json.loads(path.read_bytes())
    first = sorted(trust["institutions"])[0]
    trust["institutions"].pop(first)
    path.write_text(json.dumps(trust))


def _resigned(run: Path) -> None:
    """Friendlier weights re-signed by a forger's key, with the forger's trust.json under the
    genuine federation's name (issue 19, item 4)."""
    federation = json.loads((run / "trust.json").read_bytes())["federation"]
    with tempfile.TemporaryDirectory(prefix="attack-forge-") as tmp:
        forge(run / "model", federation, Path(tmp) / "out")
        shutil.rmtree(run / "model")
        shutil.copytree(Path(tmp) / "out" / "model", run / "model")
        shutil.copy(Path(tmp) / "out" / "trust.json", run / "trust.json")


CHECKPOINT = Path("checkpoints") / "round-001"
NEED_CHECKPOINT = {"the weights swapped for round 1's",
                   "round 1's checkpoint copied over the model (rollback)"}  # fmt: skip

# name: (attack, the command that must refuse it: verify, or score for a checkpoint)
ARTIFACT_CASES: dict[str, tuple[Attack, str]] = {
    "a byte of the weights flipped": (_flip("weights.npz"), "verify"),
    "the weights truncated": (_cut("weights.npz"), "verify"),
    "the weights swapped for round 1's": (_swap_weights, "verify"),
    "a byte of the preprocessing flipped": (_flip("preprocessing.json"), "verify"),
    "a byte of the model card flipped": (_flip("model.json"), "verify"),
    "the manifest edited": (_relabel, "verify"),
    "the manifest's signature truncated": (_cut("manifest.sig"), "verify"),
    "the manifest's signature deleted": (_delete("manifest.sig"), "verify"),
    "a signed file deleted": (_delete("preprocessing.json"), "verify"),
    "a FIFO in the weights' place": (_fifo, "verify"),
    "a directory in the weights' place": (_directory, "verify"),
    "a symlink in the weights' place": (_symlink, "verify"),
    "the trust store edited": (_trust_edited, "verify"),
    "re-signed by another key with a matching trust store": (_resigned, "verify"),
    "round 1's checkpoint copied over the model (rollback)": (_rollback, "score"),
}


def _check_artifact(run: Path, name: str, attack: Attack | None, command: str) -> Case:
    with tempfile.TemporaryDirectory(prefix="attack-model-") as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        shutil.copytree(run / "model", copy / "model")
        if (run / CHECKPOINT).is_dir():
            shutil.copytree(run / CHECKPOINT, copy / CHECKPOINT)
        shutil.copy(run / "trust.json", copy / "trust.json")
        if attack is not None:
            attack(copy)
        args = [command, str(copy / "model"), "--trust", str(copy / "trust.json")]
        code, out = _cli(args + (["--sample", "1"] if command == "score" else []))
    return Case(name, _refused(code), code, _last_line(out))


def attack_artifact(run: Path) -> tuple[list[Case], list[Case]]:
    """The untouched run's checks (must pass: verify and score) and every attack's (those
    needing round 1's checkpoint only when the run kept it)."""
    controls = [_check_artifact(run, f"the model as signed ({c})", None, c)
                for c in ("verify", "score")]  # fmt: skip
    checkpoint = (run / CHECKPOINT).is_dir()
    cases = [_check_artifact(run, n, a, c) for n, (a, c) in ARTIFACT_CASES.items()
             if checkpoint or n not in NEED_CHECKPOINT]  # fmt: skip
    return controls, cases
