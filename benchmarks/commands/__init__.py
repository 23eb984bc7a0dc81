"""The `python -m benchmarks <command>` implementations: each composes clients, a load policy, a target
and the results writer into one benchmark that writes a run directory. registry.py names them all."""
