"""The hypothesis profile of the fuzz suite (tests/fuzz), registered as `txmail-fuzz`.

By default (CI, `make test`) every property runs a moderate, fixed number of examples chosen
deterministically (derandomize), so a run is repeatable and the suite stays around a minute;
nothing is written into the repository. TXMAIL_FUZZ_EXAMPLES=N runs N examples per property
with fresh randomness and keeps failing examples in /tmp/txmail-hypothesis, for long runs:

    TXMAIL_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/fuzz

There is no hypothesis deadline (wall-clock time on a loaded 2-core machine is noise); the
"no input takes over a second" rule is checked per example in CPU time (tests/fuzz/budget.py).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.budget import LONG_RUN, PROFILE

settings.register_profile(
    PROFILE,
    deadline=None,
    derandomize=not LONG_RUN,
    database=DirectoryBasedExampleDatabase("/tmp/txmail-hypothesis") if LONG_RUN else None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)
