"""Identities and signatures: institution keys, the federation trust store, signed updates and
signed model artifacts. At the bottom of the stack with `models` and `privacy`; only
`updates` knows Flower's message types, so the eligibility service can verify artifacts
without importing the training code.
"""
