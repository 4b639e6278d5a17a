"""soak: N messages through one whole node while a chaos schedule kills its parts.

SYNOPSIS
    .venv/bin/python bench/soak.py [--messages 20000] [--faults LIST|COUNT] [--concurrency 8]
                                   [--accounts 4] [--seed N] [--receiver-down 25]
                                   [--drain-timeout 900] [--appendfsync always|everysec]
                                   [--keep-state]

DESCRIPTION
    Starts one txmail node (txmail_testing.harness Stack: real Postfix, Dovecot, Redis, milter,
    policy daemon, bounce pipe, maillog follower and webhooks dispatcher), an SMTP sink standing
    in for the internet and a webhook receiver, then sends N one-recipient messages as several
    accounts over authenticated submission (port 587, STARTTLS, AUTH PLAIN) from several client
    threads. Each message's outcome is decided up front by its recipient's local part, and the
    events it must produce follow from the event contract (DESIGN.md "Events", README "Events
    and webhooks"): exactly one event per (message, recipient, kind):

      ok-*       the sink accepts                          delivery
      reject-*   the sink answers 550 5.1.1 at RCPT        bounce (hard: status 5.x.x)
      flaky-*    the sink answers 450 once, then accepts   soft_bounce, delivery
      later-*    accepted, then an RFC 3464 DSN (5.1.1)    delivery, bounce
                 is mailed back to port 25
      grumpy-*   accepted, then an ARF abuse report is     delivery, complaint
                 mailed back to port 25

    Meanwhile a chaos thread works through the fault schedule: `kill -9` of the milter, the
    policy daemon, the maillog follower, the webhooks dispatcher or Redis (the supervisor,
    `txmail up`, restarts each), and `receiver`: the webhook endpoint down (connections refused)
    for --receiver-down seconds. A fault without a time is fired when its share of the messages
    has been accepted (spread evenly over the sending); NAME@SECONDS fires it at that many
    seconds after the start. --faults N takes the first N of the default order.

    Clients behave as an application should: a 4xx (a temporary refusal during a fault) or a
    dropped connection is retried after a short backoff and counted; a 5xx is not retried and is
    a failure, since the design refuses permanently only for the sender's own faults. The remote
    side retries 4xx replies to its DSNs and reports the same way. The soak flushes Postfix's
    deferred queue every --flush-every seconds (the 450-once recipients, and bounces the pipe
    could not record while Redis was down, exit 75) instead of waiting for Postfix's 5-minute
    retry schedule.

    After the sending it waits (up to --drain-timeout seconds) until Postfix's queue is empty,
    every DSN and report went back, the event streams are drained and every expected event has
    arrived, then a few seconds more for late duplicates, and prints the table: accepted,
    refusals by code (4xx retried / 5xx), delivered, bounced, deferred, complaints, events
    expected against received (unique ids, per kind), duplicates (an event id posted more than
    once: allowed by at-least-once, reported), lost (expected, never received), unexpected
    (received, never expected), wrong (a (queue id, recipient, kind) with several ids, a bounce
    that is not hard), and the faults with their times.

EXIT STATUS
    0 when nothing was lost, nothing unexpected arrived, no message's events were wrong and no
    client saw an unexpected 5xx; 1 otherwise.

    bench/soak.py is its command line; the engine (Soak, run_soak) is also what
    tests/e2e/test_soak.py runs with 1,000 messages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import smtplib
import ssl
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txmail.events import WEBHOOK_GROUP
from txmail.store import Keys
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message
from txmail_testing.webhook_receiver import WebhookReceiver

# Outcome -> (the recipient's local-part prefix, the events it must produce).
OUTCOMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "delivered": ("ok", ("delivery",)),
    "rejected": ("reject", ("bounce",)),
    "deferred": ("flaky", ("soft_bounce", "delivery")),
    "dsn": ("later", ("delivery", "bounce")),
    "complaint": ("grumpy", ("delivery", "complaint")),
}
MIX = {"delivered": 50, "rejected": 15, "deferred": 10, "dsn": 15, "complaint": 10}
COMPONENTS = ("milter", "policyd", "maillog", "webhooks", "redis")
DEFAULT_FAULTS = ("milter", "policyd", "maillog", "webhooks", "redis", "receiver")
# Every limit off and the reputation guard out of reach: the soak sends a fifth of its mail
# to bouncing recipients and a tenth to complaining ones, on purpose.
ACCOUNT_SETTINGS = (
    "messages_per_minute=0",
    "messages_per_hour=0",
    "messages_per_day=0",
    "recipients_per_minute=0",
    "recipients_per_hour=0",
    "recipients_per_day=0",
    "bytes_per_day=0",
    "warmup=false",
    "max_bounce_rate=100",
    "max_complaint_rate=100",
)
SESSION_MESSAGES = 50  # messages one client sends over one SMTP session


@dataclass
class Message:
    number: int
    account: str
    outcome: str
    recipient: str
    queue_id: str = ""
    refused: str = ""  # the 5xx reply that ended it, if one did
    ambiguous: int = 0  # connections lost after the data was sent (may have been queued)


@dataclass
class Fault:
    name: str
    at: float | None = None  # seconds after the start; None: by progress
    fired_at: float = 0.0
    back_at: float = 0.0
    detail: str = ""


@dataclass
class Tally:
    """What the webhook receiver got, read incrementally from its posts."""

    posts_read: int = 0
    posts: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)  # event id -> times posted
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> first seen
    ids_of: dict[tuple[str, str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # (queue id, recipient, kind) -> ids

    def read(self, receiver: WebhookReceiver) -> None:
        with receiver.lock:
            new = receiver.posts[self.posts_read :]
            self.posts_read += len(new)
        for _headers, body, _at in new:
            self.posts += 1
            for event in json.loads(body)["events"]:
                event_id = event["id"]
                self.deliveries[event_id] += 1
                if event_id not in self.events:
                    self.events[event_id] = event
                    self.ids_of[
                        (event.get("message_id", ""), event.get("recipient", ""), event["kind"])
                    ].add(event_id)


@dataclass
class Report:
    messages: int
    duration: float = 0.0
    send_duration: float = 0.0
    accepted: int = 0
    retried: Counter[str] = field(default_factory=Counter)  # 4xx reply (code) -> retries
    refused: Counter[str] = field(default_factory=Counter)  # 5xx reply -> messages
    dropped: int = 0  # connections lost or timed out (retried)
    ambiguous: int = 0
    returns_retried: Counter[str] = field(default_factory=Counter)
    returns_failed: list[str] = field(default_factory=list)
    delivered: int = 0
    bounced_at_sink: int = 0
    deferred_at_sink: int = 0
    dsns: int = 0
    complaints: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # soft_bounce events of recipients the sink never defers: a delivery Postfix put off
    # itself while a fault was on (a lookup through the socketmap while Redis was down), a
    # true event, so listed with its diagnostic but no failure
    fault_deferrals: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    queue_empty: bool = False
    waiting_events: int = 0
    dead_letters: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.unexpected or self.wrong or self.refused or self.returns_failed
        )


def parse_faults(spec: str) -> list[Fault]:
    """`milter,redis@40,receiver` or a count of the default order."""
    if spec.strip().isdigit():
        count = int(spec)
        return [Fault(DEFAULT_FAULTS[i % len(DEFAULT_FAULTS)]) for i in range(count)]
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, at = item.partition("@")
        if name not in (*COMPONENTS, "receiver"):
            raise argparse.ArgumentTypeError(
                f"unknown fault {name!r}; choose from {', '.join((*COMPONENTS, 'receiver'))}"
            )
        try:
            faults.append(Fault(name, float(at) if at else None))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: the time after @ is in seconds") from None
    return faults


def component_pid(stack: Stack, name: str) -> int:
    """The pid of the stack's component `name`: a child of this stack's supervisor (so no
    other node's process can match) whose command line names it; 0 when none runs."""
    assert stack.proc is not None
    wanted = {"webhooks": [b"webhooks", b"run"]}.get(name, [name.encode()])
    config = str(stack.config.resolve()).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != stack.proc.pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except (OSError, ValueError, IndexError):
            continue
        if name == "redis" and argv and argv[0].startswith(b"redis-server"):
            return int(entry.name)
        if config in argv and argv[argv.index(config) + 1 :] == wanted:
            return int(entry.name)
    return 0


class Remote:
    """The internet: the sink's verdicts, and the DSNs and reports mailed back later."""

    def __init__(self, outcome_of: Callable[[str], str | None]) -> None:
        self.outcome_of = outcome_of
        self.deferred_once: set[str] = set()
        self.sink = Sink(verdict=self.verdict)
        self.returns: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.returned: set[str] = set()
        self.scanned = 0
        self.pending = 0
        self.lock = threading.Lock()

    def verdict(self, address: str) -> str | None:
        outcome = self.outcome_of(address)
        if outcome == "rejected":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if outcome == "deferred" and address not in self.deferred_once:
            self.deferred_once.add(address)  # the sink's one event-loop thread calls this
            return f"450 4.2.0 <{address}>: Mailbox busy, try later"
        return None

    def scan(self) -> None:
        """Queue a DSN or a report for each newly delivered later-*/grumpy-* recipient."""
        messages = self.sink.messages
        new, self.scanned = messages[self.scanned :], len(messages)
        for message in new:
            for rcpt in message.recipients:
                outcome = self.outcome_of(rcpt)
                if outcome in ("dsn", "complaint") and rcpt not in self.returned:
                    self.returned.add(rcpt)
                    with self.lock:
                        self.pending += 1
                    self.returns.put((rcpt, message))


class Soak:
    def __init__(
        self,
        messages: int = 20000,
        faults: list[Fault] | None = None,
        concurrency: int = 8,
        accounts: int = 4,
        seed: int = 1,
        receiver_down: float = 25.0,
        drain_timeout: float = 900.0,
        flush_every: float = 15.0,
        out: Callable[[str], None] = print,
        appendfsync: str = "always",
    ) -> None:
        self.count = messages
        self.appendfsync = appendfsync  # redis.appendfsync of the node's private Redis
        self.faults = list(faults) if faults is not None else [Fault(n) for n in DEFAULT_FAULTS]
        self.concurrency = concurrency
        self.account_names = [f"soak{n}" for n in range(accounts)]
        self.random = random.Random(seed)
        self.run_id = f"{seed:x}{os.getpid():x}"
        self.receiver_down = receiver_down
        self.drain_timeout = drain_timeout
        self.flush_every = flush_every
        self.out = out
        self.passwords: dict[str, str] = {}
        self.messages = self._plan()
        self.by_recipient = {m.recipient: m for m in self.messages}
        self.report = Report(messages=messages, faults=self.faults)
        self.lock = threading.Lock()
        self.sent_done = threading.Event()
        self.stopping = threading.Event()
        self.started = 0.0
        self.remote = Remote(self.outcome_of)
        self.receiver = WebhookReceiver()
        self.tally = Tally()
        self.stack: Stack | None = None

    # -- the plan ------------------------------------------------------------------------

    def _plan(self) -> list[Message]:
        outcomes = [o for o, weight in MIX.items() for _ in range(weight)]
        plan = []
        for n in range(self.count):
            outcome = self.random.choice(outcomes)
            prefix = OUTCOMES[outcome][0]
            account = self.account_names[n % len(self.account_names)]
            plan.append(
                Message(n, account, outcome, f"{prefix}-{n}-{self.run_id}@dest{n % 7}.example")
            )
        return plan

    def outcome_of(self, address: str) -> str | None:
        message = self.by_recipient.get(address.lower())
        return message.outcome if message else None

    # -- sending -------------------------------------------------------------------------

    def _session(self, account: str) -> smtplib.SMTP:
        assert self.stack is not None
        return self.stack.client("submission", (account, self.passwords[account]), timeout=60)

    def _count(self, counter: Counter[str], reply: str) -> None:
        with self.lock:
            counter[reply] += 1

    def _send_one(self, smtp: smtplib.SMTP, message: Message) -> tuple[int, str]:
        """One transaction; (code, reply) of the step that ended it."""
        sender = f"app@{message.account}.example"
        body = simple_message(
            sender,
            message.recipient,
            subject=f"soak {message.number}",
            extra_headers={"X-Soak-Id": str(message.number)},
        )
        code, text = smtp.mail(sender)
        if code >= 400:
            return code, text.decode(errors="replace")
        code, text = smtp.rcpt(message.recipient)
        if code >= 400:
            return code, text.decode(errors="replace")
        try:
            code, text = smtp.data(body)
        except smtplib.SMTPDataError as exc:  # DATA itself refused
            return exc.smtp_code, exc.smtp_error.decode(errors="replace")
        except (smtplib.SMTPServerDisconnected, OSError):
            message.ambiguous += 1  # the data went out; was it queued? A real app retries.
            raise
        return code, text.decode(errors="replace")

    def _client(self, share: list[Message]) -> None:
        smtp: smtplib.SMTP | None = None
        in_session = 0
        for message in share:
            attempt = 0
            while not self.stopping.is_set():
                attempt += 1
                try:
                    if smtp is None or in_session >= SESSION_MESSAGES:
                        if smtp is not None:
                            with contextlib.suppress(smtplib.SMTPException, OSError):
                                smtp.quit()
                        smtp, in_session = None, 0
                        smtp = self._session(message.account)
                    code, reply = self._send_one(smtp, message)
                    in_session += 1
                except smtplib.SMTPResponseException as exc:  # a refused login or STARTTLS
                    code, reply = exc.smtp_code, exc.smtp_error.decode(errors="replace")
                    smtp = None
                except (smtplib.SMTPException, OSError, ssl.SSLError):
                    self._count(self.report.retried, "connection lost")
                    with self.lock:
                        self.report.dropped += 1
                    smtp = None
                    time.sleep(min(0.2 * 2**attempt, 5.0) * self.random.random())
                    continue
                if code == 250:
                    message.queue_id = queue_id_of(reply)
                    with self.lock:
                        self.report.accepted += 1
                    break
                # After a temporary refusal start a new session: one whose milter connection
                # broke (the milter was killed) answers 451 4.7.1 to every MAIL FROM until it
                # ends; smtpd drops it only after smtpd_hard_error_limit (20) errors.
                if smtp is not None:
                    with contextlib.suppress(smtplib.SMTPException, OSError):
                        smtp.quit()
                smtp = None
                if 400 <= code < 500:
                    self._count(self.report.retried, self._reply_key(code, reply))
                    time.sleep(min(0.2 * 2**attempt, 5.0) * (0.5 + self.random.random()))
                    continue
                message.refused = f"{code} {reply}"
                self._count(self.report.refused, self._reply_key(code, reply))
                self.out(
                    f"soak: message {message.number} to <{message.recipient}> refused: "
                    f"{code} {reply}"
                )
                break
        if smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()

    @staticmethod
    def _reply_key(code: int, reply: str) -> str:
        """A label for counting: the code and the first words, without addresses."""
        words = [w for w in reply.split() if not w.startswith("<")]
        if words and words[0] == str(code):
            words = words[1:]
        return " ".join([str(code), *words[:6]])

    # -- the remote side -----------------------------------------------------------------

    def _returner(self) -> None:
        assert self.stack is not None
        while not self.stopping.is_set():
            try:
                rcpt, original = self.remote.returns.get(timeout=0.5)
            except queue.Empty:
                continue
            message = self.by_recipient[rcpt]
            if message.outcome == "dsn":
                sender, data = "", Sink.dsn(original, rcpt)
            else:
                sender = "fbl@isp.example"
                data = Sink.arf(original.sender, rcpt, bytes(original.data))
            attempt = 0
            while not self.stopping.is_set():
                attempt += 1
                try:
                    Sink.deliver(self.stack.smtp, sender, original.sender, data)
                    break
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                except smtplib.SMTPResponseException as exc:
                    code, text = exc.smtp_code, exc.smtp_error
                except (smtplib.SMTPException, OSError):
                    code, text = 0, b"connection lost"
                reply = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
                if code >= 500:
                    with self.lock:
                        self.report.returns_failed.append(f"<{rcpt}>: {code} {reply}")
                    break
                self._count(self.report.returns_retried, self._reply_key(code, reply))
                time.sleep(min(0.2 * 2**attempt, 5.0) * (0.5 + self.random.random()))
            with self.remote.lock:
                self.remote.pending -= 1
            with self.lock:
                if message.outcome == "dsn":
                    self.report.dsns += 1
                else:
                    self.report.complaints += 1

    def _scanner(self) -> None:
        while not self.stopping.is_set():
            self.remote.scan()
            time.sleep(0.2)

    # -- chaos ---------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _fire(self, fault: Fault) -> None:
        assert self.stack is not None
        fault.fired_at = self._elapsed()
        if fault.name == "receiver":
            self.receiver.stop()
            self.out(
                f"soak: {fault.fired_at:7.1f} s  webhook receiver down for "
                f"{self.receiver_down:.0f} s"
            )
            self.stopping.wait(self.receiver_down)
            self.receiver.start()
            fault.back_at = self._elapsed()
            fault.detail = f"down {fault.back_at - fault.fired_at:.1f} s"
            self.out(f"soak: {fault.back_at:7.1f} s  webhook receiver up again")
            return
        pid = component_pid(self.stack, fault.name)
        if not pid:
            fault.detail = "not running when its turn came"
            self.out(f"soak: {fault.fired_at:7.1f} s  {fault.name}: not running, not killed")
            return
        os.kill(pid, signal.SIGKILL)
        self.out(f"soak: {fault.fired_at:7.1f} s  kill -9 {fault.name} (pid {pid})")
        deadline = time.monotonic() + 120
        new = 0
        while time.monotonic() < deadline and not self.stopping.is_set():
            new = component_pid(self.stack, fault.name)
            if new and new != pid:
                break
            time.sleep(0.1)
        fault.back_at = self._elapsed()
        fault.detail = (
            f"pid {pid} killed, restarted as pid {new} after {fault.back_at - fault.fired_at:.1f} s"
            if new and new != pid
            else f"pid {pid} killed, NOT restarted within 120 s"
        )
        self.out(f"soak: {fault.back_at:7.1f} s  {fault.name} {fault.detail}")

    def _chaos(self) -> None:
        timed = sorted((f for f in self.faults if f.at is not None), key=lambda f: f.at or 0)
        spread = [f for f in self.faults if f.at is None]
        marks = [self.count * (i + 1) // (len(spread) + 1) for i in range(len(spread))]
        while (timed or spread) and not self.stopping.is_set():
            with self.lock:
                accepted = self.report.accepted
            if timed and self._elapsed() >= (timed[0].at or 0):
                self._fire(timed.pop(0))
            elif spread and (accepted >= marks[0] or self.sent_done.is_set()):
                marks.pop(0)
                self._fire(spread.pop(0))
            else:
                time.sleep(0.1)

    # -- draining ------------------------------------------------------------------------

    def _postfix(self, *args: str) -> str:
        assert self.stack is not None
        result = subprocess.run(
            ["postqueue", "-c", str(self.stack.state / "postfix/etc"), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    def _queue_empty(self) -> bool:
        return "Mail queue is empty" in self._postfix("-p")

    def _stream_state(self) -> tuple[int, int]:
        """(events not yet acknowledged by the dispatcher, dead letters) over the accounts."""
        assert self.stack is not None
        keys = Keys("txmail:")
        client = self.stack.redis()
        waiting = dead = 0
        try:
            for name in self.account_names:
                if client.exists(keys.events(name)):
                    for group in client.xinfo_groups(keys.events(name)):
                        if group["name"] == WEBHOOK_GROUP:
                            waiting += int(group.get("lag") or 0) + int(group.get("pending") or 0)
                dead += int(client.xlen(keys.dead_letters(name)))
        finally:
            client.close()
        return waiting, dead

    def expected(self) -> dict[tuple[str, str, str], Message]:
        return {
            (m.queue_id, m.recipient, kind): m
            for m in self.messages
            if m.queue_id
            for kind in OUTCOMES[m.outcome][1]
        }

    def _missing(self) -> int:
        self.tally.read(self.receiver)
        return sum(1 for key in self.expected() if key not in self.tally.ids_of)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        last_flush = 0.0
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - last_flush >= self.flush_every:
                self._postfix("-f")
                last_flush = time.monotonic()
            missing = self._missing()
            with self.remote.lock:
                returns = self.remote.pending + self.remote.returns.qsize()
            if missing == 0 and returns == 0 and self._queue_empty():
                waiting, _ = self._stream_state()
                if waiting == 0:
                    break
            if time.monotonic() - last_note > 30:
                last_note = time.monotonic()
                self.out(
                    f"soak: {self._elapsed():7.1f} s  draining: {missing} events "
                    f"missing, {returns} returns pending"
                )
            time.sleep(1.0)
        time.sleep(5.0)  # late duplicates and unexpected events still count

    # -- the run -------------------------------------------------------------------------

    def run(self, keep_state: bool = False) -> Report:
        if keep_state:
            os.environ["TXMAIL_KEEP_STATE"] = "1"
        self.remote.sink.start()
        self.receiver.start()
        self.stack = Stack(relay_port=self.remote.sink.port, name="soak")
        self.stack.configure("redis", appendfsync=self.appendfsync)
        threads: list[threading.Thread] = []
        try:
            self.stack.start()
            for name in self.account_names:
                settings = [*ACCOUNT_SETTINGS]
                self.passwords[name] = self.stack.add_account(
                    name, f"{name}.example", settings=settings
                )
                self.stack.txmail("webhooks", "url", name, self.receiver.url)
            self.out(
                f"soak: {self.count} messages, {self.concurrency} clients, "
                f"{len(self.account_names)} accounts, faults: "
                f"{', '.join(f.name for f in self.faults) or 'none'}; appendfsync "
                f"{self.appendfsync}; state in {self.stack.state}"
            )
            self.started = time.monotonic()
            helpers = [
                threading.Thread(target=self._scanner, daemon=True),
                threading.Thread(target=self._chaos, daemon=True),
                *[threading.Thread(target=self._returner, daemon=True) for _ in range(3)],
            ]
            for thread in helpers:
                thread.start()
            shares = [self.messages[i :: self.concurrency] for i in range(self.concurrency)]
            # One account per client thread, so a session never changes its login.
            for share in shares:
                owner = share[0].account if share else ""
                for message in share:
                    message.account = owner
            clients = [
                threading.Thread(target=self._client, args=(share,), daemon=True)
                for share in shares
            ]
            for thread in clients:
                thread.start()
            threads = helpers + clients
            self._progress(clients)
            self.report.send_duration = self._elapsed()
            self.sent_done.set()
            helpers[1].join()  # every fault fired
            self._drain()
            self.report.duration = self._elapsed()
            self._summarise()
            return self.report
        finally:
            self.stopping.set()
            for thread in threads:
                thread.join(10)
            self.stack.close()
            self.receiver.stop()
            self.remote.sink.stop()

    def _progress(self, clients: list[threading.Thread]) -> None:
        last = time.monotonic()
        while any(t.is_alive() for t in clients):
            time.sleep(0.5)
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                with self.lock:
                    accepted, retried = self.report.accepted, sum(self.report.retried.values())
                self.out(
                    f"soak: {self._elapsed():7.1f} s  accepted {accepted}/{self.count}, "
                    f"{retried} retries"
                )

    def _summarise(self) -> None:
        report, tally = self.report, self.tally
        tally.read(self.receiver)
        expected = self.expected()
        sink = self.remote.sink.messages
        soak_rcpts = Counter(r for m in sink for r in m.recipients if r in self.by_recipient)
        report.delivered = len(soak_rcpts)
        report.bounced_at_sink = sum(
            1 for m in self.messages if m.outcome == "rejected" and m.queue_id
        )
        report.deferred_at_sink = len(self.remote.deferred_once)
        for key in expected:
            report.expected[key[2]] += 1
        for event in tally.events.values():
            report.received[event["kind"]] += 1
        report.duplicates = sum(n - 1 for n in tally.deliveries.values() if n > 1)
        known_ids = {m.queue_id for m in self.messages if m.queue_id}
        for key, message in sorted(expected.items()):
            if key not in tally.ids_of:
                report.lost.append(f"{key[0]} <{key[1]}> {key[2]} ({message.outcome})")
        fired = any(fault.fired_at for fault in self.faults)
        for key, ids in sorted(tally.ids_of.items()):
            event = tally.events[next(iter(ids))]
            if event["kind"] == "test":
                continue
            if key not in expected and event["kind"] == "soft_bounce" and fired:
                details = event.get("details") or {}
                report.fault_deferrals.append(
                    f"{key[0]} <{key[1]}>: {str(details.get('diagnostic', ''))[:160]}"
                )
                continue
            if key not in expected:
                message = self.by_recipient.get(key[1])
                why = (
                    "a resubmission after a lost connection"
                    if message and message.ambiguous and key[0] not in known_ids
                    else "not expected"
                )
                report.unexpected.append(f"{key[0]} <{key[1]}> {key[2]}: {why}")
                continue
            if len(ids) > 1:
                report.wrong.append(
                    f"{key[0]} <{key[1]}> {key[2]}: {len(ids)} different ids {sorted(ids)}"
                )
            status = str(event.get("details", {}).get("status", ""))
            if key[2] == "bounce" and not status.startswith("5"):
                report.wrong.append(
                    f"{key[0]} <{key[1]}> bounce with status {status!r} "
                    "(a hard bounce was expected)"
                )
        report.ambiguous = sum(m.ambiguous for m in self.messages)
        report.queue_empty = self._queue_empty()
        report.waiting_events, report.dead_letters = self._stream_state()


def table(report: Report) -> str:
    rows: list[tuple[str, str]] = []
    rate = report.accepted / report.send_duration if report.send_duration else 0.0
    rows += [
        ("messages", f"{report.messages}"),
        (
            "duration",
            f"{report.duration:.0f} s (sending {report.send_duration:.0f} s, "
            f"{rate:.0f} msg/s accepted)",
        ),
        ("accepted", f"{report.accepted}"),
        ("refused 4xx (retried)", f"{sum(report.retried.values())}"),
    ]
    rows += [(f"  {reply}", f"{n}") for reply, n in report.retried.most_common()]
    rows += [("refused 5xx (not retried)", f"{sum(report.refused.values())}")]
    rows += [(f"  {reply}", f"{n}") for reply, n in report.refused.most_common()]
    rows += [
        ("lost connections after DATA", f"{report.ambiguous}"),
        ("delivered (sink, unique recipients)", f"{report.delivered}"),
        ("bounced at the sink (550)", f"{report.bounced_at_sink}"),
        ("deferred once at the sink (450)", f"{report.deferred_at_sink}"),
        ("DSNs mailed back", f"{report.dsns}"),
        ("complaints (ARF) mailed back", f"{report.complaints}"),
        ("returns retried (4xx, port 25)", f"{sum(report.returns_retried.values())}"),
        ("returns refused (5xx)", f"{len(report.returns_failed)}"),
        (
            "events expected / received",
            f"{sum(report.expected.values())} / {sum(report.received.values())}",
        ),
    ]
    for kind in sorted(set(report.expected) | set(report.received)):
        rows.append((f"  {kind}", f"{report.expected[kind]} / {report.received[kind]}"))
    rows += [
        ("duplicates (same id posted again)", f"{report.duplicates}"),
        ("lost", f"{len(report.lost)}"),
        ("unexpected", f"{len(report.unexpected)}"),
        ("deferred by a fault (Postfix's own 4xx)", f"{len(report.fault_deferrals)}"),
        ("wrong", f"{len(report.wrong)}"),
        ("Postfix queue empty at the end", "yes" if report.queue_empty else "NO"),
        ("events waiting / dead letters", f"{report.waiting_events} / {report.dead_letters}"),
    ]
    for fault in report.faults:
        rows.append(
            (
                f"fault {fault.name}",
                f"at {fault.fired_at:.1f} s: {fault.detail}" if fault.fired_at else "not fired",
            )
        )
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    for title, items in (
        ("lost", report.lost),
        ("unexpected", report.unexpected),
        ("deferred by a fault", report.fault_deferrals),
        ("wrong", report.wrong),
        ("returns refused", report.returns_failed),
    ):
        if items:
            lines.append(f"{title} (first 20):")
            lines += [f"  {item}" for item in items[:20]]
    lines.append("RESULT: " + ("ok" if report.ok else "FAILED"))
    return "\n".join(lines)


def run_soak(**kwargs: Any) -> Report:
    keep_state = bool(kwargs.pop("keep_state", False))
    return Soak(**kwargs).run(keep_state=keep_state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--faults",
        type=parse_faults,
        default=None,
        help="comma-separated NAME[@SECONDS] from milter, policyd, maillog, "
        "webhooks, redis, receiver; or a count of the default order "
        f"({','.join(DEFAULT_FAULTS)}); default: all six",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--receiver-down", type=float, default=25.0, help="seconds the webhook receiver stays down"
    )
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--flush-every", type=float, default=15.0)
    parser.add_argument(
        "--appendfsync",
        choices=("always", "everysec"),
        default="always",
        help="redis.appendfsync of the node's Redis",
    )
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the node's state directory (logs) after the run",
    )
    args = parser.parse_args()
    if args.messages < 1 or args.concurrency < 1 or args.accounts < 1:
        parser.error("--messages, --concurrency and --accounts must be at least 1")
    report = run_soak(
        messages=args.messages,
        faults=args.faults,
        concurrency=args.concurrency,
        accounts=args.accounts,
        seed=args.seed,
        receiver_down=args.receiver_down,
        drain_timeout=args.drain_timeout,
        flush_every=args.flush_every,
        keep_state=args.keep_state,
        appendfsync=args.appendfsync,
    )
    print(table(report), flush=True)
    return 0 if report.ok else 1
