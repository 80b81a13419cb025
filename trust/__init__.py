"""Identities and signatures: institution keys, the federation trust store, signed updates and
signed model artifacts. At the bottom of the stack with `data` (it imports nothing else of
ours); only `updates` knows Flower's message types, so the eligibility service can verify
artifacts without importing the training code.
"""
