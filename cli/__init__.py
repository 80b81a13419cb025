"""jointcredit cli."""
