"""txmail doctor's checks, one by one, on files in a temporary folder and on their side effects
passed in (journalctl, a ping, Postfix's parsed configuration, a DNS dict)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import redis

from txmail import config, dnscheck
from txmail.accounts.domains import RSA, DkimKey, Domain
from txmail.errors import ConfigError, TemporaryFailure, TxmailError
from txmail.stack import doctor
from txmail.stack.doctor import Problem, Service
from txmail_testing.loopback_dns import LoopbackDns


def node(tmp_path: Path, **maillog: object) -> config.Settings:
    """A state folder as `txmail init` leaves it: secrets and TLS files, mode 0600."""
    settings = config.Settings(state_dir=str(tmp_path))
    if maillog:
        settings = dataclasses.replace(
            settings, maillog=dataclasses.replace(settings.maillog, **maillog)
        )
    for relative in (
        settings.secrets.bounce_key_file,
        settings.secrets.webhook_key_file,
        settings.secrets.tracking_key_file,
        settings.secrets.console_key_file,
        settings.tls.key_file,
        settings.tls.cert_file,
    ):
        path = settings.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a" * 64 + "\n")
        path.chmod(0o600)
    (tmp_path / "log").mkdir()
    (tmp_path / "log/postfix.log").write_text("")
    return settings


def lines(problems: list[Problem]) -> list[str]:
    return [p.line() for p in problems]


def test_a_healthy_node_has_no_local_problem(tmp_path: Path) -> None:
    settings = node(tmp_path)
    assert doctor.check_keys(settings) == []
    assert doctor.check_log(settings) == []


def test_secret_readable_by_others(tmp_path: Path) -> None:
    settings = node(tmp_path)
    path = tmp_path / "secrets/bounce.key"
    path.chmod(0o644)
    [problem] = doctor.check_keys(settings)
    assert problem.blocking
    assert problem.line() == (
        f"error: secrets.bounce_key_file: {path} is mode 0644, others on this machine can "
        f"read it; run `chmod 600 {path}` (and replace the key if someone may have read it)"
    )


def test_secret_missing_or_short_and_tls_files(tmp_path: Path) -> None:
    settings = node(tmp_path)
    (tmp_path / "secrets/webhook.key").unlink()
    (tmp_path / "secrets/tracking.key").write_text("short\n")
    (tmp_path / "tls/key.pem").chmod(0o640)
    (tmp_path / "tls/cert.pem").unlink()
    found = lines(doctor.check_keys(settings))
    assert len(found) == 4
    assert found[0].startswith("error: secrets.webhook_key_file: ")
    assert "does not exist; restore it from a backup or from another node" in found[0]
    assert "secrets.tracking_key_file" in found[1] and "fewer than 16 bytes" in found[1]
    assert found[2].startswith("error: tls.key_file:") and "mode 0640" in found[2]
    assert found[3].startswith("error: tls.cert_file:")


def test_log_file_folder_missing_is_an_error_file_missing_a_warning(tmp_path: Path) -> None:
    settings = node(tmp_path, path=str(tmp_path / "nowhere/mail.log"))
    [problem] = doctor.check_log(settings)
    assert problem.blocking and "is no folder" in problem.what
    settings = node(tmp_path / "b", path=str(tmp_path / "mail.log"))
    [problem] = doctor.check_log(settings)
    assert not problem.blocking and "does not exist yet" in problem.what


def test_log_file_not_readable(tmp_path: Path) -> None:
    settings = node(tmp_path, path=str(tmp_path / "dir-not-file"))
    (tmp_path / "dir-not-file").mkdir()
    [problem] = doctor.check_log(settings)
    assert problem.blocking and "cannot read" in problem.what


def test_journald_checks(tmp_path: Path) -> None:
    settings = node(tmp_path, source="journald", journal_namespace="mail")
    calls: list[list[str]] = []

    def run(cmd: list[str]) -> tuple[int, str]:
        calls.append(cmd)
        return 0, ""

    [missing] = doctor.check_log(settings, which=lambda _: None, run=run)
    assert "journalctl is not installed" in missing.what
    [down] = doctor.check_log(settings, which=lambda _: "/bin/journalctl", exists=lambda _: False)
    assert "/run/systemd/journal.mail/socket is missing" in down.what
    ok = doctor.check_log(settings, which=lambda _: "/bin/journalctl", run=run, exists=bool)
    assert ok == []
    assert calls == [["/bin/journalctl", "--lines=0", "--quiet", "--no-pager", "--namespace=mail"]]
    [refused] = doctor.check_log(
        settings,
        which=lambda _: "/bin/journalctl",
        run=lambda _: (1, "No journal files were opened due to insufficient permissions."),
        exists=bool,
    )
    assert refused.blocking and "insufficient permissions" in refused.what


def test_chrooted_smtpd_cannot_reach_the_milter(tmp_path: Path) -> None:
    """Debian's stock master.cf runs smtpd chrooted in /var/spool/postfix; txmail's sockets
    live in its state folder, which the jail does not contain."""
    settings = node(tmp_path)
    milter = settings.path(settings.milter.socket)
    socketmap = settings.path(settings.domains.socketmap)
    main = {
        "transport_maps": f"socketmap:unix:{socketmap}:transport",
        "relay_domains": f"bounces.example, socketmap:unix:{socketmap}:relay",
    }
    services = [
        Service("smtp", "inet", "y", "smtpd"),  # the operator's port 25: relay_domains
        Service("127.0.0.1:587", "inet", "n", "smtpd", {"smtpd_milters": f"unix:{milter}"}),
        Service("127.0.0.1:465", "inet", "y", "smtpd", {"smtpd_milters": f"unix:{milter}"}),
        Service("rewrite", "unix", "-", "trivial-rewrite"),
        Service("bouncepipe", "unix", "n", "pipe"),
    ]
    found = doctor.check_chroot(settings, main, services, "/var/spool/postfix", Path("/etc/pf"))
    assert lines(found) == [
        "error: master.cf service smtp/inet (smtpd) runs chrooted in /var/spool/postfix and "
        f"cannot reach the return-path socketmap {socketmap} (relay_domains); run "
        "`postconf -c /etc/pf -F 'smtp/inet/chroot = n'` and `postfix reload`",
        "error: master.cf service 127.0.0.1:465/inet (smtpd) runs chrooted in "
        f"/var/spool/postfix and cannot reach the milter {milter} (smtpd_milters); run "
        "`postconf -c /etc/pf -F '127.0.0.1:465/inet/chroot = n'` and `postfix reload`",
        "error: master.cf service 127.0.0.1:465/inet (smtpd) runs chrooted in "
        f"/var/spool/postfix and cannot reach the return-path socketmap {socketmap} "
        "(relay_domains); run `postconf -c /etc/pf -F '127.0.0.1:465/inet/chroot = n'` and "
        "`postfix reload`",
    ]
    rewrite_chrooted = [Service("rewrite", "unix", "y", "trivial-rewrite")]
    [problem] = doctor.check_chroot(settings, main, rewrite_chrooted, "/q", Path("/etc/pf"))
    assert "(relay_domains, transport_maps)" in problem.what


def test_master_cf_overrides_are_parsed() -> None:
    args = ["-o", "syslog_name=postfix/submission", "-o", "{smtpd_milters = unix:/s/m.sock}"]
    assert doctor._overrides(args) == {
        "syslog_name": "postfix/submission",
        "smtpd_milters": "unix:/s/m.sock",
    }


def test_redis_down_is_a_warning(tmp_path: Path) -> None:
    settings = node(tmp_path)

    def down() -> None:
        raise redis.ConnectionError("Connection refused")

    [problem] = doctor.check_redis(settings, down)
    assert not problem.blocking
    assert "does not answer (Connection refused)" in problem.what
    assert "txmail up" in problem.fix
    assert doctor.check_redis(settings, lambda: True) == []


def test_listening_sockets(tmp_path: Path) -> None:
    settings = node(tmp_path)
    milter = settings.path(settings.milter.socket)
    found = doctor.check_listening(settings, connect=lambda path: path != milter)
    assert [p.what for p in found] == [
        f"nothing accepts connections on the milter {milter}, so Postfix defers mail"
    ]


KEY = DkimKey("s1", RSA, "/k", "MIIBIjANBgkq")


def test_dns_not_published_is_a_warning_with_the_record_to_publish(tmp_path: Path) -> None:
    settings = dataclasses.replace(node(tmp_path), hostname="relay.example.com")
    domain = Domain("shop.example", "acme", (KEY,), return_path="mta.shop.example")
    published = {
        ("s1._domainkey.shop.example", "TXT"): ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"],
        ("mta.shop.example", "CNAME"): ["relay.example.com"],
        ("relay.example.com", "TXT"): ["v=spf1 a:relay.example.com -all"],
        ("relay.example.com", "MX"): ["relay.example.com"],
    }
    assert doctor.check_dns(settings, [domain], lambda n, t: published.get((n, t), [])) == []
    dkim, return_path, spf, mx = doctor.check_dns(settings, [domain], lambda n, t: [])
    assert not any(p.blocking for p in (dkim, return_path, spf, mx))
    assert dkim.line() == (
        "warning: shop.example: the dkim s=s1 record s1._domainkey.shop.example is not "
        'published (found no TXT record); publish s1._domainkey.shop.example TXT "v=DKIM1; '
        'k=rsa; p=MIIBIjANBgkq", then run `txmail domains verify shop.example`'
    )
    assert return_path.line() == (
        "warning: shop.example: the return path record mta.shop.example is not published "
        '(found no CNAME or MX record); publish mta.shop.example CNAME "relay.example.com", '
        "then run `txmail domains verify shop.example`"
    )
    assert spf.line() == (
        "warning: shop.example: the spf record mta.shop.example is not published (found no "
        'v=spf1 record); publish relay.example.com TXT "v=spf1 a:relay.example.com -all", '
        "then run `txmail domains verify shop.example`"
    )
    assert mx.line() == (
        "warning: shop.example: the mx record mta.shop.example is not published (found no MX "
        'record); publish relay.example.com MX "10 relay.example.com", then run '
        "`txmail domains verify shop.example`"
    )


def test_dns_that_does_not_answer(tmp_path: Path) -> None:
    settings = node(tmp_path)
    domain = Domain("shop.example", "acme", (KEY,))

    def timeout(name: str, kind: str) -> list[str]:
        raise TemporaryFailure(f"DNS did not answer for {name} {kind}")

    [problem] = doctor.check_dns(settings, [domain], timeout)
    assert not problem.blocking and "--offline" in problem.fix


def test_one_bad_spf_record_does_not_stop_the_dns_check(tmp_path: Path) -> None:
    """A name dnspython refuses (include:%{d}..bad) once aborted the whole doctor run."""
    settings = dataclasses.replace(node(tmp_path), hostname="relay.example.com")
    bad = Domain("bad.example", "acme", (KEY,), return_path="")
    good = Domain("shop.example", "acme", (KEY,), return_path="")
    server = LoopbackDns().start()
    try:
        server.set_txt(settings.bounce_domain, "v=spf1 include:%{d}..bad -all")
        server.set("relay.example.com", "A", "192.0.2.10")
        resolve = dnscheck.resolver([f"127.0.0.1:{server.port}"], timeout=3)
        problems = doctor.check_dns(settings, [bad, good], resolve)
    finally:
        server.stop()
    spf = [p.what for p in problems if "the spf record" in p.what]
    assert len(spf) == 2 and "gives permerror" in spf[0] and "..bad" in spf[0], spf
    assert any(p.what.startswith("shop.example: the dkim") for p in problems)


def test_one_domain_that_cannot_be_checked_does_not_hide_the_others(tmp_path: Path) -> None:
    settings = node(tmp_path)
    first = Domain("first.example", "acme", (KEY,))
    second = Domain("second.example", "acme", (KEY,))

    def resolve(name: str, kind: str) -> list[str]:
        if name.endswith("first.example"):
            raise TxmailError("something about first.example")
        return []

    problems = doctor.check_dns(settings, [first, second], resolve)
    assert problems[0].what == (
        "first.example: its DNS records could not be checked (something about first.example)"
    )
    assert any(p.what.startswith("second.example: the dkim") for p in problems[1:])


def test_startup_problems(tmp_path: Path) -> None:
    """`up` starts the private Redis itself, so it is not pinged; a missing key stops `up`;
    a configured Redis that does not answer does not."""
    settings = node(tmp_path)
    assert doctor.startup_problems(settings, None) == []
    (tmp_path / "secrets/bounce.key").unlink()
    assert [p.blocking for p in doctor.startup_problems(settings, None)] == [True]
    elsewhere = dataclasses.replace(
        settings, redis=dataclasses.replace(settings.redis, url="redis://127.0.0.1:1", timeout=0.5)
    )
    found = doctor.startup_problems(elsewhere, None)
    assert [p.blocking for p in found] == [True, False]
    assert "Redis at redis://127.0.0.1:1 does not answer" in found[1].what


def test_up_stops_on_errors_only(caplog: pytest.LogCaptureFixture) -> None:
    """supervisor.stop_on: warnings are logged and `up` goes on; errors stop it, one line
    each (exit 2 through ConfigError)."""
    from txmail.stack.supervisor import stop_on

    warning = Problem("DNS not published", "publish it", blocking=False)
    with caplog.at_level(logging.WARNING, logger="txmail.up"):
        stop_on([warning])
    assert "warning: DNS not published; publish it" in caplog.text
    with pytest.raises(ConfigError) as one:
        stop_on([warning, Problem("a key is missing", "restore it")])
    assert str(one.value) == "a key is missing; restore it"
    with pytest.raises(ConfigError) as two:
        stop_on([Problem("a", "b"), Problem("c", "d")])
    assert str(two.value) == "2 problems stop the node:\n  a; b\n  c; d"


def test_a_missing_shared_key_file_with_a_configured_redis_is_a_cache_up_writes(
    tmp_path: Path,
) -> None:
    """With redis.url set the secrets.* files are caches of the keys in Redis: a missing one
    does not stop `up` (it fetches the key), unless Redis does not answer; the TLS key and a
    node with its private Redis are as before."""
    settings = dataclasses.replace(
        node(tmp_path), redis=config.RedisSettings(url="redis://127.0.0.1:1/0", timeout=0.5)
    )
    path = tmp_path / "secrets/bounce.key"
    path.unlink()
    [held] = doctor.check_keys(settings, in_redis=lambda name: True)
    assert not held.blocking and held.repaired_by_up
    assert held.line() == (
        f"warning: secrets.bounce_key_file: {path}, this node's cache of the key in Redis, "
        "does not exist; `txmail up` writes it from Redis"
    )
    [first] = doctor.check_keys(settings, in_redis=lambda name: False)
    assert not first.blocking and "creates the key in Redis, for every node" in first.fix
    [down] = doctor.check_keys(settings, in_redis=lambda name: None)
    assert down.blocking
    assert down.line() == (
        f"error: secrets.bounce_key_file: {path} does not exist and Redis at "
        "redis://127.0.0.1:1/0 does not answer, so this node has no key; start Redis or "
        "correct redis.url (a node fetches the installation's keys from Redis the first time "
        "it starts), or restore the file from another node"
    )
    [asked] = doctor.check_keys(settings)  # the real question, to a Redis that is not there
    assert asked.blocking and "does not answer" in asked.what
    alone = node(tmp_path / "private")
    (tmp_path / "private/secrets/bounce.key").unlink()
    [private] = doctor.check_keys(alone, in_redis=lambda name: True)
    assert private.blocking and "restore it from a backup" in private.fix
