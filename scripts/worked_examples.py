"""Write docs/EXAMPLES.md: three worked decisions, each a real request and the service's real
response, from a signed model (default: the README's demo run).

Each applicant is a real loan from the shipped SBA sample's test split, the one whose score is
closest to the case's target, with the context signals the case is about:

1. a retail wholesaler scoring in the low 600s with many small high-frequency transactions;
2. an education-sector applicant around 650 (industry risk);
3. a small manufacturer around 680 whose activity is mostly offline (thin file);

and the first of them again in Chinese.

Usage: python scripts/worked_examples.py [--run runs/demo] [--out docs/EXAMPLES.md]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

ROOT = Path(__file__).resolve().parents[1]

CASES: list[dict[str, Any]] = [
    {
        "title": "A retail wholesaler in the low 600s, declined for its transaction pattern",
        "sectors": ["42"],
        "target": 615,
        "context": {"transactions_30d": 1240, "median_transaction_amount": 18.5,
                    "online_activity_share": 0.9, "recent_lenders_90d": 1},
        "joint": None,
    },
    {
        "title": "An education-sector applicant around 650, declined for industry risk",
        "sectors": ["61"],
        "target": 650,
        "context": {"transactions_30d": 140, "median_transaction_amount": 220.0,
                    "online_activity_share": 0.8, "recent_lenders_90d": 1},
        "joint": None,
    },
    {
        "title": "A small manufacturer around 680, mostly offline: referred for manual review",
        "sectors": ["31", "32", "33"],
        "target": 680,
        "context": {"transactions_30d": 35, "median_transaction_amount": 1450.0,
                    "online_activity_share": 0.12, "recent_lenders_90d": 0},
        "joint": None,
    },
]  # fmt: skip


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def decide_cases(
    client: TestClient, headers: dict[str, str], test: pd.DataFrame, scores: np.ndarray
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(case, request, response) per case: the test-split loan in the case's sectors whose
    score is closest to the case's target, sent with the case's context."""
    out = []
    for n, case in enumerate(CASES, start=1):
        mask = test["sector"].isin(case["sectors"]).to_numpy()
        idx = np.flatnonzero(mask)
        best = int(idx[np.argmin(np.abs(scores[idx] - case["target"]))])
        applicant = {k: _clean(v) for k, v in test.iloc[best].to_dict().items()}
        body: dict[str, Any] = {"applicant": applicant, "context": case["context"],
                                "reference": f"example-{n}"}  # fmt: skip
        r = client.post("/v1/decisions", json=body, headers=headers)
        r.raise_for_status()
        out.append((case, body, r.json()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "EXAMPLES.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    token = new_key(tmp / "keys.json", "bank-a")
    service = load_service(
        args.run / "model",
        args.run / "trust.json",
        api_keys=tmp / "keys.json",
        db_url=f"sqlite:///{tmp / 'audit.sqlite'}",
    )
    client = TestClient(create_app(service))
    headers = {"Authorization": f"Bearer {token}"}
    test = load_federation(DataConfig(dataset="sba")).pooled_test().x
    model = service.decider.model
    scores = model.score(test)
    parts = [
        "# Worked examples\n",
        f"Written by `python scripts/worked_examples.py --run {args.run}` from "
        "the signed model of a default run (`jointcredit simulate` on the shipped sample, as "
        f"`make demo` runs it; model {service.model_info.version[:16]}, policy "
        f"`{service.decider.policy.version}`). Each applicant is a real loan from the shipped "
        "SBA sample's test split, the one scoring closest to the case's target; the requests "
        "and responses below are the service's real ones (decision ids and times differ per "
        "run).\n",
    ]
    decided = decide_cases(client, headers, test, scores)
    for n, (case, body, response) in enumerate(decided, 1):
        parts.append(f"\n## {n}. {case['title']}\n")
        parts.append(
            f"Score {response['score']} (PD {response['probability_of_default']:.1%}); "
            f"decision **{response['decision']}**; first reason: "
            f"{response['reasons'][0]['text']}.\n"
        )
        parts.append("\n`POST /v1/decisions`\n\n```json\n" + json.dumps(body, indent=1) + "\n```\n")
        parts.append("\nResponse\n\n```json\n" + json.dumps(response, indent=1) + "\n```\n")
        print(f"{n}: score {response['score']}, {response['decision']}")
    body = decided[0][1]
    chinese = client.post("/v1/decisions", json={**body, "language": "zh"}, headers=headers)
    chinese.raise_for_status()
    parts.append(
        f"\n## {len(decided) + 1}. The first case in Chinese\n\nThe same request with "
        '`"language": "zh"` (or `Accept-Language: zh-CN`): the same decision, score, codes and '
        "contributions, the texts in Chinese and `language` saying so. Its reasons, policy flags "
        "and language:\n"
    )
    shown = {k: chinese.json()[k] for k in ("decision", "reasons", "policy_flags", "language")}
    parts.append("\n```json\n" + json.dumps(shown, indent=1, ensure_ascii=False) + "\n```\n")
    args.out.write_text("".join(parts), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
