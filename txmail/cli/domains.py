"""`txmail domains`: sending domains, their DKIM keys and return-path subdomains.

`domains add DOMAIN --account NAME` gives the account the domain (the same HSETNX ownership as
`accounts add --domain`, so no account can take another's domain), creates its DKIM key(s), kept
in the domain's record in Redis so that every node signs with them, and names its
return-path subdomain (mta.DOMAIN by default).
It prints the DNS records to publish (dnscheck.records(): DKIM, the return-path CNAME, the SPF
and MX of the bounce address's domain, a DMARC suggestion). Signing and the return-path
subdomain are switched on when their records verify (`domains verify`, with dnspython, which
also checks SPF and MX and prints ok/missing/wrong for each), or at once with --force-sign /
--force-return-path. `domains rotate-key` makes a new key under a new selector; it replaces the
old one once `domains verify` finds its record (or at once with --force).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from txmail import dnscheck, store
from txmail.accounts.domains import RSA, DkimKey, Domain, Domains, default_return_path
from txmail.accounts.records import check_domain
from txmail.cli.confirm import confirm, yes_option
from txmail.config import Settings
from txmail.errors import Conflict, UsageError
from txmail.milter import dkim


def _settings(obj: object) -> Settings:
    return obj.settings  # type: ignore[attr-defined]


def _domains(settings: Settings) -> Domains:
    return Domains(store.connect(settings), store.Keys(settings.redis.prefix))


def _print_records(domain: Domain, settings: Settings) -> None:
    """The records in zone-file form, each group after a comment that says what it is for."""
    hostname = settings.hostname
    bounce_host = dnscheck.bounce_host(domain, settings)
    comments = {
        "dkim": "; DKIM: the key that signs mail sent as " + domain.name,
        "return path": (
            f"; return path: bounces go to bounces+TOKEN@{bounce_host}; the CNAME gives it "
            f"the MX and SPF of {hostname}"
        ),
        "spf": (
            f"; SPF and MX of {dnscheck.relay_records_at(domain, settings)} (once per relay"
            " when it is the relay's host name): the bounce address passes SPF and bounces"
            " come back here"
            if domain.return_path
            else f"; SPF and MX of {bounce_host}, the node's bounce domain (once per relay):"
            " the bounce address passes SPF and bounces come back here"
        ),
        "dmarc": (
            "; DMARC, a suggestion (not checked): p=none only asks for reports; tighten it "
            "once every sender of " + domain.name + " passes"
        ),
    }
    for record in dnscheck.records(domain, settings):
        group = record.what.split()[0] if record.what.startswith("dkim") else record.what
        comment = comments.pop(group, None)
        if comment:
            click.echo(comment)
        click.echo(record.zone_line())


@click.group("domains")
def domains() -> None:
    """Manage sending domains: DKIM keys and return-path subdomains."""


@domains.command("add")
@click.argument("domain")
@click.option("--account", required=True, help="The account that sends as DOMAIN.")
@click.option(
    "--selector",
    default=None,
    help="DKIM selector (default: txYYYYMMDD). An Ed25519 key gets SELECTOR + 'e'.",
)
@click.option(
    "--bits",
    type=int,
    default=None,
    help="RSA key size (default: domains.dkim_key_bits, at least 2048).",
)
@click.option(
    "--ed25519/--no-ed25519",
    default=None,
    help="Also create an Ed25519 key (default: domains.dkim_ed25519).",
)
@click.option(
    "--return-path",
    "return_path",
    default=None,
    metavar="HOST",
    help="Return-path subdomain (default: PREFIX.DOMAIN, PREFIX from domains.return_path_prefix).",
)
@click.option(
    "--no-return-path",
    is_flag=True,
    help="No return-path subdomain: bounces go to the node's bounce domain.",
)
@click.option(
    "--force-sign",
    is_flag=True,
    help="Sign at once, without waiting for the DKIM record to verify.",
)
@click.option(
    "--force-return-path",
    is_flag=True,
    help="Use the return-path subdomain at once, without waiting for DNS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def add(
    obj: object,
    domain: str,
    account: str,
    selector: str | None,
    bits: int | None,
    ed25519: bool | None,
    return_path: str | None,
    no_return_path: bool,
    force_sign: bool,
    force_return_path: bool,
    as_json: bool,
) -> None:
    """Set up DOMAIN for ACCOUNT: DKIM key(s) and a return-path subdomain."""
    settings = _settings(obj)
    name = check_domain(domain)
    if no_return_path and (return_path or force_return_path):
        raise UsageError(
            "--no-return-path cannot be combined with --return-path or --force-return-path"
        )
    if bits is not None and bits < dkim.MIN_RSA_BITS:
        raise UsageError(f"--bits must be {dkim.MIN_RSA_BITS} or more")
    if selector is not None:
        try:
            dkim.check_selector(selector)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    rp = "" if no_return_path else check_domain(return_path or default_return_path(name, settings))
    store_ = _domains(settings)
    owner = store_.accounts.owner_of(name)
    if owner is not None and owner != account:
        raise Conflict(f"domain {name} belongs to account {owner!r} already")
    store_.accounts.get(account)
    if store_.find(name) is not None:
        raise Conflict(f"domain {name} is set up already (see `txmail domains show {name}`)")
    keys = dkim.create_keys(settings, name, selector=selector, with_ed25519=ed25519, bits=bits)
    try:
        record = store_.add(
            Domain(
                name=name,
                account=account,
                dkim=keys,
                dkim_active=force_sign,
                return_path=rp,
                return_path_active=bool(rp) and force_return_path,
            )
        )
    except BaseException:
        dnscheck.delete_key_files(keys)
        raise
    if as_json:
        click.echo(json.dumps(record.public(), indent=2))
        return
    click.echo(f"domain {name} set up for account {account}; publish these DNS records:")
    _print_records(record, settings)
    click.echo(f"signing: {'on' if record.dkim_active else 'off until the DKIM record verifies'}")
    if rp:
        click.echo(
            f"return path: {rp} "
            f"({'in use' if record.return_path_active else 'not used until it resolves'})"
        )


@domains.command("list")
@click.option("--account", default=None, help="Only this account's domains.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(obj: object, account: str | None, as_json: bool) -> None:
    """List the sending domains that are set up."""
    rows = _domains(_settings(obj)).list(account)
    if as_json:
        click.echo(json.dumps([d.public() for d in rows], indent=2))
        return
    for d in rows:
        selectors = ",".join(k.selector for k in d.dkim) or "-"
        click.echo(
            f"{d.name:32} {d.account:20} dkim={'on' if d.dkim_active else 'off':3} "
            f"s={selectors:20} return-path={d.return_path or '-'}"
            f"{'' if d.return_path_active or not d.return_path else ' (off)'}"
        )


@domains.command("show")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: object, domain: str, as_json: bool) -> None:
    """Show one domain and the DNS records it needs."""
    settings = _settings(obj)
    record = _domains(settings).get(domain)
    if as_json:
        click.echo(json.dumps(record.public(), indent=2))
        return
    click.echo(f"domain:      {record.name}")
    click.echo(f"account:     {record.account}")
    click.echo(f"signing:     {'on' if record.dkim_active else 'off'}")
    for key in record.dkim:
        click.echo(
            f"  key:       s={key.selector} a={key.algorithm} "
            f"{key.key_path if not key.private_key else '(in Redis)'}"
        )
    click.echo(
        f"return path: {record.return_path or settings.bounce_domain + ' (node default)'}"
        + ("" if record.return_path_active or not record.return_path else " (off)")
    )
    click.echo("dns records:")
    _print_records(record, settings)


@domains.command("dns")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def dns(obj: object, domain: str, as_json: bool) -> None:
    """Print the DNS records DOMAIN needs, in zone-file form: DKIM, the return-path CNAME,
    the SPF and MX of the bounce address's domain, and a DMARC suggestion."""
    settings = _settings(obj)
    record = _domains(settings).get(domain)
    if as_json:
        click.echo(json.dumps([r.public() for r in dnscheck.records(record, settings)], indent=2))
        return
    _print_records(record, settings)


