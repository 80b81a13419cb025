"""Risk models, preprocessing, metrics, score scaling and the model artifact.

Bottom layer: depends only on `jointcredit.data` (for the schema) and the ML libraries.
"""
