"""Vertical gradient-boosted trees (SecureBoost-style), lossless: the label party (labels and
its own features) and one or more feature parties (other features of the same aligned rows)
grow the central engine's trees without either handing over its columns.

- `packing`: a row's gradient, hessian and a count in one plaintext (fixed point, offset,
  headroom);
- `cipher`: what the trees need of an additively homomorphic scheme
  (`jointcredit.privacy.paillier` provides it);
- `messages`: what the parties send each other;
- `feature_party`: a feature party's side and its split lookup table;
- `label_party`: the label party's side, growing the trees with the central grower;
- `model`: the label party's part of the ensemble and scoring across parties.
"""
