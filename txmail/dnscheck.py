"""A sending domain's DNS records: what to publish (`txmail domains dns`) and whether it is
published (`txmail domains verify`, `txmail doctor`).

    DKIM         SELECTOR._domainkey.DOMAIN TXT "v=DKIM1; k=rsa; p=..." with our public key
    return path  mta.DOMAIN CNAME to this relay's host name (or MX to it, for operators who
                 publish MX and SPF there themselves)
    SPF          the bounce address is bounces+TOKEN@BOUNCE-HOST (the return-path domain, else
                 the node's bounce_domain), so BOUNCE-HOST's SPF must let the relay send:
                 through the CNAME that is the TXT record of the relay's host name,
                 "v=spf1 a:HOSTNAME -all" (or include:domains.spf_include)
    MX           BOUNCE-HOST's MX (through the CNAME: the relay host name's) names the relay,
                 so returned mail comes back here
    DMARC        a suggestion only, never checked: _dmarc.DOMAIN "v=DMARC1; p=none" (with
                 rua=mailto:domains.dmarc_rua when that is set)

SPF is evaluated as RFC 7208 says, as far as a check of our own record needs: for each
address of the relay's host name, check_host() over the bounce host's single v=spf1 record
(all, include, a, mx, ip4, ip6, exists, redirect; ptr never matches), at most 10 DNS-querying
terms, 2 void look-ups and 10 exchanges per mx term, then the relay must get "pass". A
malformed record (an unknown term, a bad macro, a CIDR out of range, a domain-spec that
expands to no valid name) is a permerror, which the check reports as wrong. A relay host
name with no address in DNS cannot be evaluated; the record then passes if it names the
relay (a:HOSTNAME, or include: of domains.spf_include) with a "+" qualifier.

verify() does what `txmail domains verify` and the console's domains page do: check every
record and switch on what verifies (signing, the return path, a rotated key), in Redis.

The DNS lookup is an argument (`Resolve`), so the checks run in tests against a dict; the real
one is `resolver()` (dnspython), asking domains.nameservers or the system's resolver. CNAMEs
are followed here too (follow()), so a server that answers only the CNAME does not hide the
records behind it.

Fails: TemporaryFailure when DNS does not answer (timeout, SERVFAIL); a missing record is
       simply a failed check, and so is a name DNS cannot hold (resolver() answers nothing).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from txmail.accounts.domains import DkimKey, Domain, Domains
from txmail.errors import TemporaryFailure

if TYPE_CHECKING:
    from txmail.config import Settings

# (name, record type) -> the records as text: TXT strings joined, CNAME/MX targets without
# the final dot (MX: the exchange only), A/AAAA addresses; [] when there is no such record.
Resolve = Callable[[str, str], list[str]]

OK, MISSING, WRONG = "ok", "missing", "wrong"
MX_PREFERENCE = 10
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: DNS-querying terms per evaluation
SPF_VOID_LIMIT = 2  # RFC 7208 4.6.4: look-ups answering nothing
SPF_MX_LIMIT = 10  # RFC 7208 4.6.4: exchanges of one mx term
DNS_NAME_LIMIT = 253  # RFC 7208 4.8: longer expansions lose labels at the left
DNS_LABEL_LIMIT = 63


@dataclass(frozen=True)
class Record:
    """One DNS record to publish."""

    name: str
    kind: str  # TXT, CNAME, MX
    value: str  # TXT: the text; CNAME: the target; MX: "10 exchange" (no final dots)
    what: str  # "dkim s=SELECTOR", "return path", "spf", "mx", "dmarc"
    suggestion: bool = False  # printed, never checked (DMARC)

    def zone_value(self) -> str:
        if self.kind != "TXT":
            return self.value + "."
        # A TXT string holds at most 255 bytes; longer values are split into several strings.
        v = self.value
        return " ".join(f'"{v[i : i + 255]}"' for i in range(0, len(v), 255))

    def zone_line(self) -> str:
        return f"{self.name}. IN {self.kind} {self.zone_value()}"

    def public(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "name": self.name,
            "type": self.kind,
            "value": self.value,
            "what": self.what,
        }
        if self.suggestion:
            shown["suggestion"] = True
        return shown


@dataclass(frozen=True)
class Check:
    what: str  # "dkim s=SELECTOR", "return path", "spf", "mx"
    name: str  # the name looked up
    state: str  # OK, MISSING or WRONG
    found: str
    publish: Record  # what to publish so that the check passes

    @property
    def ok(self) -> bool:
        return self.state == OK

    @property
    def expected(self) -> str:
        """The value to publish (the CNAME check's with its type, as before)."""
        if self.publish.kind == "CNAME":
            return f"CNAME {self.publish.value}"
        return self.publish.value

    def public(self) -> dict[str, object]:
        return {
            "what": self.what,
            "name": self.name,
            "state": self.state,
            "found": self.found,
            "publish": self.publish.public(),
        }


def _host(name: str) -> str:
    return name.strip().lower().rstrip(".")


def bounce_host(domain: Domain, settings: Settings) -> str:
    """The domain of the bounce address bounces+TOKEN@HOST mail sent as `domain` gets once
    its records verify: its return-path subdomain, else the node's bounce domain."""
    return domain.return_path or settings.bounce_domain


def relay_records_at(domain: Domain, settings: Settings) -> str:
    """Where the bounce host's SPF and MX records live: the relay's host name when the
    return-path subdomain is a CNAME to it (a CNAME can have no other record beside it),
    else the bounce host itself."""
    return _host(settings.hostname) if domain.return_path else bounce_host(domain, settings)


def spf_value(settings: Settings) -> str:
    include = settings.domains.spf_include
    mechanism = f"include:{_host(include)}" if include else f"a:{_host(settings.hostname)}"
    return f"v=spf1 {mechanism} -all"


def dmarc_value(settings: Settings) -> str:
    rua = settings.domains.dmarc_rua
    return "v=DMARC1; p=none" + (f"; rua=mailto:{rua.removeprefix('mailto:')}" if rua else "")


def dkim_record(domain: str, key: DkimKey) -> Record:
    """The TXT record that publishes `key` for `domain`."""
    return Record(key.dns_name(domain), "TXT", key.dns_value(), f"dkim s={key.selector}")


def records(domain: Domain, settings: Settings) -> list[Record]:
    """Every record `domain` needs, in the order `domains dns` prints them, then the DMARC
    suggestion."""
    hostname = _host(settings.hostname)
    out = [dkim_record(domain.name, k) for k in (*domain.dkim, *domain.dkim_next)]
    if domain.return_path:
        out.append(Record(domain.return_path, "CNAME", hostname, "return path"))
    at = relay_records_at(domain, settings)
    out.append(Record(at, "TXT", spf_value(settings), "spf"))
    out.append(Record(at, "MX", f"{MX_PREFERENCE} {hostname}", "mx"))
    out.append(
        Record(f"_dmarc.{domain.name}", "TXT", dmarc_value(settings), "dmarc", suggestion=True)
    )
    return out


def follow(name: str, kind: str, resolve: Resolve, hops: int = 8) -> list[str]:
    """The `kind` records of `name`, following a CNAME chain (at most `hops` links) when the
    answer itself does not (a recursive resolver does; an authoritative server may not)."""
    name = _host(name)
    for _ in range(hops):
        found = resolve(name, kind)
        if found:
            return found
        targets = resolve(name, "CNAME")
        if not targets:
            return []
        name = _host(targets[0])
    return []


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())
    return tags


