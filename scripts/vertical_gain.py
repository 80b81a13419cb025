"""What the platform's columns buy the bank, on a vertical dataset's shared rows (no
federation: the columns joined in the clear, as a reference for the vertical learners).

    python scripts/vertical_gain.py [sba-vertical|synthetic-vertical] [--seed 0]

scikit-learn's HistGradientBoosting (200 iterations, categories as categories) on the bank's
columns alone and on both parties', trained on 70 % of the shared rows (stratified, fixed
split) and scored on the rest; prints both AUCs and the gain.
"""

from __future__ import annotations

import argparse

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from jointcredit.data.vertical_datasets import VERTICAL_DATASETS, vertical_frames


def auc(frame: pd.DataFrame, columns: list[str], label: str) -> float:
    x = frame[columns].copy()
    for c in x.columns:
        if not pd.api.types.is_numeric_dtype(x[c]):
            x[c] = x[c].astype("category")
    y = frame[label].to_numpy()
    tr, te, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = HistGradientBoostingClassifier(max_iter=200, categorical_features="from_dtype")
    model.fit(tr, ytr)
    return float(roc_auc_score(yte, model.predict_proba(te)[:, 1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=VERTICAL_DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    schema, frames = vertical_frames(args.dataset, seed=args.seed)
    parties = list(frames)
    joined = frames[schema.label_party]
    for party in parties:
        if party != schema.label_party:
            joined = joined.merge(frames[party], on=schema.id)
    own = list(schema.parties[schema.label_party].features)
    both = [f for p in parties for f in schema.parties[p].features]
    alone, together = auc(joined, own, schema.base.label), auc(joined, both, schema.base.label)
    print(f"{args.dataset}: {len(joined):,} shared rows; label party alone AUC {alone:.3f}, "
          f"all parties' columns {together:.3f}, gain {together - alone:+.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
