"""Simulations and research drivers: run the federation, its baselines, and report.

Top layer: may use every other part. Nothing else imports it.
"""
