"""Re-measure the SBA facts docs/DATA.md states (needs `make sba-full`).

    python scripts/sba_leakage_check.py

Prints: pre-1989 loans and their charge-off rate among the 20 largest lenders; how often `Term`
is not a multiple of 12 months for charged-off vs paid loans; pooled AUC of a logistic
regression (on the federated preprocessing) and of scikit-learn's HistGradientBoosting without
the approval year (the shipped features) and with it as a category (the hindsight vintage,
`--hindsight-vintage`), on the random split and out of time (`--split time`).
"""

from __future__ import annotations

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from jointcredit.data import sba
from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.schema import Schema
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import agree, summarize


def raw_facts() -> None:
    cols = ["Bank", "Term", "MIS_Status", "ApprovalFY"]
    raw = pd.read_csv(sba.full_csv_path(), usecols=cols, dtype=str)
    label = raw["MIS_Status"].str.replace(" ", "").str.upper().map({"CHGOFF": 1, "PIF": 0})
    raw, label = raw[label.notna()], label[label.notna()]
    top = raw["Bank"].isin(raw["Bank"].value_counts().index[:20])
    raw, label = raw[top], label[top]
    year = pd.to_numeric(raw["ApprovalFY"].str.extract(r"(\d{4})", expand=False))
    old = year < sba.MIN_APPROVAL_FY
    print(f"pre-{sba.MIN_APPROVAL_FY} loans: {int(old.sum())}, charged off {label[old].mean():.3f}")
    odd = pd.to_numeric(raw["Term"]) % 12 != 0
    print(
        f"Term not a multiple of 12: charged off {odd[label == 1].mean():.3f}, "
        f"paid {odd[label == 0].mean():.3f}"
    )


def _categories(x: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    cats = {n: x[n].astype("category") for n, f in schema.features.items() if f.type != "numeric"}
    return x.assign(**cats)


def vintage_auc() -> None:
    for split in ("random", "time"):
        for hindsight in (False, True):
            config = DataConfig(dataset="sba-full", split=split, hindsight_vintage=hindsight)
            fed = load_federation(config)
            train, test = fed.pooled_train(), fed.pooled_test()
            summary = summarize(train.x, train.y, fed.schema, max_categories=64, min_count=5)
            spec = agree([summary], fed.schema, max_categories=64, min_count=5)
            model = LogisticRegression(max_iter=300).fit(spec.transform(train.x), train.y)
            auc = risk_metrics(test.y, model.predict_proba(spec.transform(test.x))[:, 1]).auc
            trees = HistGradientBoostingClassifier(categorical_features="from_dtype")
            trees.set_params(random_state=0).fit(_categories(train.x, fed.schema), train.y)
            pd_trees = trees.predict_proba(_categories(test.x, fed.schema))[:, 1]
            vintage = "with the vintage (hindsight)" if hindsight else "without the vintage"
            print(
                f"{split} split, {vintage}: pooled logistic AUC {auc:.3f}, "
                f"HistGradientBoosting {risk_metrics(test.y, pd_trees).auc:.3f}"
            )


if __name__ == "__main__":
    raw_facts()
    vintage_auc()
