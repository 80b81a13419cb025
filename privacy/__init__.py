"""jointcredit privacy."""
