"""`python -m benchmarks.reliability` = `python -m benchmarks reliability`."""
from benchmarks.reliability.cli import main

raise SystemExit(main())
