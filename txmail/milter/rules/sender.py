"""Rule `sender`: the MAIL FROM domain and the header From domain must be the account's.

Stages: mail (the envelope sender, so a wrong one is refused before any data is sent) and eom
(every address of every From header). `MAIL FROM:<>` is allowed; the From header is still
checked. When rule `rewrite_from` will replace the From header by the MAIL FROM address (as
Maxemail does: "overwriting any existing value"), whatever domain it had is not checked: what
leaves is the checked envelope sender, as the only address of the one From header
(rewrite_from.author quotes or drops whatever else the display name holds), and DKIM signs for
its domain only (finish._author_domain; dkim.Signer signs no domain outside the account's).
Domains compare case-insensitively and exactly: a subdomain is a different domain.
Refuses: 553 5.7.1 naming the domain; 550 5.6.0 when the message has no From address.
"""

from __future__ import annotations

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, MAIL, Refusal, rewrite_from
from txmail.milter.submission import Submission, domain_of

NAME = "sender"
DESCRIPTION = "MAIL FROM and header From must be at one of the account's domains"
STAGES = (MAIL, EOM)


def _not_ours(what: str, domain: str, domains: tuple[str, ...]) -> Refusal:
    shown = domain or "(no domain)"
    return Refusal(
        "553",
        "5.7.1",
        f"{what} domain {shown} is not one of this account's "
        f"sending domains ({', '.join(domains)}); send from an address at one of "
        "them",
    )


def check(submission: Submission, settings: AccountSettings) -> Refusal | None:
    domains = submission.domains
    if submission.sender and domain_of(submission.sender) not in domains:
        return _not_ours("Sender (MAIL FROM)", domain_of(submission.sender), domains)
    if submission.stage != EOM:
        return None
    if rewrite_from.replaces(submission, settings):
        return None
    authors = submission.authors()
    if not authors:
        return Refusal(
            "550",
            "5.6.0",
            "The message has no From header address; add a From "
            f"header with an address at {domains[0]}",
        )
    for _, address in authors:
        if domain_of(address) not in domains:
            return _not_ours("Header From", domain_of(address), domains)
    return None