@domains.command("verify")
@click.argument("domain")
@click.option(
    "--nameserver",
    "nameservers",
    multiple=True,
    metavar="IP[:PORT]",
    help="Ask this DNS server (default: domains.nameservers, else the system's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def verify(obj: object, domain: str, nameservers: tuple[str, ...], as_json: bool) -> None:
    """Look DOMAIN's records up in DNS (DKIM, the return path, the SPF and MX of the bounce
    address's domain); switch on what verifies (signing, the return path, a rotated key).
    Exits 1 while a record is missing or wrong."""
    settings = _settings(obj)
    resolve = dnscheck.resolver(list(nameservers) or list(settings.domains.nameservers))
    found = dnscheck.verify(_domains(settings), domain, settings, resolve)
    if as_json:
        click.echo(json.dumps(found.public(), indent=2))
    else:
        for check in found.checks:
            if check.ok:
                click.echo(f"ok       {check.what:22} {check.name} ({check.found})")
            else:
                click.echo(
                    f"{check.state:8} {check.what:22} {check.name}: found {check.found}; "
                    f"publish {check.publish.zone_line()}"
                )
        for note in found.changes:
            click.echo(note)
    if not found.ok:
        raise click.exceptions.Exit(1)


@domains.command("rotate-key")
@click.argument("domain")
@click.option("--selector", default=None, help="Selector of the new key (default: txYYYYMMDD).")
@click.option("--bits", type=int, default=None, help="RSA key size (default: as configured).")
@click.option(
    "--ed25519/--no-ed25519",
    default=None,
    help="Also an Ed25519 key (default: if the domain has one now).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Sign with the new key at once, without waiting for its DNS record.",
)
@click.pass_obj
def rotate_key(
    obj: object,
    domain: str,
    selector: str | None,
    bits: int | None,
    ed25519: bool | None,
    force: bool,
) -> None:
    """Make a new DKIM key for DOMAIN under a new selector; print its DNS record."""
    settings = _settings(obj)
    store_ = _domains(settings)
    record = store_.get(domain)
    if record.dkim_next and not force:
        raise Conflict(
            f"a rotation of {record.name} is pending (s={record.dkim_next[0].selector}"
            "); publish its record and run `txmail domains verify`, or use --force"
        )
    if bits is not None and bits < dkim.MIN_RSA_BITS:
        raise UsageError(f"--bits must be {dkim.MIN_RSA_BITS} or more")
    taken = {k.selector for k in (*record.dkim, *record.dkim_next)}
    if selector is not None and (selector in taken or selector + "e" in taken):
        raise UsageError(f"selector {selector} is in use by {record.name} already")
    with_ed25519 = any(k.algorithm != RSA for k in record.dkim) if ed25519 is None else ed25519
    try:
        keys = dkim.create_keys(
            settings,
            record.name,
            selector=selector,
            with_ed25519=with_ed25519,
            bits=bits,
            taken=taken,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if force:
        store_.update(record.name, dkim=keys, dkim_next=())
        dnscheck.delete_key_files((*record.dkim, *record.dkim_next))
        click.echo(
            f"now signing {record.name} with s={keys[0].selector} on every node within "
            f"{dkim.REFRESH_SECONDS:.0f} s; keep the record of s="
            f"{','.join(k.selector for k in record.dkim) or '-'} published for a few days "
            "(mail signed before verifies with it) and publish:"
        )
    else:
        store_.update(record.name, dkim_next=keys)
        click.echo(
            f"new key for {record.name} (s={keys[0].selector}); publish this record, "
            "then run `txmail domains verify`:"
        )
    for key in keys:
        click.echo(dnscheck.dkim_record(record.name, key).zone_line())


@domains.command("remove")
@click.argument("domain")
@click.option("--keep-keys", is_flag=True, help="Leave the key files on disk.")
@yes_option
@click.pass_obj
def remove(obj: object, domain: str, keep_keys: bool, yes: bool) -> None:
    """Stop sending as DOMAIN: forget its record and keys and take it from its account
    (asks first, unless --yes)."""
    store_ = _domains(_settings(obj))
    found = store_.get(domain)  # NotFound before asking about a domain that is not there
    confirm(yes, f"remove domain {found.name} of account {found.account} with its DKIM keys")
    record = store_.remove(domain)
    if not keep_keys:
        dnscheck.delete_key_files((*record.dkim, *record.dkim_next))
    click.echo(f"domain {record.name} removed from account {record.account}")


@domains.command("import-keys")
@click.pass_obj
def import_keys(obj: object) -> None:
    """Move DKIM keys that older records keep in files on this node into Redis, so that every
    node signs with them. The files are left where they are."""
    store_ = _domains(_settings(obj))
    moved = 0
    for record in store_.list():
        changes: dict[str, object] = {}
        for field_name in ("dkim", "dkim_next"):
            keys: tuple[DkimKey, ...] = getattr(record, field_name)
            if all(k.private_key or not k.key_path for k in keys):
                continue
            updated = []
            for key in keys:
                if not key.private_key and key.key_path:
                    pem = Path(key.key_path).read_text("ascii")
                    dkim.load_private_pem(pem.encode("ascii"), key.key_path)  # a usable key
                    key = replace(key, private_key=pem)
                    moved += 1
                updated.append(key)
            changes[field_name] = tuple(updated)
        if changes:
            store_.update(record.name, **changes)
            click.echo(f"{record.name}: keys now in Redis")
    click.echo(f"{moved} key(s) moved into Redis")


COMMANDS = [domains]
