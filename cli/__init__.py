"""The `jointcredit` command line: thin wiring over the other parts."""
