"""DKIM signing: signatures verify (dkimpy with a fake DNS), OpenSSL gives stock dkimpy's bytes,
the header set, key caching and reloading, and failures without key material in sight."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from txmail.accounts.domains import ED25519, RSA, DkimKey, Domain
from txmail.errors import TemporaryFailure
from txmail.milter import dkim as txdkim

MESSAGE = (
    b"From: App <app@acme.example>\r\nTo: user@example.net\r\nCc: other@example.net\r\n"
    b"Subject: Your receipt\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <r1@acme.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nX-Mailer: test\r\n"
    b"Received: from somewhere\r\n\r\nThank you for your order.\r\n"
)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dkim")


@pytest.fixture(scope="module")
def keys(key_dir: Path) -> tuple[DkimKey, DkimKey]:
    rsa_key = DkimKey(
        "s1", RSA, str(key_dir / "s1.rsa.pem"), txdkim.generate_rsa_key(key_dir / "s1.rsa.pem")
    )
    ed_key = DkimKey(
        "s1e",
        ED25519,
        str(key_dir / "s1e.ed25519.pem"),
        txdkim.generate_ed25519_key(key_dir / "s1e.ed25519.pem"),
    )
    return rsa_key, ed_key


class FakeDomains:
    """Stands in for txmail.accounts.domains.Domains: find() answers from a dict, counting."""

    def __init__(self, *records: Domain) -> None:
        self.records = {r.name: r for r in records}
        self.finds = 0

    def find(self, name: str) -> Domain | None:
        self.finds += 1
        return self.records.get(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dns_for(*published: DkimKey, domain: str = "acme.example"):  # type: ignore[no-untyped-def]
    records = {f"{k.dns_name(domain)}.".encode(): k.dns_value().encode() for k in published}
    return lambda name, timeout=5: records.get(name)


def signed(headers: list[tuple[str, str]], message: bytes = MESSAGE) -> bytes:
    """The message as a receiver sees it: the headers prepended, LF folds back to CRLF."""
    head = b"".join(
        f"{name}: {value}".replace("\n", "\r\n").encode() + b"\r\n" for name, value in headers
    )
    return head + message


def domain(keys: tuple[DkimKey, ...], active: bool = True) -> Domain:
    return Domain(name="acme.example", account="acme", dkim=keys, dkim_active=active)


def test_rsa_signature_verifies(keys: tuple[DkimKey, DkimKey]) -> None:
    signer = txdkim.Signer(FakeDomains(domain((keys[0],))))
    headers = signer.sign("acme.example", MESSAGE, allowed=["acme.example"])
    assert [name for name, _ in headers] == ["DKIM-Signature"]
    assert "a=rsa-sha256" in headers[0][1] and "d=acme.example" in headers[0][1]
    assert "s=s1;" in headers[0][1] and "c=relaxed/relaxed" in headers[0][1]
    assert dkim.verify(signed(headers), dnsfunc=dns_for(keys[0]))


def test_rsa_and_ed25519_both_verify(keys: tuple[DkimKey, DkimKey]) -> None:
    signer = txdkim.Signer(FakeDomains(domain(keys)))
    headers = signer.sign("ACME.example.", MESSAGE, allowed=["ACME.example."])
    assert len(headers) == 2
    message = signed(headers)
    verifier = dkim.DKIM(message)
    dns = dns_for(*keys)
    assert verifier.verify(idx=0, dnsfunc=dns)
    assert verifier.verify(idx=1, dnsfunc=dns)
    assert {"a=rsa-sha256", "a=ed25519-sha256"} == {
        part.strip()
        for _, value in headers
        for part in value.split(";")
        if part.strip().startswith("a=")
    }


def test_tampered_message_fails(keys: tuple[DkimKey, DkimKey]) -> None:
    headers = txdkim.Signer(FakeDomains(domain((keys[0],)))).sign(
        "acme.example", MESSAGE, allowed=["acme.example"]
    )
    tampered = signed(headers).replace(b"Your receipt", b"Your invoice")
    assert not dkim.verify(tampered, dnsfunc=dns_for(keys[0]))


def test_openssl_signature_is_byte_identical_to_stock_dkimpy(keys: tuple[DkimKey, DkimKey]) -> None:
    pem = Path(keys[0].key_path).read_bytes()
    loaded = txdkim.load_private_key(keys[0].key_path)
    for algorithm in ("sha256", "sha1"):
        digest = dkim.HashThrough(dkim.HASH_ALGORITHMS[f"rsa-{algorithm}".encode()]())
        digest.update(b"the canonicalised headers")
        ours = dkim.RSASSA_PKCS1_v1_5_sign(digest, loaded)
        stock = txdkim._stock_rsa_sign(digest, dkim.crypto.parse_pem_private_key(pem))
        assert ours == stock


def test_stock_keys_still_work_through_the_wrappers(keys: tuple[DkimKey, DkimKey]) -> None:
    pem = Path(keys[0].key_path).read_bytes()
    stock_signature = dkim.sign(MESSAGE, b"s1", b"acme.example", pem)
    assert dkim.verify(stock_signature + MESSAGE, dnsfunc=dns_for(keys[0]))


def test_header_set_is_signed_once_more_than_present(keys: tuple[DkimKey, DkimKey]) -> None:
    headers = txdkim.Signer(FakeDomains(domain((keys[0],)))).sign(
        "acme.example", MESSAGE, allowed=["acme.example"]
    )
    value = " ".join(headers[0][1].split())
    signed_list = value.split("h=", 1)[1].split(";", 1)[0].replace(" ", "").split(":")
    for name in (
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ):
        assert signed_list.count(name) == 2, name
    # absent ones are left out (Postfix may add Date or Message-ID), unlisted ones too
    for name in ("reply-to", "list-unsubscribe", "x-mailer", "received"):
        assert name not in signed_list


def test_list_unsubscribe_and_reply_to_are_signed_when_present() -> None:
    include = txdkim.headers_to_sign([b"From", b"List-Unsubscribe", b"Reply-To", b"Reply-To"])
    assert include.count(b"list-unsubscribe") == 2
    assert include.count(b"reply-to") == 3
    assert txdkim.headers_to_sign([]) == [b"from"]


def test_values_are_folded_for_libmilter(keys: tuple[DkimKey, DkimKey]) -> None:
    headers = txdkim.Signer(FakeDomains(domain(keys))).sign(
        "acme.example", MESSAGE, allowed=["acme.example"]
    )
    for _, value in headers:
        assert "\r" not in value
        lines = value.split("\n")
        assert all(line[:1] in (" ", "\t") for line in lines[1:])
        assert max(len(line) for line in lines) < 998


def test_no_signature_for_unknown_or_inactive_domains(keys: tuple[DkimKey, DkimKey]) -> None:
    signer = txdkim.Signer(
        FakeDomains(domain(keys, active=False), replace(domain(()), name="nokeys.example"))
    )
    assert signer.sign("acme.example", MESSAGE, allowed=["acme.example"]) == []
    assert signer.sign("nokeys.example", MESSAGE, allowed=["nokeys.example"]) == []
    assert signer.sign("unknown.example", MESSAGE, allowed=["unknown.example"]) == []


def test_records_are_cached_and_refreshed(keys: tuple[DkimKey, DkimKey]) -> None:
    fake, clock = FakeDomains(domain((keys[0],))), Clock()
    signer = txdkim.Signer(fake, refresh=2.0, clock=clock)
    assert signer.sign("acme.example", MESSAGE, allowed=["acme.example"])
    fake.records["acme.example"] = domain((keys[0],), active=False)
    clock.now += 1.0
    assert signer.sign("acme.example", MESSAGE, allowed=["acme.example"])  # still the cached record
    assert fake.finds == 1
    clock.now += 1.5
    assert (
        signer.sign("acme.example", MESSAGE, allowed=["acme.example"]) == []
    )  # switched off within `refresh`
    assert fake.finds == 2


def test_key_is_decoded_once_and_again_when_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rot.rsa.pem"
    first = DkimKey("rot", RSA, str(path), txdkim.generate_rsa_key(path))
    decoded: list[str] = []
    real_load = txdkim.load_private_key
    monkeypatch.setattr(txdkim, "load_private_key", lambda p: decoded.append(p) or real_load(p))
    signer = txdkim.Signer(FakeDomains(domain((first,))))
    for _ in range(3):
        assert dkim.verify(
            signed(signer.sign("acme.example", MESSAGE, allowed=["acme.example"])),
            dnsfunc=dns_for(first),
        )
    assert decoded == [str(path)]
    second = replace(first, public_key=txdkim.generate_rsa_key(path))  # same path, new key
    os.utime(path, ns=(0, 10**9))  # a distinct mtime even on coarse clocks
    headers = signer.sign("acme.example", MESSAGE, allowed=["acme.example"])
    assert len(decoded) == 2
    assert dkim.verify(signed(headers), dnsfunc=dns_for(second))


def test_unreadable_key_is_a_temporary_failure_and_logs_no_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = DkimKey("gone", RSA, str(tmp_path / "gone.pem"), "AAAA")
    garbage_path = tmp_path / "garbage.pem"
    garbage_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    garbage = DkimKey("junk", RSA, str(garbage_path), "AAAA")
    caplog.set_level(logging.ERROR)
    for key in (missing, garbage):
        with pytest.raises(TemporaryFailure, match="DKIM key of acme.example"):
            txdkim.Signer(FakeDomains(domain((key,)))).sign(
                "acme.example", MESSAGE, allowed=["acme.example"]
            )
    assert "not a key" not in caplog.text and "BEGIN" not in caplog.text


def test_key_files_are_private_and_keys_print_nothing(
    keys: tuple[DkimKey, DkimKey], key_dir: Path
) -> None:
    for key in keys:
        assert Path(key.key_path).stat().st_mode & 0o777 == 0o600
    assert key_dir.stat().st_mode & 0o777 == 0o700
    loaded = txdkim.load_private_key(keys[0].key_path)
    assert repr(loaded) == "<LoadedRsaKey 2048 bits>"


def test_rsa_keys_below_2048_bits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2048"):
        txdkim.generate_rsa_key(tmp_path / "small.pem", bits=1024)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pem"
    path.write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="2048"):
        txdkim.load_private_key(str(path))


def test_selectors() -> None:
    assert txdkim.new_selector(set(), now=0) == "tx19700101"
    assert txdkim.new_selector({"tx19700101"}, now=0) == "tx19700101b"
    with pytest.raises(ValueError):
        txdkim.check_selector("bad selector")


def test_a_domain_outside_the_account_is_never_signed(keys: tuple[DkimKey, DkimKey]) -> None:
    """The second guard of a From rewrite: whatever domain the caller worked out, a key of
    another account's domain is never used."""
    fake = FakeDomains(domain((keys[0],)))
    signer = txdkim.Signer(fake)
    assert signer.sign("acme.example", MESSAGE, allowed=["other.example"]) == []
    assert signer.sign("acme.example", MESSAGE, allowed=[]) == []
    assert fake.finds == 0  # not even looked up
    assert signer.sign("Acme.Example.", MESSAGE, allowed=["other.example", "ACME.example"])