def check_dkim(domain: str, key: DkimKey, resolve: Resolve) -> Check:
    """Whether SELECTOR._domainkey.DOMAIN publishes exactly this key."""
    publish = dkim_record(domain, key)
    name, what = publish.name, publish.what
    found_records = resolve(name, "TXT")
    for record in found_records:
        tags = _tags(record)
        if (
            tags.get("p") == key.public_key
            and tags.get("k", "rsa") == key.key_type
            and tags.get("v", "DKIM1") == "DKIM1"
        ):
            return Check(what, name, OK, "the key", publish)
    if not found_records:
        return Check(what, name, MISSING, "no TXT record", publish)
    return Check(what, name, WRONG, "a different key: " + found_records[0][:60] + "...", publish)


def check_return_path(return_path: str, hostname: str, resolve: Resolve) -> Check:
    """Whether the return-path subdomain leads to this relay (CNAME, else MX)."""
    hostname = _host(hostname)
    publish = Record(return_path, "CNAME", hostname, "return path")
    cnames = [_host(c) for c in resolve(return_path, "CNAME")]
    if hostname in cnames:
        return Check("return path", return_path, OK, f"CNAME {hostname}", publish)
    exchanges = [_host(m) for m in resolve(return_path, "MX")]
    if hostname in exchanges:
        return Check("return path", return_path, OK, f"MX {hostname}", publish)
    if cnames:
        return Check("return path", return_path, WRONG, f"CNAME {cnames[0]}", publish)
    if exchanges:
        return Check("return path", return_path, WRONG, f"MX {exchanges[0]}", publish)
    return Check("return path", return_path, MISSING, "no CNAME or MX record", publish)


