"""``python -m guardrail.cli``: the `guardrail` command, run as a module (as the tests and benchmarks do)."""

import sys

from guardrail.cli import main

sys.exit(main())
