"""`python -m minillama.metrics REFS OUT [--no_java]`: the official E2E scores of OUT.
The command line lives in cli.py, the only reader of flags; this file only starts it."""
import sys

from ..cli import metrics_main

sys.exit(metrics_main())
