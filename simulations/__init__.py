"""jointcredit simulations."""
