"""A feature party's (a platform's) side of scoring a vertical applicant: its part of the
model, its own applicants' bin codes, and what it answers a label party's signed query.

For an applicant in its data, with a consent registered for the asking institution, purpose
`vertical` and this applicant (its own consent registry: `jointcredit consent add --db
ITS_DB --institution BANK --purpose vertical ...`), it answers with the side each of its
splits sends the applicant (`SplitTable.sides`) and nothing else: no raw value, no bin, no
threshold; for a vertical scorecard's part, the applicant's coarse code per feature (its fine
bin through the merge map its part holds: the scorecard's attribute, no raw value, no edge,
no fine bin; the bank's part has the points). Otherwise a signed
`consent_required` (checked first: without consent the caller
does not learn whether the applicant is a customer), `not_found` or `other_model` answer,
which the bank can tell apart from a failure. Every verified query, whatever its answer, is
appended to the platform's hash-chained audit log before the answer leaves
(service/audit.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.data.errors import DataValidationError
from jointcredit.data.files import DEFAULT_MAX_FILE_MB, read_chunks
from jointcredit.data.vertical import validate_party
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.models.artifact import ArtifactError
from jointcredit.models.vertical.artifact import FeaturePart, load_feature_part, part_directory
from jointcredit.models.vertical.merge_maps import MAX_FEATURES
from jointcredit.service.audit import AuditLog, Entry
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.fields import text
from jointcredit.service.records import VERTICAL_QUERY
from jointcredit.trust.files import UnsafeFile, read_regular
from jointcredit.trust.store import TrustStore

SIDES_PATH = "/v1/vertical/sides"
MAX_SIDES_BODY = 4 * 2**10  # an applicant id, a consent id, a model id
MAX_CODES = MAX_FEATURES  # a scorecard part's features, the codes it answers


class SidesRequest(BaseModel):
    """The label party's question: how does this applicant route through your splits?"""

    model_config = ConfigDict(extra="forbid", frozen=True)
    applicant_id: text(128, min_length=1)  # type: ignore[valid-type]
    consent_id: text(64, min_length=1) | None = None  # type: ignore[valid-type]
    model: str = Field(pattern=r"^[0-9a-f]{64}$", description="the vertical model's id")


class SidesAnswer(BaseModel):
    """`found`: `sides` holds, per split id, 'L' (left) or 'R'; otherwise why not."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["found", "not_found", "consent_required", "other_model", "not_label_party"]
    party: str
    model: str
    sides: str | None = Field(None, pattern=r"^[LR]*$")
    # A vertical scorecard's: the applicant's coarse code (attribute) per feature of the
    # party's part (no raw value, no edge, no fine bin), which the bank's points score.
    codes: list[int] | None = Field(None, max_length=MAX_CODES)
    consent_problem: str | None = None


@dataclass(frozen=True)
class ServedPart:
    """The feature party's verified part of a vertical model (models/vertical/artifact.py)
    and the model's id as both sides know it: the SHA-256 of this part's signed manifest,
    which the label party's signed card records."""

    part: FeaturePart
    model_id: str

    @classmethod
    def load(cls, model_dir: Path, party: str, trust: TrustStore) -> ServedPart:
        """Verify and load `model_dir/parties/<party>/` (signed by an active key of `party`).
        The digest is read first and then required of the verified manifest, so the id and
        the part loaded are the same bytes."""
        try:
            manifest = read_regular(part_directory(model_dir, party) / "manifest.json")
        except (FileNotFoundError, UnsafeFile) as exc:
            raise ArtifactError(f"{model_dir}: no signed part of {party}: {exc}") from exc
        digest = hashlib.sha256(manifest).hexdigest()
        part = load_feature_part(model_dir, party, trust, expected_sha256=digest)
        if part.model == "scorecard" and len(part.bins.names) > MAX_CODES:
            raise ArtifactError(f"{model_dir}: more than {MAX_CODES} features to answer codes of")
        return cls(part, digest)