def check_mx(host: str, settings: Settings, publish_at: str, resolve: Resolve) -> Check:
    """Whether mail to the bounce host reaches this relay: its MX (through a CNAME, the
    target's) names the relay's host name."""
    hostname = _host(settings.hostname)
    publish = Record(publish_at, "MX", f"{MX_PREFERENCE} {hostname}", "mx")
    exchanges = [_host(m) for m in follow(host, "MX", resolve)]
    if hostname in exchanges:
        return Check("mx", host, OK, f"MX {hostname}", publish)
    if exchanges:
        return Check("mx", host, WRONG, "MX " + ", ".join(exchanges[:3]), publish)
    return Check("mx", host, MISSING, "no MX record", publish)


def check_spf(host: str, settings: Settings, publish_at: str, resolve: Resolve) -> Check:
    """Whether the bounce host's SPF record lets the relay send as bounces+TOKEN@host."""
    publish = Record(publish_at, "TXT", spf_value(settings), "spf")
    found = [r for r in follow(host, "TXT", resolve) if _is_spf(r)]
    if not found:
        return Check("spf", host, MISSING, "no v=spf1 record", publish)
    if len(found) > 1:
        return Check(
            "spf", host, WRONG, f"{len(found)} v=spf1 records (one at most is allowed)", publish
        )
    shown = f'"{found[0][:120]}"'
    hostname = _host(settings.hostname)
    addresses = [*follow(hostname, "A", resolve), *follow(hostname, "AAAA", resolve)]
    if not addresses:
        if _names_relay(found[0], settings):
            return Check("spf", host, OK, shown, publish)
        return Check(
            "spf",
            host,
            WRONG,
            f"{shown}, which does not name the relay (and {hostname} has no address to "
            "test it with)",
            publish,
        )
    for address in addresses:
        result, why = Spf(resolve).check_host(address, host)
        if result != "pass":
            because = f": {why}" if why else ""
            return Check(
                "spf",
                host,
                WRONG,
                f"{shown}, which gives {result} for the relay's address {address}{because}",
                publish,
            )
    return Check("spf", host, OK, shown, publish)


def check_bounce_host(domain: Domain, settings: Settings, resolve: Resolve) -> list[Check]:
    """The SPF and MX checks of the domain's bounce host."""
    host = bounce_host(domain, settings)
    at = relay_records_at(domain, settings)
    return [check_spf(host, settings, at, resolve), check_mx(host, settings, at, resolve)]


# -- SPF (RFC 7208) ------------------------------------------------------------------------


def _is_spf(record: str) -> bool:
    return record.lower() == "v=spf1" or record.lower().startswith("v=spf1 ")


def _names_relay(record: str, settings: Settings) -> bool:
    wanted = {f"a:{_host(settings.hostname)}"}
    if settings.domains.spf_include:
        wanted.add(f"include:{_host(settings.domains.spf_include)}")
    return any(term.lower().lstrip("+").rstrip(".") in wanted for term in record.split()[1:])


class SpfError(Exception):
    """A permanent error of the record (RFC 7208 permerror): its text says what."""


_MECHANISM = re.compile(
    r"^(?P<q>[-+~?]?)(?P<name>all|include|a|mx|ptr|ip4|ip6|exists)"
    r"(?::(?P<arg>[^/]+))?(?P<cidr>/\d+(?://\d+)?|//\d+)?$",
    re.I,
)
_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral", "": "pass"}


