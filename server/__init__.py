"""jointcredit server."""
