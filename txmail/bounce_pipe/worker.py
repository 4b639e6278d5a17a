"""python -m txmail.bounce_pipe.worker: one parser of returned mail, with no secret.

`txmail bounces serve` (server.py) runs as root: it holds the bounce key and the Redis
connection, and never parses a returned mail itself. It starts a few of these workers as the
unprivileged settings.user, with limits on CPU seconds and address space, and hands each one
raw mail to parse. A worker holds no signing key and no Redis connection, and its user can read
neither the key files nor the Redis socket, so a parser bug exploited by hostile mail reaches
no key and no Redis: only the mails this worker is given, from then until it retires, and the
network (DNS, which DKIM verification of complaints needs). See Trust below.

Protocol (stdin/stdout, binary): every frame is b"LENGTH\\n" and LENGTH bytes.
    first frame in:  the settings as JSON (config.to_dict, without the [redis] table);
    then per mail:   in: the raw mail;  out: JSON {"report": dataclasses.asdict(BounceReport)}
                     (bytes as base64), its headers_only field the RET=HDRS form of the
                     mail (forward.headers_only, b"" when that is the mail itself), so the
                     server never takes the mail apart; or {"error": "why", "temporary":
                     false} when the parser raised on the mail (a bug meeting this mail:
                     every retry would fail alike), "temporary": true when it met trouble
                     that may pass (txmail.errors.TemporaryFailure: a DNS lookup of the
                     DKIM check of a complaint that timed out); with "retiring": true when
                     the worker exits after this answer (after `MAX_MAILS` mails, or when
                     its CPU time nears its hard limit), so the server replaces it in time.
The worker exits 0 at end of input.

    python -I -m txmail.bounce_pipe.worker CPU_PER_MAIL CPU_LIFETIME ADDRESS_SPACE_BYTES

Started: by command() and process_options() here, as the server starts each worker and as
`txmail up` (server.check_interpreter) tries one before it starts anything: the uid of
settings.user, group nogroup, no supplementary group, cwd /, a bare environment. A worker
given no mail (end of input after nothing) loads the parser and exits 0.

Limits: first thing, before it imports the parser or reads a byte, the worker sets hard
limits it can never raise again: RLIMIT_AS (address space), RLIMIT_CPU (CPU seconds of its
life), no core file, and RLIMIT_NPROC 0 (it cannot start a process). Before each
mail it lowers its soft RLIMIT_CPU to the CPU it has used plus the per-mail budget: the
kernel ends it with SIGXCPU past that. (The server does not set them in a preexec_fn: that
is unsafe in its threaded process.) The server also gives each mail a wall-clock timeout,
after which it kills the worker.

Trust: a worker parses mail of every account for up to MAX_MAILS mails, so a parser bug
exploited by one mail outlives it: the exploited worker goes on parsing the mails that follow,
until it retires. It can misreport the outcome of each of them, each lie bounded by that
mail's token (the one recipient of its queue file; other outcomes are untrusted and capped),
and, having network access for DNS, it could send those mails elsewhere. It cannot vouch for
a complaint: the server believes a report of a complaint, or of DKIM signatures (which can
make a complaint a feedback loop's), only from a worker that parsed no mail before, and
retires every worker that sent one. Nor can it change the headers of a forwarded RET=HDRS
cut: the server ignores a cut that is longer than the mail or does not start with the mail's
header block, and kills the worker that sent it (server.py).

Logs: tracebacks of parser bugs on standard error (the server's log).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import grp
import json
import pwd
import resource
import sys
import types
import typing
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from txmail.config import BouncePipeSettings

MAX_FRAME = 64 * 1024 * 1024  # larger than bounce_pipe.max_message_bytes could sensibly be
# Then a fresh process: whatever one mail left behind does not accumulate, and a worker a mail
# exploited sees at most MAX_MAILS - 1 later mails. A start costs ~320 ms of CPU (the parser's
# imports): ~3 ms a mail at 100, against ~1 ms to parse one and ~58 ms a returned mail costs
# in all (README, bench/bounce_pipe.py); 2,000 exposed 20 times as many mails to one exploit.
MAX_MAILS = 100
LIFETIME_CPU = 600  # CPU seconds of one worker's life (its hard RLIMIT_CPU); then a new one


def nogroup() -> int:
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534


def command(python: str, pipe: BouncePipeSettings) -> list[str]:
    """The argv of one worker run by `python` with the limits of `pipe`."""
    return [
        python,
        "-I",
        "-m",
        "txmail.bounce_pipe.worker",
        str(pipe.parser_cpu_seconds),
        str(LIFETIME_CPU),
        str(pipe.parser_memory_mb * 1024 * 1024),
    ]


def process_options(user: str | None) -> dict[str, Any]:
    """The subprocess.Popen arguments a worker is started with: as `user` (None: as this
    process), but with group nogroup and no supplementary group, so the files of group
    settings.user (the configuration, which may hold the Redis password; the recorder's
    socket folder) are the pipe's, not the parser's. Popen switches in C after fork: a
    preexec_fn is unsafe in the threaded server."""
    ids: dict[str, Any] = {}
    if user is not None:
        ids = {"user": pwd.getpwnam(user).pw_uid, "group": nogroup(), "extra_groups": []}
    return {
        "cwd": "/",
        "close_fds": True,
        "umask": 0o077,
        "env": {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"},
        **ids,
    }


class FrameError(Exception):
    """The bytes on the stream are not a frame, or not an answer."""


class ErrorAnswer(Exception):
    """The worker answered an error for a mail instead of a report."""

    def __init__(self, why: str, temporary: bool, retiring: bool) -> None:
        super().__init__(why)
        self.temporary = temporary
        self.retiring = retiring


def frame(payload: bytes) -> bytes:
    return b"%d\n" % len(payload) + payload


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(frame(payload))
    stream.flush()


def read_frame(stream: IO[bytes], limit: int = MAX_FRAME) -> bytes | None:
    """One frame's payload; None at a clean end of input."""
    line = stream.readline(32)
    if not line:
        return None
    if not line.endswith(b"\n") or not line[:-1].isdigit() or int(line) > limit:
        raise FrameError(f"not a frame header: {line[:32]!r}")
    size = int(line)
    payload = stream.read(size)
    if len(payload) != size:
        raise FrameError(f"frame ended after {len(payload)} of {size} bytes")
    return payload


