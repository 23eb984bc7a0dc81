import sys

from export.tf_startup import quiet_tensorflow_startup

quiet_tensorflow_startup(verbose="--verbose" in sys.argv)
from export.cli import main  # noqa: E402 (after the start-up mode is set)

sys.exit(main())