class Spf:
    """One check_host() evaluation; its counters span the includes and redirects, as the
    RFC's limits do."""

    def __init__(self, resolve: Resolve) -> None:
        self.resolve = resolve
        self.lookups = 0
        self.voids = 0

    def check_host(self, ip: str, domain: str) -> tuple[str, str]:
        """(result, why): pass, fail, softfail, neutral, none or permerror."""
        try:
            return self._evaluate(ipaddress.ip_address(ip), _host(domain), 0), ""
        except SpfError as exc:
            return "permerror", str(exc)

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > SPF_LOOKUP_LIMIT:
            raise SpfError(f"more than {SPF_LOOKUP_LIMIT} DNS-querying terms (RFC 7208 4.6.4)")

    def _query(self, name: str, kind: str) -> list[str]:
        found = follow(name, kind, self.resolve)
        if not found:
            self.voids += 1
            if self.voids > SPF_VOID_LIMIT:
                raise SpfError(f"more than {SPF_VOID_LIMIT} look-ups found nothing")
        return found

    def _evaluate(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, domain: str, depth: int
    ) -> str:
        if depth > SPF_LOOKUP_LIMIT:
            raise SpfError("includes nested too deep")
        found = [r for r in follow(domain, "TXT", self.resolve) if _is_spf(r)]
        if not found:
            return "none"
        if len(found) > 1:
            raise SpfError(f"{domain} has {len(found)} v=spf1 records")
        redirect = ""
        for term in found[0].split()[1:]:
            name, sep, value = term.partition("=")
            if sep and re.match(r"^[a-z][a-z0-9_.-]*$", name, re.I):
                if name.lower() == "redirect":
                    redirect = value
                continue  # exp= and unknown modifiers
            match = _MECHANISM.match(term)
            if match is None:
                raise SpfError(f"{domain}: unknown term {term!r}")
            if self._matches(match, ip, domain, depth):
                return _RESULTS[match["q"]]
        if redirect:
            self._count()
            result = self._evaluate(ip, self._target(redirect, ip, domain), depth + 1)
            if result == "none":
                raise SpfError(f"redirect={redirect} has no SPF record")
            return result
        return "neutral"

    def _matches(
        self,
        m: re.Match[str],
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        domain: str,
        depth: int,
    ) -> bool:
        kind = m["name"].lower()
        arg = m["arg"]
        target = self._target(arg, ip, domain) if arg else domain
        cidr4, cidr6 = _cidrs(m["cidr"] or "")
        if kind in ("a", "mx") and (cidr4 > 32 or cidr6 > 128):
            raise SpfError(f"{m.group(0)}: a prefix length beyond 32 (IPv4) or 128 (IPv6)")
        if kind == "all":
            return True
        if kind in ("ip4", "ip6"):
            if not arg:
                raise SpfError(f"{kind} without a network")
            try:
                network = ipaddress.ip_network(arg + (m["cidr"] or ""), strict=False)
            except ValueError:
                raise SpfError(f"{kind}:{arg}{m['cidr'] or ''} is not a network") from None
            return ip.version == network.version and ip in network
        self._count()
        if kind == "include":
            if not arg:
                raise SpfError("include without a domain")
            result = self._evaluate(ip, target, depth + 1)
            if result == "none":
                raise SpfError(f"include:{target} has no SPF record")
            return result == "pass"
        if kind == "a":
            return _in(ip, self._addresses(target, ip), cidr4, cidr6)
        if kind == "mx":
            exchanges = self._query(target, "MX")
            if len(exchanges) > SPF_MX_LIMIT:
                raise SpfError(f"{target} has more than {SPF_MX_LIMIT} MX records (RFC 7208 4.6.4)")
            return any(_in(ip, self._addresses(x, ip), cidr4, cidr6) for x in exchanges)
        if kind == "exists":
            return bool(self._query(target, "A"))
        return False  # ptr: deprecated (RFC 7208 5.5); never a match here

    def _addresses(self, name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
        return self._query(name, "A" if ip.version == 4 else "AAAA")

    def _target(
        self, spec: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, domain: str
    ) -> str:
        """The name a domain-spec names, once expanded: a valid DNS name (RFC 7208 4.8)."""
        name = _host(self._expand(spec, ip, domain))
        labels = name.split(".")
        if any(not 0 < len(label) <= DNS_LABEL_LIMIT for label in labels):
            raise SpfError(
                f"{spec!r} expands to {name[:80]!r}, not a domain name (labels of 1 to "
                f"{DNS_LABEL_LIMIT} characters)"
            )
        while len(name) > DNS_NAME_LIMIT:  # RFC 7208 4.8: drop labels at the left
            labels.pop(0)
            name = ".".join(labels)
        return name

    def _expand(
        self, spec: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, domain: str
    ) -> str:
        """The macros of RFC 7208 7 that a domain-spec may hold, for a bounce address."""

        def letter(code: str) -> str:
            if code in "dho":
                return domain
            if code == "s":
                return f"bounces@{domain}"
            if code == "l":
                return "bounces"
            if code == "i":
                if ip.version == 4:
                    return str(ip)
                return ".".join(ip.exploded.replace(":", ""))
            if code == "v":
                return "in-addr" if ip.version == 4 else "ip6"
            if code == "p":
                return "unknown"  # RFC 7208 7.3: ptr is not evaluated here
            raise SpfError(f"macro %{{{code}}} cannot be used in a domain-spec")

        def macro(match: re.Match[str]) -> str:
            text = match.group(0)
            if text == "%%":
                return "%"
            if text == "%_":
                return " "
            if text == "%-":
                return "%20"
            code, digits, reverse, delimiters = match.group(1, 2, 3, 4)
            if digits and int(digits) == 0:
                raise SpfError(f"{text}: the number of parts must not be zero (RFC 7208 7.3)")
            parts = re.split("[" + re.escape(delimiters or ".") + "]", letter(code.lower()))
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits) :]
            return ".".join(parts)

        expanded = re.sub(r"%\{([a-z])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-", macro, spec, flags=re.I)
        if "%" in expanded:
            raise SpfError(f"{spec!r} holds a malformed macro")
        return expanded


