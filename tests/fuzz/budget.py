"""How much the fuzz suite tries, and the per-input CPU budget every target must stay under."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from hypothesis import settings

PROFILE = "txmail-fuzz"
LONG_RUN = int(os.environ.get("TXMAIL_FUZZ_EXAMPLES", "0") or 0)
CPU_SECONDS = 1.0  # no single input may cost more than this

T = TypeVar("T")


def examples(default: int) -> settings:
    """Settings for one property: `default` examples, or TXMAIL_FUZZ_EXAMPLES on a long run."""
    return settings(settings.get_profile(PROFILE), max_examples=LONG_RUN or default)


def within_budget(call: Callable[..., T], *args: object) -> T:
    """`call(*args)`, failing when it took more than CPU_SECONDS of this process's CPU time
    (CPU, not wall-clock time, so a busy neighbour cannot make the check flaky)."""
    started = time.process_time()
    result = call(*args)
    spent = time.process_time() - started
    assert spent < CPU_SECONDS, f"one input took {spent:.2f} s of CPU (limit {CPU_SECONDS} s)"
    return result
