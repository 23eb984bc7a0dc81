"""`python -m benchmarks.reliability` = `python -m benchmarks reliability`."""
import sys

from benchmarks.__main__ import main

raise SystemExit(main(["reliability", *sys.argv[1:]]))