def _cidrs(text: str) -> tuple[int, int]:
    four, _, six = text.partition("//")
    return int(four.lstrip("/") or 32), int(six or 128)


def _in(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, addresses: list[str], cidr4: int, cidr6: int
) -> bool:
    for address in addresses:
        try:
            network = ipaddress.ip_network(
                f"{address}/{cidr4 if ip.version == 4 else cidr6}", strict=False
            )
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


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
        except (dns.resolver.NXDOMAIN, dns.exception.SyntaxError, dns.name.NameTooLong):
            return []  # no such name, or a name DNS cannot hold (foo..bar, a long label)
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL everywhere, ...
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


@dataclass(frozen=True)
class Verification:
    """What verify() found and changed: every check, and a sentence per change."""

    domain: str
    checks: list[Check]
    changes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def public(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "ok": self.ok,
            "checks": [c.public() for c in self.checks],
            "changes": self.changes,
        }


def delete_key_files(keys: tuple[DkimKey, ...]) -> None:
    """Delete the key files of keys made before keys were kept in Redis (those have none)."""
    for key in keys:
        if key.key_path:
            Path(key.key_path).unlink(missing_ok=True)


def verify(domains: Domains, name: str, settings: Settings, resolve: Resolve) -> Verification:
    """Look the domain's records up (DKIM, the return path, the SPF and MX of the bounce
    address's domain) and switch on what verifies: signing, the return path, a rotated key
    (whose old key is then retired). NotFound for an unknown domain; TemporaryFailure when
    DNS does not answer."""
    record = domains.get(name)
    current = [check_dkim(record.name, k, resolve) for k in record.dkim]
    pending = [check_dkim(record.name, k, resolve) for k in record.dkim_next]
    return_path = (
        check_return_path(record.return_path, settings.hostname, resolve)
        if record.return_path
        else None
    )
    bounce = check_bounce_host(record, settings, resolve)
    changes: dict[str, object] = {}
    retired: tuple[DkimKey, ...] = ()
    if pending and all(c.ok for c in pending):
        changes.update(dkim=record.dkim_next, dkim_next=(), dkim_active=True)
        retired = record.dkim
    elif current and all(c.ok for c in current) and not record.dkim_active:
        changes["dkim_active"] = True
    if return_path is not None and return_path.ok and not record.return_path_active:
        changes["return_path_active"] = True
    checks = [*current, *pending, *([return_path] if return_path else []), *bounce]
    if all(c.ok for c in checks):
        changes["verified_at"] = time.time()
    if changes:
        domains.update(record.name, **changes)
        delete_key_files(retired)
    notes = []
    if retired:
        notes.append(
            f"now signing with s={record.dkim_next[0].selector}; "
            "keep the old selector's record published for a few days"
        )
    if "dkim_active" in changes and not retired:
        notes.append(f"signing for {record.name} is on")
    if "return_path_active" in changes:
        notes.append(f"bounces for {record.name} now go to {record.return_path}")
    return Verification(record.name, checks, notes)
