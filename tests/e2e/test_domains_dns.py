"""`txmail domains dns` and `domains verify` against a loopback DNS server standing in for the
domain's and the relay's: every record `dns` prints, published, verifies; then one record at a
time missing or wrong (SPF missing, SPF that does not let the relay send, SPF with a malformed
name, the MX missing, the DKIM key wrong), each its line with what to publish, and exit 1."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

from txmail import config
from txmail_testing.harness import RedisServer, Sink, Stack
from txmail_testing.loopback_dns import LoopbackDns

pytestmark = pytest.mark.e2e

RELAY_ADDRESS = "192.0.2.25"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LoopbackDns]:
    server = LoopbackDns().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(sink: Sink, redis_server: RedisServer) -> Iterator[Stack]:
    """A node's configuration and CLI over a real Redis; no daemon needs to run."""
    stack = Stack(relay_port=sink.port, redis_url=redis_server.url, name="domdns")
    try:
        yield stack
    finally:
        stack.close()


def publish(dns: LoopbackDns, records: list[dict[str, str]]) -> None:
    """Publish what `domains dns --json` asks for, as an operator would (not the suggestion)."""
    for record in records:
        if record.get("suggestion"):
            continue
        if record["type"] == "TXT":
            dns.set_txt(record["name"], record["value"])
        else:
            dns.set(record["name"], record["type"], record["value"] + ".")


def test_dns_prints_every_record_and_verify_checks_each(
    node: Stack, dns_server: LoopbackDns
) -> None:
    domain = f"shop{random.getrandbits(32):08x}.example"
    node.txmail("accounts", "add", domain[:12], "--domain", domain, "--generate-password")
    node.txmail("domains", "add", domain, "--account", domain[:12])
    hostname = config.load(node.config).hostname
    records = json.loads(node.txmail("domains", "dns", domain, "--json").stdout)
    [dkim] = [r for r in records if r["what"].startswith("dkim")]
    assert [(r["name"], r["type"], r["value"]) for r in records if r is not dkim] == [
        (f"mta.{domain}", "CNAME", hostname),
        (hostname, "TXT", f"v=spf1 a:{hostname} -all"),
        (hostname, "MX", f"10 {hostname}"),
        (f"_dmarc.{domain}", "TXT", "v=DMARC1; p=none"),
    ]
    assert records[-1]["suggestion"] is True
    zone = node.txmail("domains", "dns", domain).stdout
    assert f'{hostname}. IN TXT "v=spf1 a:{hostname} -all"' in zone
    assert f"{hostname}. IN MX 10 {hostname}." in zone
    assert "; DMARC, a suggestion" in zone

    publish(dns_server, records)
    dns_server.set(hostname, "A", RELAY_ADDRESS)  # SPF is evaluated for the relay's address
    nameserver = ("--nameserver", f"127.0.0.1:{dns_server.port}")

    def verify() -> tuple[int, dict[str, str]]:
        result = node.txmail("domains", "verify", domain, *nameserver, check=False)
        lines = {}
        for line in result.stdout.splitlines():
            state, what = line.split()[:2]
            if state in ("ok", "missing", "wrong"):
                lines[what] = line
        return result.returncode, lines

    code, lines = verify()
    assert code == 0, lines
    assert set(lines) == {"dkim", "return", "spf", "mx"}
    assert all(line.startswith("ok ") for line in lines.values()), lines

    spf_name = (hostname, "TXT")
    spf = dns_server.records.pop(spf_name)
    code, lines = verify()
    assert code == 1 and lines["spf"].startswith("missing  spf"), lines
    assert lines["spf"].endswith(
        f'found no v=spf1 record; publish {hostname}. IN TXT "v=spf1 a:{hostname} -all"'
    )
    assert all(lines[w].startswith("ok ") for w in ("dkim", "return", "mx")), lines

    dns_server.set_txt(hostname, "v=spf1 ip4:198.51.100.0/24 -all")
    code, lines = verify()
    assert code == 1 and lines["spf"].startswith("wrong    spf"), lines
    assert f"gives fail for the relay's address {RELAY_ADDRESS}" in lines["spf"]
    # a name dnspython refuses: once "internal error: EmptyLabel" (exit 70)
    dns_server.set_txt(hostname, "v=spf1 include:%{d}..bad -all")
    code, lines = verify()
    assert code == 1 and lines["spf"].startswith("wrong    spf"), lines
    assert "gives permerror" in lines["spf"] and "not a domain name" in lines["spf"], lines
    dns_server.records[spf_name] = spf

    mx = dns_server.records.pop((hostname, "MX"))
    code, lines = verify()
    assert code == 1 and lines["mx"].startswith("missing  mx"), lines
    assert lines["mx"].endswith(f"found no MX record; publish {hostname}. IN MX 10 {hostname}.")
    dns_server.records[(hostname, "MX")] = mx

    dns_server.set_txt(dkim["name"], "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIB")
    code, lines = verify()
    assert code == 1 and lines["dkim"].startswith("wrong    dkim s="), lines
    assert f"publish {dkim['name']}. IN TXT" in lines["dkim"]
    as_json = json.loads(
        node.txmail("domains", "verify", domain, *nameserver, "--json", check=False).stdout
    )
    assert as_json["ok"] is False
    assert [c["state"] for c in as_json["checks"]] == ["wrong", "ok", "ok", "ok"]
    assert as_json["checks"][0]["publish"]["value"] == dkim["value"]

    publish(dns_server, records)
    assert verify()[0] == 0
