"""The NOTIFY a bounce-tracked recipient leaves with: what txmail needs to track, whatever the
client asked (SMTPeter's bounce protocol, seed 004).

SYNOPSIS
    params = outbound_params(client_params)   # "NOTIFY=FAILURE,DELAY ORCPT=..." or None

DESCRIPTION
    A client's NOTIFY (RFC 3461) says which delivery notices the client wants; txmail needs
    failures and delays reported to the message's signed bounce address whatever the client
    wants, or a NOTIFY=NEVER message would bounce at a remote server without anyone knowing.
    So, for a message whose envelope sender became the signed bounce address, every recipient
    whose NOTIFY lacks FAILURE or DELAY is taken off at end of message and added back
    (smfi_delrcpt, smfi_addrcpt_par) with NOTIFY widened to include FAILURE and DELAY (NEVER
    dropped, SUCCESS kept) and the client's own ORCPT. Postfix then generates its own
    failure and delay notices for that recipient, and passes the widened NOTIFY to remote
    servers that speak DSN, so their notices come back to the bounce pipe too.

    A recipient without NOTIFY is left alone: Postfix and remote servers then report failures
    and delays by default. The client's own parameters stay on the message record
    (MessageRecord.recipient_params) and decide what the bounce pipe forwards
    (bounce_pipe/forward.py); per-recipient copies are injected with them too
    (milter/copies.py), and widened on the copy listener in turn.

    A milter-added recipient's NOTIFY=SUCCESS is only honoured by Postfix when a recipient
    the client gave carried SUCCESS too (POSTFIX-NOTES §5: the message-level flag is set from
    the client's RCPT); a client that asked SUCCESS did, so its success notices still come.

Reads the client's RCPT parameters only (through txmail.dsn); decides nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from txmail import dsn
from txmail.milter.submission import esmtp_params

TRACKED = ("FAILURE", "DELAY")
ORDER = ("SUCCESS", "FAILURE", "DELAY")


def outbound_params(params: Iterable[str]) -> str | None:
    """The RCPT parameters the recipient must leave with (for smfi_addrcpt_par), or None when
    the client's are fine as they are (no NOTIFY, or FAILURE and DELAY both asked)."""
    params = list(params)
    asked = dsn.notify_of(params)
    if asked is None or all(v in asked for v in TRACKED):
        return None
    wanted = [v for v in ORDER if v in asked or v in TRACKED]
    out = [f"NOTIFY={','.join(wanted)}"]
    orcpt = esmtp_params(params).get("ORCPT")
    if orcpt:
        out.append(f"ORCPT={orcpt}")
    return " ".join(out)
