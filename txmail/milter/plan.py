"""What the milter's rules decide about one message: refusals, header edits and the Plan.

Kept apart from txmail/milter/rules/ (which loads every rule module) so that the Submission and
the rules can both import these types, in either order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAIL, RCPT, EOM = "mail", "rcpt", "eom"


@dataclass(frozen=True)
class Refusal:
    """An SMTP refusal: `code` 4xx or 5xx, `status` the RFC 3463 enhanced code."""

    code: str
    status: str
    text: str

    def __post_init__(self) -> None:
        # Rules quote what the client sent (a domain, an address, a tag); a line break or other
        # unprintable character in it must not split the reply or the log line that shows it.
        if not self.text.isprintable():
            object.__setattr__(
                self, "text", "".join(c if c.isprintable() else "?" for c in self.text)
            )

    @property
    def temporary(self) -> bool:
        return self.code.startswith("4")

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@dataclass(frozen=True)
class HeaderEdit:
    """Change the `index`-th header called `name` (1-based, case-insensitive) to `value`;
    value None deletes it. This is smfi_chgheader's model, which Postfix implements."""

    name: str
    index: int
    value: str | None


@dataclass(frozen=True)
class Blocked:
    """Why a recipient was taken off a message: one `blocked` event each."""

    recipient: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What the milter will do with a message that passes: filled in by the rules."""

    recipients: list[str]
    message_class: str = "standard"
    tags: list[str] = field(default_factory=list)
    flags: int | None = None
    bcc: str | None = None
    blocked: list[Blocked] = field(default_factory=list)
    header_edits: list[HeaderEdit] = field(default_factory=list)

    def block(self, recipient: str, reason: str, **details: Any) -> None:
        if recipient in self.recipients:
            self.recipients.remove(recipient)
            self.blocked.append(Blocked(recipient, reason, details))

    def flag(self, bit: int) -> bool:
        return self.flags is not None and bool(self.flags & bit)
