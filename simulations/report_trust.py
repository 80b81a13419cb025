"""The validation report's privacy, membership-inference and provenance sections: what
protected the rows, what the audit measured, and who vouches for the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jointcredit.federation.metrics import RunMetrics
from jointcredit.models.artifact import ScoringModel
from jointcredit.models.promotion import read_promotion
from jointcredit.simulations.report_document import Section, Table, fmt
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore


def privacy_sections(m: RunMetrics) -> list[Section]:
    p = m.privacy
    s = Section("Privacy settings and epsilon spent")
    rows = [
        ["setting", p.setting],
        ["epsilon budget", fmt(p.epsilon)],
        ["delta", fmt(p.delta, 8)],
        [
            "epsilon spent",
            fmt(p.epsilon_spent)
            if p.epsilon_spent is not None
            else "- (no differential privacy: unbounded)"
            if p.setting in ("none", "secagg")
            else "-",
        ],
        ["aggregation rule", p.aggregator],
        ["simulated attack", f"{p.attack.kind} {', '.join(p.attack.attackers)}".strip()],
    ]
    rdp, idp, sa = p.record_dp, p.institution_dp, p.secagg
    mechanisms = {
        "record-level DP": rdp and f"{rdp.mechanism}, clip {rdp.max_grad_norm:g}; {rdp.covers}",
        "institution-level DP": idp
        and f"{idp.mechanism} ({idp.clipping} clipping {idp.clipping_norm:g}); {idp.covers}",
        "secure aggregation": sa
        and f"SecAgg+, {sa.num_shares} shares, threshold {sa.reconstruction_threshold}",
        "stopped": p.stopped and f"after round {p.stopped.after_round}: {p.stopped.reason}",
    }
    rows += [[label, text] for label, text in mechanisms.items() if text]
    s.blocks.append(Table(["", "value"], rows))
    if p.epsilon_per_institution:
        s.blocks.append(
            Table(
                ["institution", "epsilon spent"],
                [[i, fmt(e)] for i, e in sorted(p.epsilon_per_institution.items())],
            )
        )
    mia = Section("Membership-inference audit")
    if p.mia is None:
        mia.blocks.append("Not run (the audit needs every row: simulation only).")
    else:
        mia.blocks.append(
            f"Members: {p.mia.members}; non-members: {p.mia.nonmembers}. Headline "
            f"({p.mia.headline}): AUC {fmt(p.mia_auc)}, TPR at 1% FPR {fmt(p.mia_tpr_at_1pct_fpr)} "
            "(0.5 and 0.01: the attacker does no better than chance)."
        )
        cols = sorted({k for a in p.mia.attacks for k in a}, key=lambda k: (k != "attack", k))
        mia.blocks.append(Table(cols, [[fmt(a.get(c)) for c in cols] for a in p.mia.attacks]))
    return [s, mia]


def provenance(
    m: RunMetrics, model: ScoringModel | None, trust: TrustStore | None, model_dir: Path
) -> Section:
    s = Section("Signed provenance")
    if model is None or trust is None:
        s.blocks.append("The model did not verify: no provenance can be vouched for.")
        return s
    man = model.verified.manifest
    s.blocks.append(
        f"Manifest SHA-256 {model.verified.manifest_sha256}, signed by coordinator key "
        f"{model.verified.key_id} of federation `{trust.federation}` (trust store "
        f"{man.get('trust_store_sha256')}). Replies verified: {m.security.verified_replies}; "
        f"rejected: {m.security.rejected_replies} ({fmt(m.security.rejected_by_reason) or 'none'})."
    )
    updates: list[dict[str, Any]] = man.get("updates", [])
    counted: dict[str, int] = {}
    for u in updates:
        for inst in u.get("accepted", {}):
            counted[inst] = counted.get(inst, 0) + 1
    rows = []
    for inst in sorted(set(trust.institutions) | set(counted)):
        entries = trust.institutions.get(inst, [])
        key_ids = ", ".join(e.key_id + (" (revoked)" if e.revoked else "") for e in entries) or "-"
        rows.append([inst, key_ids, str(counted.get(inst, 0))])
    s.blocks.append(Table(["institution", "signing key", "signed updates in the model"], rows))
    if updates:
        s.blocks.append("Each round's aggregated updates, by the institutions that signed them:")
        s.blocks.append(
            Table(
                ["round", "signed updates aggregated"],
                [[str(u.get("round")), ", ".join(sorted(u.get("accepted", {})))] for u in updates],
            )
        )
    try:
        promo = read_promotion(model_dir, trust, model.verified.manifest_sha256)
        s.blocks.append(
            f"Promoted {promo.record.get('promoted_at')} by key {promo.key_id} "
            f"{promo.record.get('promoted_by') or ''} under gates "
            f"{promo.record.get('gates_sha256')}."
        )
    except TrustError as exc:
        s.blocks.append(f"Not promoted: {exc}")
    return s
