"""The sending rules of txmail's milter, one per module, run in the order of RULES.

Each rule module has a NAME, a one-line DESCRIPTION, the STAGES it runs at ("mail" after MAIL
FROM, "rcpt" after each RCPT TO, "eom" at end of message) and a `check(submission, settings)`
that reads a Submission (envelope, headers, the parsed message) and the account's settings
(txmail/accounts/settings.py) and returns:

    None        nothing to say: the message goes on to the next rule;
    Refusal     an SMTP reply (RFC 3463 enhanced code plus a sentence that says what to fix);
                the milter answers with it and no later rule runs;
    a decision  an object with `apply(plan)` that writes what the rule decided (routing class,
                tags, flags, recipients to drop, header edits) into the message's Plan.

Rules never touch Redis, DNS or the clock: what they need from outside (suppression entries) is
put on the Submission before they run, so every rule is a pure function under test.
Later rules may read what earlier ones decided (submission.plan), which is why order matters:
size comes first so an oversized message is never parsed, and single-recipient mode must drop
recipients before the suppression check counts what is left. Rules that read the message call
`submission.parse()`, which parses it once.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from txmail.accounts.settings import AccountSettings
from txmail.milter.plan import EOM, MAIL, RCPT, Blocked, HeaderEdit, Plan, Refusal

if TYPE_CHECKING:
    from txmail.milter.submission import Submission

__all__ = [
    "EOM",
    "MAIL",
    "RCPT",
    "Blocked",
    "Decision",
    "HeaderEdit",
    "Plan",
    "Refusal",
    "Rule",
    "Verdict",
    "RULES",
    "by_name",
    "run",
]


class Decision(Protocol):
    def apply(self, plan: Plan) -> None: ...


Verdict = Refusal | Decision


class Rule(Protocol):
    NAME: str
    DESCRIPTION: str
    STAGES: tuple[str, ...]

    def check(self, submission: Submission, settings: AccountSettings) -> Verdict | None: ...


def _load() -> list[ModuleType]:
    from txmail.milter.rules import (
        attachments,
        control_headers,
        flags,
        line_length,
        message_class,
        recipients,
        rewrite_from,
        sender,
        single_recipient,
        size,
        suppressed,
        tags,
    )

    return [
        size,
        line_length,
        sender,
        recipients,
        attachments,
        message_class,
        tags,
        flags,
        single_recipient,
        rewrite_from,
        suppressed,
        control_headers,
    ]


RULES: list[ModuleType] = _load()


def run(
    stage: str,
    submission: Submission,
    settings: AccountSettings,
    rules: list[ModuleType] | None = None,
) -> Refusal | None:
    """Run every rule of `stage` in order; the first refusal wins, decisions go to the plan."""
    submission.stage = stage
    for rule in rules if rules is not None else RULES:
        if stage not in rule.STAGES:
            continue
        verdict = rule.check(submission, settings)
        if verdict is None:
            continue
        if isinstance(verdict, Refusal):
            return verdict
        verdict.apply(submission.plan)
    return None


def by_name(name: str) -> ModuleType:
    for rule in RULES:
        if rule.NAME == name:
            return rule
    raise KeyError(name)
