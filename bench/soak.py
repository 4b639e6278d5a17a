"""bench/soak: N messages through one whole node while a chaos schedule kills its parts.

The engine lives in txmail_testing/soak.py (tests/e2e/test_soak.py runs it too); its docstring
describes the run, the faults and the table. `--help` lists the options.
"""

from __future__ import annotations

import contextlib
import sys

from txmail_testing.soak import main

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
