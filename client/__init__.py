"""jointcredit client."""
