"""policyd's worker processes: forked over the shared listening sockets, replaced when one dies.

supervise() forks `count` workers, each running `work` (the event loop over the sockets the
parent bound), restarts one that exits unless policyd is stopping, and on SIGTERM or SIGINT
stops them all. Each worker asks the kernel for SIGTERM when the parent dies, so a policyd
killed with -9 leaves no workers behind.

Fails: a worker that raises is logged and replaced; the supervisor itself only stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

from txmail.config import Settings

log = logging.getLogger("txmail.policyd")

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def workers(settings: Settings) -> int:
    return settings.policyd.workers or os.cpu_count() or 1


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM when the parent dies, so that a killed policyd leaves no
    workers behind that would keep answering after the supervisor started a new one."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def supervise(count: int, work: Callable[[], None]) -> None:
    """Run `work` in `count` forked workers until SIGTERM or SIGINT (see the module docstring)."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    parent = os.getpid()

    def fork() -> int:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with(parent)
            code = 0
            try:
                work()
            except BaseException:  # noqa: BLE001 - the parent logs the exit and restarts us
                log.exception("worker %d failed", os.getpid())
                code = 1
            os._exit(code)
        return pid

    children: set[int] = set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        children.add(fork())
    log.info("%d workers", count)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        if not stopping:
            log.warning("worker %d exited (status %d); starting another", pid, status)
            time.sleep(0.5)
            children.add(fork())
