"""DNS checks of `domains verify`: against a dict, and dnspython against a loopback server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from txmail import dnscheck
from txmail.accounts.domains import ED25519, RSA, DkimKey, Domain
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail_testing.harness import free_port
from txmail_testing.loopback_dns import LoopbackDns

RSA_KEY = DkimKey("s1", RSA, "/k/s1.pem", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A" + "A" * 300)
ED_KEY = DkimKey("s1e", ED25519, "/k/s1e.pem", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")


def table(records: dict[tuple[str, str], list[str]]) -> dnscheck.Resolve:
    return lambda name, kind: records.get((name, kind), [])


def test_dkim_record_with_our_key_passes() -> None:
    published = {
        ("s1._domainkey.acme.example", "TXT"): [
            "v=DKIM1; k=rsa; p=" + RSA_KEY.public_key[:100] + " " + RSA_KEY.public_key[100:]
        ]
    }
    check = dnscheck.check_dkim("acme.example", RSA_KEY, table(published))
    assert check.ok and check.name == "s1._domainkey.acme.example"


@pytest.mark.parametrize(
    "records", [[], ["v=DKIM1; k=rsa; p=AAAA"], ["v=DKIM1; k=ed25519; p=" + RSA_KEY.public_key]]
)
def test_missing_or_other_key_fails(records: list[str]) -> None:
    check = dnscheck.check_dkim(
        "acme.example", RSA_KEY, table({("s1._domainkey.acme.example", "TXT"): records})
    )
    assert not check.ok and check.expected == RSA_KEY.dns_value()


def test_return_path_by_cname_or_mx() -> None:
    by_cname = table({("mta.acme.example", "CNAME"): ["MTA.Relay.example"]})
    by_mx = table({("mta.acme.example", "MX"): ["mta.relay.example"]})
    wrong = table({("mta.acme.example", "CNAME"): ["elsewhere.example"]})
    assert dnscheck.check_return_path("mta.acme.example", "mta.relay.example.", by_cname).ok
    assert dnscheck.check_return_path("mta.acme.example", "mta.relay.example", by_mx).ok
    failed = dnscheck.check_return_path("mta.acme.example", "mta.relay.example", wrong)
    assert not failed.ok and failed.found == "CNAME elsewhere.example"
    assert not dnscheck.check_return_path("mta.acme.example", "mta.relay.example", table({})).ok


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    yield server
    server.stop()


def test_dnspython_resolver_against_a_loopback_server(dns_server: LoopbackDns) -> None:
    for key in (RSA_KEY, ED_KEY):
        dns_server.set_txt(key.dns_name("acme.example"), key.dns_value())  # long: split strings
    dns_server.set("mta.acme.example", "CNAME", "mta.relay.example.")
    resolve = dnscheck.resolver([f"127.0.0.1:{dns_server.port}"], timeout=3)
    assert dnscheck.check_dkim("acme.example", RSA_KEY, resolve).ok
    assert dnscheck.check_dkim("acme.example", ED_KEY, resolve).ok
    assert dnscheck.check_return_path("mta.acme.example", "mta.relay.example", resolve).ok
    assert resolve("nothing.acme.example", "TXT") == []


def test_silent_dns_is_a_temporary_failure() -> None:
    resolve = dnscheck.resolver([f"127.0.0.1:{free_port()}"], timeout=0.5)
    with pytest.raises(TemporaryFailure, match="DNS did not answer"):
        resolve("s1._domainkey.acme.example", "TXT")


# -- the bounce address's SPF and MX ---------------------------------------------------------

RELAY = "mta.relay.example"


def relay_settings(**domains: str) -> Settings:
    base = Settings(hostname=RELAY, bounce_domain="bounces.relay.example")
    return dataclasses.replace(base, domains=dataclasses.replace(base.domains, **domains))


DOMAIN = Domain("acme.example", "acme", (RSA_KEY,), return_path="mta.acme.example")


def published(**extra: list[str]) -> dict[tuple[str, str], list[str]]:
    """What `domains dns` asks for, published, with the relay at 192.0.2.10."""
    records = {
        ("mta.acme.example", "CNAME"): [RELAY],
        (RELAY, "TXT"): [f"v=spf1 a:{RELAY} -all"],
        (RELAY, "MX"): [RELAY],
        (RELAY, "A"): ["192.0.2.10"],
    }
    for key, value in extra.items():
        name, kind = key.rsplit("_", 1)
        records[(name.replace("__", "."), kind)] = value
    return records


def test_records_name_every_record_the_readme_promises() -> None:
    shown = [
        (r.name, r.kind, r.value, r.suggestion) for r in dnscheck.records(DOMAIN, relay_settings())
    ]
    assert shown == [
        ("s1._domainkey.acme.example", "TXT", RSA_KEY.dns_value(), False),
        ("mta.acme.example", "CNAME", RELAY, False),
        (RELAY, "TXT", f"v=spf1 a:{RELAY} -all", False),
        (RELAY, "MX", f"10 {RELAY}", False),
        ("_dmarc.acme.example", "TXT", "v=DMARC1; p=none", True),
    ]
    settings = relay_settings(spf_include="_spf.relay.example", dmarc_rua="dmarc@acme.example")
    without = dataclasses.replace(DOMAIN, return_path="")
    spf, mx, dmarc = dnscheck.records(without, settings)[1:]
    assert (spf.name, spf.value) == (
        "bounces.relay.example",
        "v=spf1 include:_spf.relay.example -all",
    )
    assert (mx.name, mx.value) == ("bounces.relay.example", f"10 {RELAY}")
    assert dmarc.value == "v=DMARC1; p=none; rua=mailto:dmarc@acme.example"


def bounce_checks(records: dict[tuple[str, str], list[str]], **settings: str) -> dict[str, str]:
    checks = dnscheck.check_bounce_host(DOMAIN, relay_settings(**settings), table(records))
    return {c.what: f"{c.state} {c.found}" for c in checks}


def test_spf_and_mx_through_the_cname() -> None:
    assert bounce_checks(published()) == {
        "spf": f'ok "v=spf1 a:{RELAY} -all"',
        "mx": f"ok MX {RELAY}",
    }


@pytest.mark.parametrize(
    "spf",
    [
        "v=spf1 ip4:192.0.2.0/24 -all",
        "v=spf1 mx -all",
        "v=spf1 a -all",  # the current domain, mta.acme.example, is the relay through the CNAME
        "v=spf1 include:_spf.relay.example -all",
        "v=spf1 redirect=_spf.relay.example",
        "v=spf1 exists:%{i}.allow.relay.example -all",
        "v=spf1 -ip4:198.51.100.1 ?exists:nothing.example +a:mta.relay.example ~all",
    ],
)
def test_spf_records_that_let_the_relay_send(spf: str) -> None:
    records = published(mta__relay__example_TXT=[spf])
    records[("_spf.relay.example", "TXT")] = ["v=spf1 ip4:192.0.2.10 -all"]
    records[("192.0.2.10.allow.relay.example", "A")] = ["127.0.0.2"]
    assert bounce_checks(records)["spf"].startswith("ok "), bounce_checks(records)


@pytest.mark.parametrize(
    ("spf", "found"),
    [
        ([], "missing no v=spf1 record"),
        (["google-site-verification=x"], "missing no v=spf1 record"),
        (["v=spf1 -all", "v=spf1 a -all"], "wrong 2 v=spf1 records"),
        (["v=spf1 ip4:198.51.100.0/24 -all"], "for the relay's address 192.0.2.10"),
        (["v=spf1 ip4:198.51.100.0/24 ~all"], "gives softfail"),
        (["v=spf1 ip4:198.51.100.0/24"], "gives neutral"),
        (["v=spf1 -a:mta.relay.example +all"], "gives fail"),
        (["v=spf1 include:nospf.example -all"], "include:nospf.example has no SPF record"),
        (["v=spf1 bogus:x -all"], "unknown term"),
        ([f"v=spf1 {' '.join(f'a:h{i}.example' for i in range(11))} a -all"], "more than 10"),
    ],
)
def test_spf_records_that_do_not(spf: list[str], found: str) -> None:
    records = published(mta__relay__example_TXT=spf)
    for i in range(11):
        records[(f"h{i}.example", "A")] = ["198.51.100.9"]
    got = bounce_checks(records)["spf"]
    assert found in got and not got.startswith("ok"), got


def test_the_ten_lookup_limit_counts_across_includes() -> None:
    records = published(mta__relay__example_TXT=["v=spf1 include:l0.example -all"])
    for i in range(12):
        records[(f"l{i}.example", "TXT")] = [f"v=spf1 include:l{i + 1}.example"]
    records[("l12.example", "TXT")] = ["v=spf1 ip4:192.0.2.10"]
    assert "more than 10 DNS-querying terms" in bounce_checks(records)["spf"]


def test_spf_without_a_relay_address_needs_the_relay_named() -> None:
    records = published()
    del records[(RELAY, "A")]
    assert bounce_checks(records)["spf"].startswith("ok")
    records[(RELAY, "TXT")] = ["v=spf1 ip4:192.0.2.10 -all"]
    assert "does not name the relay" in bounce_checks(records)["spf"]
    records[(RELAY, "TXT")] = ["v=spf1 include:_spf.relay.example -all"]
    assert bounce_checks(records, spf_include="_spf.relay.example")["spf"].startswith("ok")


def test_mx_missing_or_elsewhere() -> None:
    records = published()
    del records[(RELAY, "MX")]
    assert bounce_checks(records)["mx"] == "missing no MX record"
    records[(RELAY, "MX")] = ["mx.elsewhere.example"]
    assert bounce_checks(records)["mx"] == "wrong MX mx.elsewhere.example"


# -- malformed records: a permerror, never an exception ----------------------------------------


def test_a_malformed_name_in_spf_is_a_permerror_through_dnspython(dns_server: LoopbackDns) -> None:
    """`include:%{d}..bad` made dnspython raise EmptyLabel, which stopped `domains verify`."""
    resolve = dnscheck.resolver([f"127.0.0.1:{dns_server.port}"], timeout=3)
    dns_server.set_txt("bounces.example", "v=spf1 include:%{d}..bad -all")
    assert dnscheck.Spf(resolve).check_host("192.0.2.1", "bounces.example") == (
        "permerror",
        "'%{d}..bad' expands to 'bounces.example..bad', not a domain name (labels of 1 to 63 "
        "characters)",
    )
    long_label = "x" * 64
    dns_server.set_txt("bounces.example", f"v=spf1 a:{long_label}.example -all")
    result, why = dnscheck.Spf(resolve).check_host("192.0.2.1", "bounces.example")
    assert result == "permerror" and "not a domain name" in why


def test_names_dns_cannot_hold_have_no_records(dns_server: LoopbackDns) -> None:
    resolve = dnscheck.resolver([f"127.0.0.1:{dns_server.port}"], timeout=3)
    for name in ("foo..example", "x" * 64 + ".example", ".".join(["x" * 60] * 5)):
        assert resolve(name, "TXT") == [], name


def recording(records: dict[tuple[str, str], list[str]]) -> tuple[dnscheck.Resolve, list[str]]:
    asked: list[str] = []

    def resolve(name: str, kind: str) -> list[str]:
        asked.append(name)
        return records.get((name, kind), [])

    return resolve, asked


def test_a_long_expansion_loses_labels_at_the_left() -> None:
    """RFC 7208 4.8: over 253 characters, whole labels go from the left."""
    tail = ".".join(["y" * 61] * 4)  # 247 characters: with 192.0.2.1. in front, 257
    resolve, asked = recording({("bounces.example", "TXT"): [f"v=spf1 exists:%{{i}}.{tail} -all"]})
    assert dnscheck.Spf(resolve).check_host("192.0.2.1", "bounces.example")[0] == "fail"
    queried = [name for name in asked if name.endswith(tail)]
    assert queried and all(name == f"0.2.1.{tail}" for name in queried), queried


@pytest.mark.parametrize(
    ("spf", "why"),
    [
        ("v=spf1 exists:%{d0}.example -all", "must not be zero"),
        ("v=spf1 a/33 -all", "prefix length"),
        ("v=spf1 a:mta.relay.example//129 -all", "prefix length"),
        ("v=spf1 mx/40 -all", "prefix length"),
        ("v=spf1 mx:many.example -all", "more than 10 MX records"),
    ],
)
def test_evaluator_permerrors(spf: str, why: str) -> None:
    records = published(mta__relay__example_TXT=[spf])
    records[("many.example", "MX")] = [f"mx{i}.many.example" for i in range(11)]
    records[("mx0.many.example", "A")] = ["192.0.2.10"]
    got = bounce_checks(records)["spf"]
    assert "gives permerror" in got and why in got, got


def test_ten_mx_records_are_allowed() -> None:
    records = published(mta__relay__example_TXT=["v=spf1 mx:many.example -all"])
    records[("many.example", "MX")] = [f"mx{i}.many.example" for i in range(10)]
    records[("mx0.many.example", "A")] = ["192.0.2.10"]
    assert bounce_checks(records)["spf"].startswith("ok "), bounce_checks(records)


def test_the_p_macro_is_unknown() -> None:
    """RFC 7208 7.3: %{p} is legal in a domain-spec; without a ptr lookup it is "unknown"."""
    resolve, asked = recording(
        {
            ("bounces.example", "TXT"): ["v=spf1 exists:%{p}.allow.example -all"],
            ("unknown.allow.example", "A"): ["127.0.0.2"],
        }
    )
    assert dnscheck.Spf(resolve).check_host("192.0.2.1", "bounces.example") == ("pass", "")
    assert "unknown.allow.example" in asked


def test_dkim_record_is_the_one_records_lists() -> None:
    assert dnscheck.records(DOMAIN, relay_settings())[0] == dnscheck.dkim_record(
        "acme.example", RSA_KEY
    )


def test_verify_switches_signing_on_once_its_record_is_found(client: object) -> None:
    """dnscheck.verify, which `domains verify` and the console's domains page share."""
    import uuid

    from txmail.accounts.domains import Domains
    from txmail.accounts.records import Accounts
    from txmail.store import Keys

    keys = Keys(f"v{uuid.uuid4().hex[:8]}:")
    Accounts(client, keys).add("acme", ["acme.example"], "password-123456")  # type: ignore[arg-type]
    domains = Domains(client, keys)  # type: ignore[arg-type]
    domains.add(Domain("acme.example", "acme", dkim=(RSA_KEY,)))
    settings = Settings(hostname="mta.relay.example")
    missing = dnscheck.verify(domains, "acme.example", settings, table({}))
    assert not missing.ok and missing.changes == []
    assert not domains.get("acme.example").dkim_active
    published = {("s1._domainkey.acme.example", "TXT"): [RSA_KEY.dns_value()]}
    found = dnscheck.verify(domains, "acme.example", settings, table(published))
    assert found.changes == ["signing for acme.example is on"]
    assert domains.get("acme.example").dkim_active
    assert found.public()["domain"] == "acme.example"