def from_fields(cls: type, values: dict[str, Any]) -> Any:
    """The dataclass `cls` rebuilt from dataclasses.asdict() output, nested dataclasses and
    tuples included. Fields the worker sent that `cls` lacks are ignored (a worker started
    before an upgrade), fields it lacks keep their defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _value(hints.get(f.name, Any), values[f.name])
    return cls(**kwargs)


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if hint is bytes and isinstance(value, str):
        return base64.b64decode(value, validate=True)  # as _json() sent it
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_fields(hint, value)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        item = args[0] if args else Any
        items = [_value(item, v) for v in value]
        return items if origin is list else origin(items)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _value(args[1], v) for k, v in value.items()}
    return value


def read_answer(payload: bytes) -> tuple[Any, bool]:
    """(the BounceReport a worker sent, whether it exits now); ErrorAnswer when it answered
    an error, FrameError when it sent anything but an answer."""
    from txmail.bounce_pipe.parse import BounceReport

    try:
        answer = json.loads(payload)
    except ValueError as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise FrameError(f"not an answer: {str(answer)[:60]}")
    retiring = answer.get("retiring") is True
    if isinstance(answer.get("report"), dict):
        try:
            return from_fields(BounceReport, answer["report"]), retiring
        except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise FrameError(f"not a report: {exc.__class__.__name__}: {str(exc)[:200]}") from None
    if "error" in answer:
        raise ErrorAnswer(
            f"the parser failed: {str(answer['error'])[:300]}",
            temporary=answer.get("temporary") is True,
            retiring=retiring,
        )
    raise FrameError(f"neither report nor error: {sorted(answer)[:5]}")


def _json(value: Any) -> Any:
    """json.dumps default: bytes as base64 (headers_only), sets as lists."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return list(value)


