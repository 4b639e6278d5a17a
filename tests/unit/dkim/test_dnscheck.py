"""DNS checks of `domains verify`: against a dict, and dnspython against a loopback server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from txmail import dnscheck
from txmail.accounts.domains import ED25519, RSA, DkimKey
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
