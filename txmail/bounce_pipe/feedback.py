"""Who vouches for a complaint: the DKIM signatures of a feedback report that verify.

SYNOPSIS
    domains = verified_signers(raw, dns_txt)     # ("fbl.example.net", ...)
    loop = feedback_loop(domains, configured)    # "fbl.example.net", or "" when none matches

DESCRIPTION
    An ARF report (RFC 5965) sent to a bounce address says that a recipient complained. Its
    token proves which message (and, since every recipient has a return path of its own,
    which recipient) it is about, but not who wrote it: any recipient can send one about
    themselves. A complaint counts toward an account's suspension only when a mailbox
    provider's feedback loop sent it, and RFC 6449 (section 3.5) says how a receiver can tell:
    feedback loops sign their reports with DKIM. So the report's DKIM-Signature fields are
    verified (dkimpy, keys looked up in DNS) and the domains of the valid ones are kept; a
    report is a feedback loop's when one of them is exactly a domain the operator listed in
    bounce_pipe.feedback_loops (see feedback_loop()).

    Verification runs where the report is parsed (the unprivileged parser): it needs DNS, never
    a secret.

BOUNDS
    Only signatures claiming a configured feedback loop's domain are verified (so DNS is asked
    only about those domains), at most MAX_SIGNATURES signatures are looked at per report,
    each key lookup has the resolver's timeout, and a report over MAX_REPORT_BYTES is not
    verified at all (a feedback report carries one message, usually headers only).

FAILURE
    Never raises on bad mail: a signature that does not verify, a key that does not exist or a
    malformed message gives no domain. A DNS server that does not answer raises
    TemporaryFailure: the bounce pipe answers 75 and Postfix brings the report again later,
    so an outage never turns a feedback loop's complaint into an uncounted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import dkim
import dkim.util

from txmail import dnscheck
from txmail.errors import TemporaryFailure

log = logging.getLogger("txmail.bounce_pipe")

MAX_SIGNATURES = 3
MAX_REPORT_BYTES = 2 * 1024 * 1024

DnsTxt = Callable[..., bytes | None]  # dkimpy's dnsfunc: (name, timeout=...) -> TXT or None


def verified_signers(
    raw: bytes, dns_txt: DnsTxt | None = None, wanted: Iterable[str] | None = None
) -> tuple[str, ...]:
    """The lower-case d= domains of the report's DKIM signatures that verify. With `wanted`,
    only signatures of those exact domains are tried: a key is looked up in DNS only for a
    domain that could matter (the configured feedback loops), so a report signed by a domain
    whose DNS never answers cannot make the bounce pipe try again forever."""
    if len(raw) > MAX_REPORT_BYTES:
        return ()
    chosen = None if wanted is None else {_domain(w.encode()) for w in wanted}
    checker = dkim.DKIM(raw, logger=_QUIET)
    signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    domains: list[str] = []
    for index, value in enumerate(signatures[:MAX_SIGNATURES]):
        if chosen is not None and _claimed(value) not in chosen:
            continue
        checker = dkim.DKIM(raw, logger=_QUIET)
        try:
            valid = (
                checker.verify(idx=index, dnsfunc=dns_txt)
                if dns_txt is not None
                else checker.verify(idx=index)
            )
        except TemporaryFailure:
            raise  # DNS did not answer: try again later rather than judge the report unsigned
        except Exception as exc:  # noqa: BLE001 - dkimpy raises many kinds on hostile input
            log.info(
                "NOQUEUE: feedback report: DKIM signature %d unreadable (%s)",
                index,
                exc.__class__.__name__,
            )
            continue
        domain = _domain(checker.domain or b"")
        if valid and domain and domain not in domains and (chosen is None or domain in chosen):
            domains.append(domain)
    return tuple(domains)


def _claimed(signature: bytes) -> str:
    """The d= domain a DKIM-Signature value claims, before anything is verified."""
    try:
        return _domain(dkim.util.parse_tag_value(signature).get(b"d", b""))
    except Exception:  # noqa: BLE001 - dkimpy's tag parser raises on malformed values
        return ""


def _domain(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip().lower().rstrip(".")


def feedback_loop(signers: Iterable[str], configured: Iterable[str]) -> str:
    """The first signing domain that is exactly a configured feedback loop's; "".

    Exactly: a provider signs its users' own mail with its main domain (and a user can send an
    ARF report like any other mail), so only the domain its feedback loop alone signs with may
    be listed, and a subdomain of it is not the same signer."""
    loops = {c.lower().strip().rstrip(".") for c in configured if c.strip()}
    for domain in signers:
        if domain in loops:
            return domain
    return ""


def dns_txt(nameservers: list[str], timeout: float = 5.0) -> DnsTxt:
    """dkimpy's key lookup, asking `nameservers` (IP or IP:PORT; empty: the system's
    resolver) as `txmail domains verify` does."""
    resolve = dnscheck.resolver(nameservers, timeout)

    def lookup(name: bytes | str, timeout: float = timeout) -> bytes | None:
        """The key record, None when there is none; TemporaryFailure when DNS does not
        answer."""
        qname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        values = resolve(qname.rstrip("."), "TXT")
        return values[0].encode("utf-8") if values else None

    return lookup


class _Quiet(logging.Logger):
    """dkimpy logs every failed verification at error level; the caller says what counts."""

    def __init__(self) -> None:
        super().__init__("txmail.bounce_pipe.dkim", level=logging.CRITICAL + 1)


_QUIET = _Quiet()