def _headers_only(raw: bytes) -> bytes:
    """forward.headers_only(raw), b"" when that is the mail itself. The stdlib parser may
    fail on hostile mail where the bounce parser did not: the mail is then forwarded as it
    came (what headers_only does for the failures it knows), and the report still counts."""
    from txmail.bounce_pipe.forward import headers_only

    try:
        cut = headers_only(raw)
    except Exception:  # noqa: BLE001 - a stdlib bug meeting this mail costs the cut only
        import traceback

        traceback.print_exc(file=sys.stderr)
        return b""
    return b"" if cut == raw else cut


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _answer(settings: Any, raw: bytes, read_report: Any) -> dict[str, Any]:
    """The answer about one mail: a report, or an error that says whether it may pass."""
    from txmail.errors import TemporaryFailure

    try:
        report = read_report(settings, raw)
        report.headers_only = _headers_only(raw)
        return {"report": dataclasses.asdict(report)}
    except TemporaryFailure as exc:  # trouble that may pass: Postfix brings it again
        return {"error": f"{exc.__class__.__name__}: {str(exc)[:200]}", "temporary": True}
    except Exception as exc:  # noqa: BLE001 - a parser bug costs this mail, not the worker
        import traceback

        traceback.print_exc(file=sys.stderr)
        return {"error": f"{exc.__class__.__name__}: {str(exc)[:200]}", "temporary": False}


def _encode(answer: dict[str, Any]) -> bytes:
    """The answer as JSON; a report JSON cannot carry (or memory running out on the way) is
    an error about this mail, never an exit, which the server would take for trouble that
    may pass and answer 75 on every retry."""
    try:
        return json.dumps(answer, default=_json).encode()
    except Exception as exc:  # noqa: BLE001 - see above
        why = f"the report could not be sent: {exc.__class__.__name__}: {str(exc)[:200]}"
        return json.dumps(
            {"error": why, "temporary": False, "retiring": answer.get("retiring", False)}
        ).encode()


def serve(stdin: IO[bytes], stdout: IO[bytes], mail_cpu_seconds: int) -> int:
    from txmail import config
    from txmail.bounce_pipe.report import read_report  # the ~320 ms this process exists to pay once

    first = read_frame(stdin)
    if first is None:
        return 0
    settings = config.from_dict(json.loads(first))
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    for count in range(1, MAX_MAILS + 1):
        raw = read_frame(stdin)
        if raw is None:
            return 0
        used = _cpu_used()
        if hard != resource.RLIM_INFINITY:
            resource.setrlimit(
                resource.RLIMIT_CPU, (min(int(used) + 1 + mail_cpu_seconds, hard), hard)
            )
        answer = _answer(settings, raw, read_report)
        # Retire while the next mail could not finish within the lifetime budget.
        retiring = count == MAX_MAILS or (
            hard != resource.RLIM_INFINITY and _cpu_used() + mail_cpu_seconds + 1 > hard
        )
        if retiring:
            answer["retiring"] = True
        write_frame(stdout, _encode(answer))
        if retiring:
            return 0
    return 0


def main(argv: list[str]) -> int:
    """argv: CPU seconds a mail, CPU seconds a lifetime, bytes of address space."""
    mail_cpu, lifetime_cpu, memory = (int(a) for a in argv[:3])
    # Before any import or mail: the hard limits this process can never raise again.
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (lifetime_cpu, lifetime_cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no child process, ever
    return serve(sys.stdin.buffer, sys.stdout.buffer, mail_cpu)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
