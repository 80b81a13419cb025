"""The joint-credit eligibility service: decisions with reasons, joint limits, audit.

Uses `models` (scoring a verified artifact) and `trust` (verification) only, never the training
code: what serves borrowers cannot be changed by what trains models.
"""
