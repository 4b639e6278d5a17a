"""Checks of a sending domain's DNS records, for `txmail domains verify`.

    DKIM         SELECTOR._domainkey.DOMAIN TXT "v=DKIM1; k=rsa; p=..." with our public key
    return path  mta.DOMAIN CNAME to this relay's hostname (or MX to it, for operators who
                 publish MX and SPF there themselves)

The DNS lookup is an argument (`Resolve`), so the checks run in tests against a dict; the real
one is `resolver()` (dnspython), asking domains.nameservers or the system's resolver.

Fails: TemporaryFailure when DNS does not answer (timeout, SERVFAIL); a missing record is
       simply a failed check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.resolver

from txmail.accounts.domains import DkimKey
from txmail.errors import TemporaryFailure

# (name, record type) -> the records as text: TXT strings joined, CNAME/MX targets without
# the final dot; [] when there is no such record.
Resolve = Callable[[str, str], list[str]]


@dataclass(frozen=True)
class Check:
    what: str  # "dkim s=SELECTOR" or "return path"
    name: str
    ok: bool
    found: str
    expected: str


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())
    return tags


def check_dkim(domain: str, key: DkimKey, resolve: Resolve) -> Check:
    """Whether SELECTOR._domainkey.DOMAIN publishes exactly this key."""
    name = key.dns_name(domain)
    records = resolve(name, "TXT")
    for record in records:
        tags = _tags(record)
        if (
            tags.get("p") == key.public_key
            and tags.get("k", "rsa") == key.key_type
            and tags.get("v", "DKIM1") == "DKIM1"
        ):
            return Check(f"dkim s={key.selector}", name, True, "the key", key.dns_value())
    found = "no TXT record" if not records else "a different key: " + records[0][:60] + "..."
    return Check(f"dkim s={key.selector}", name, False, found, key.dns_value())


def check_return_path(return_path: str, hostname: str, resolve: Resolve) -> Check:
    """Whether the return-path subdomain leads to this relay (CNAME, else MX)."""
    hostname = hostname.lower().rstrip(".")
    cnames = [c.lower().rstrip(".") for c in resolve(return_path, "CNAME")]
    if hostname in cnames:
        return Check("return path", return_path, True, f"CNAME {hostname}", f"CNAME {hostname}")
    exchanges = [m.lower().rstrip(".") for m in resolve(return_path, "MX")]
    if hostname in exchanges:
        return Check("return path", return_path, True, f"MX {hostname}", f"CNAME {hostname}")
    found = (
        f"CNAME {cnames[0]}"
        if cnames
        else f"MX {exchanges[0]}"
        if exchanges
        else "no CNAME or MX record"
    )
    return Check("return path", return_path, False, found, f"CNAME {hostname}")


def resolver(nameservers: list[str], timeout: float = 5.0) -> Resolve:
    """A Resolve over dnspython; `nameservers` as IP or IP:PORT, empty for the system's."""
    res = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        servers: list[dns.nameserver.Nameserver] = []
        for server in nameservers:
            host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
            servers.append(dns.nameserver.Do53Nameserver(host or server, int(port or 53)))
        res.nameservers = servers
    res.lifetime = timeout

    def resolve(name: str, kind: str) -> list[str]:
        try:
            answer = res.resolve(name, kind, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise TemporaryFailure(f"DNS did not answer for {name} {kind}: {exc}") from None
        values = []
        for rdata in answer.rrset or []:
            if kind == "TXT":
                values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif kind == "CNAME":
                values.append(rdata.target.to_text().rstrip("."))
            elif kind == "MX":
                values.append(rdata.exchange.to_text().rstrip("."))
            else:
                values.append(rdata.to_text())
        return values

    return resolve
