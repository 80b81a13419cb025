"""Risk models, preprocessing, metrics, score scaling and the model artifact.

Depends on `jointcredit.data` (the schema), `jointcredit.trust` (signed artifacts),
`jointcredit.federation` (the run settings, the metrics schema) and the ML libraries. The model
families live in `learners`, one module each.
"""