@dataclass(frozen=True)
class Applicants:
    """The platform's own applicants: identifier -> row; their bin codes (a scorecard's part:
    coarse codes), and the side of every split for every applicant, worked out once at
    start-up (one bit each), so that a query costs a lookup."""

    rows: dict[str, int]
    codes: np.ndarray  # (applicants, its features); a scorecard's part: coarse, int64
    packed: np.ndarray  # (applicants, ceil(splits / 8)) uint8: 1 = left
    splits: int

    @classmethod
    def load(
        cls, path: Path, served: ServedPart, schema: VerticalSchema, *,
        max_mb: int = DEFAULT_MAX_FILE_MB,
    ) -> Applicants:  # fmt: skip
        """Read and validate its data file (the schema's id column and the party's
        features), then code it with the part's bins."""
        party = served.part.party
        if party not in schema.parties:
            raise DataValidationError(f"the schema has no [parties.{party}]", source=str(path))
        label = served.part.label_party
        if label is not None and label != schema.label_party:
            raise DataValidationError(
                f"the model was trained for label party {label!r}, the schema names "
                f"{schema.label_party!r}",
                source=str(path),
            )
        data = validate_party(read_chunks(path, max_mb=max_mb), schema, party, source=str(path))
        missing = [f for f in served.part.bins.names if f not in data.frame.columns]
        if missing:
            raise DataValidationError(
                f"the model's features {missing} are not the schema's {party} features",
                source=str(path),
            )
        ids = [str(i) for i in data.ids.tolist()]
        frame = data.frame[served.part.bins.names]
        part = served.part
        codes = part.coarse(frame) if part.model == "scorecard" else part.bins.codes(frame)
        table = part.table
        packed = np.concatenate(
            [
                np.packbits(table.sides(codes[i : i + _CHUNK].astype(np.int64)), axis=1)
                for i in range(0, len(codes), _CHUNK)
            ]
        )
        return cls({i: k for k, i in enumerate(ids)}, codes, packed, len(table))

    def sides(self, row: int) -> np.ndarray:
        out: np.ndarray = np.unpackbits(self.packed[row], count=self.splits).astype(bool)
        return out


_CHUNK = 65_536  # applicants coded into sides at a time


class FeaturePartyEndpoint:
    """Answers verified queries for one feature party."""

    def __init__(self, served: ServedPart, applicants: Applicants, audit: AuditLog) -> None:
        self.served = served
        self.applicants = applicants
        self.audit = audit
        self.consents = ConsentRegistry(audit)

    def answer(self, caller: str, request: SidesRequest) -> tuple[int, SidesAnswer]:
        """(HTTP status, answer) for a verified query by `caller`. Consent is checked first,
        so that a caller without it does not learn whether the applicant is a customer."""
        base: dict[str, Any] = {"party": self.served.part.party, "model": self.served.model_id}
        # Another member of the federation (a second platform) is no label party of this model:
        # its routing is the bank's alone, consent or not, and so is the model id (checked
        # after this). Parts written before: not recorded.
        label = self.served.part.label_party
        if label is not None and caller != label:
            return 403, SidesAnswer(status="not_label_party", **base)
        if request.model != self.served.model_id:
            return 409, SidesAnswer(status="other_model", **base)
        (problem,) = self.consents.problems(
            caller, [(request.consent_id, request.applicant_id)], "vertical"
        )
        if problem is not None:
            return 403, SidesAnswer(status="consent_required", consent_problem=problem, **base)
        row = self.applicants.rows.get(request.applicant_id)
        if row is None:
            return 404, SidesAnswer(status="not_found", **base)
        if self.served.part.model == "scorecard":  # its coarse codes: the bank has the points
            codes = [int(c) for c in self.applicants.codes[row]]
            return 200, SidesAnswer(status="found", codes=codes, **base)
        sides = self.applicants.sides(row)
        return 200, SidesAnswer(status="found", sides="".join("L" if s else "R" for s in sides),
                                **base)  # fmt: skip

    def handle(
        self, caller: str, key_id: str, nonce: str, request: SidesRequest
    ) -> tuple[int, SidesAnswer]:
        """Answer, and chain the query with its answer before the answer leaves."""
        status, answer = self.answer(caller, request)
        self.record(caller, key_id, nonce, request, status, answer)
        return status, answer

    def record(self, caller: str, key_id: str, nonce: str, request: SidesRequest,
               status: int, answer: SidesAnswer) -> None:  # fmt: skip
        """Chain the query and what was answered (not the sides or codes: a digest of them)."""
        given = answer.sides if answer.codes is None else ",".join(map(str, answer.codes))
        sides = None if given is None else hashlib.sha256(given.encode()).hexdigest()
        payload = {
            "applicant_id": request.applicant_id, "consent_id": request.consent_id,
            "model": request.model, "key_id": key_id, "http_status": status,
            "status": answer.status, "consent_problem": answer.consent_problem,
            "sides_sha256": sides,
        }  # fmt: skip
        self.audit.append([Entry(VERTICAL_QUERY, nonce, caller, payload)])
