"""Deployment across partner machines: provisioning kits and the Flower processes."""
