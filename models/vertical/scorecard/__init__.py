"""The vertical scorecard (docs/VERTICAL.md): a points table over the label party's and one
feature party's binned features, fitted by one Newton step from contingency tables the label
party gets through homomorphic sums, lossless against the same learner on the joined rows.

- `messages`: what the parties send each other;
- `slots`: a row's label and coarse-bin one-hots packed as counts in one plaintext;
- `feature_party`: the platform's fine bins, label-free aggregates and ciphertext sums;
- `label_party`: the bank's side (`train`); `checks`: its checks of every answer;
- `fit`: classing from counts, the one-step fit, the points table; `central`: the joined
  rows' equivalent.
"""
