"""Institution datasets: the shipped SBA lenders, synthetic institutions, bring-your-own.

Bottom layer: depends on nothing else in jointcredit. Every loader returns the same
`InstitutionData` shape (train and test `Split`s), validated against a `Schema`, so the
client, the server's simulation-only central evaluation and the baselines all see identical
rows.
"""
