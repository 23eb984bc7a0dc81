"""`python -m benchmarks tune`: search space, rate search, launchers, the tuning loop and its output files."""
