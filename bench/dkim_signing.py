"""bench/dkim_signing: milliseconds of CPU per DKIM signature, stock dkimpy against txmail's signer.

Signs one 5 KB message (the size of POSTFIX-NOTES §9) with a fresh RSA-2048 key, in one process:

    stock      dkim.sign(message, selector, domain, PEM): dkimpy decodes the PEM and does the
               RSA in pure Python on every call (what a naive milter does)
    txmail     txmail.milter.dkim.Signer.sign: the same dkimpy canonicalisation and hashing,
               the key decoded once and kept, RSA through OpenSSL (cryptography)
    +ed25519   the same Signer with an Ed25519 key as well (two signatures a message)
    decode     txmail.milter.dkim.load_private_key alone: what keeping keys loaded saves

The variants alternate in rounds so a busy moment on the shared machine hits all alike, and
the signer's domain record comes from a stand-in for the Redis store (it is cached for 2 s in
the milter anyway). Every signature is checked once with dkim.verify before timing.

    .venv/bin/python bench/dkim_signing.py [--rounds 5] [--stock 40] [--fast 400]

Prints per-round figures and the medians in ms/message, and the ratio stock / txmail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim

from txmail.accounts.domains import ED25519, RSA, DkimKey, Domain
from txmail.milter import dkim as txdkim

DOMAIN = "bench.example"


def message_5k() -> bytes:
    head = (
        b"From: Bench <app@bench.example>\r\nTo: user@example.net\r\n"
        b"Subject: Your weekly receipt\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <bench-1@bench.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = b"Thank you for your order; your receipt follows in this message body.\r\n"
    return head + line * ((5120 - len(head)) // len(line))


class OneDomain:
    """Stands in for txmail.accounts.domains.Domains."""

    def __init__(self, record: Domain) -> None:
        self.record = record

    def find(self, name: str) -> Domain | None:
        return self.record if name == self.record.name else None


def ms_per_call(fn: Callable[[], object], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        fn()
    return (time.process_time() - started) * 1000 / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stock", type=int, default=40, help="stock signatures per round")
    parser.add_argument("--fast", type=int, default=400, help="txmail signatures per round")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-dkim-"))
    rsa_key = DkimKey("b1", RSA, str(folder / "b1.pem"), txdkim.generate_rsa_key(folder / "b1.pem"))
    ed_key = DkimKey(
        "b1e", ED25519, str(folder / "b1e.pem"), txdkim.generate_ed25519_key(folder / "b1e.pem")
    )
    pem = Path(rsa_key.key_path).read_bytes()
    message = message_5k()
    records = {f"{k.dns_name(DOMAIN)}.".encode(): k.dns_value().encode() for k in (rsa_key, ed_key)}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    rsa_only = txdkim.Signer(OneDomain(Domain(DOMAIN, "bench", (rsa_key,), dkim_active=True)))
    both = txdkim.Signer(OneDomain(Domain(DOMAIN, "bench", (rsa_key, ed_key), dkim_active=True)))

    def signed(headers: list[tuple[str, str]]) -> bytes:
        return (
            b"".join(f"{n}: {v}".replace("\n", "\r\n").encode() + b"\r\n" for n, v in headers)
            + message
        )

    assert dkim.verify(dkim.sign(message, b"b1", DOMAIN.encode(), pem) + message, dnsfunc=dns)
    assert dkim.verify(signed(rsa_only.sign(DOMAIN, message, allowed=[DOMAIN])), dnsfunc=dns)
    two = signed(both.sign(DOMAIN, message, allowed=[DOMAIN]))
    assert all(dkim.DKIM(two).verify(idx=i, dnsfunc=dns) for i in (0, 1))

    variants: dict[str, tuple[Callable[[], object], int]] = {
        "stock": (lambda: dkim.sign(message, b"b1", DOMAIN.encode(), pem), args.stock),
        "txmail": (lambda: rsa_only.sign(DOMAIN, message, allowed=[DOMAIN]), args.fast),
        "+ed25519": (lambda: both.sign(DOMAIN, message, allowed=[DOMAIN]), args.fast),
        "decode": (lambda: txdkim.load_private_key(rsa_key.key_path), args.fast),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    print(f"message {len(message)} bytes, RSA-2048; ms of CPU per call")
    for round_number in range(1, args.rounds + 1):
        row = []
        for name, (fn, count) in variants.items():
            results[name].append(ms_per_call(fn, count))
            row.append(f"{name} {results[name][-1]:.3f}")
        print(f"round {round_number}: " + ", ".join(row))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print("median: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in medians.items()))
    print(
        f"stock / txmail = {medians['stock'] / medians['txmail']:.1f}x faster; "
        f"one signer process at 100% of a core: about {1000 / medians['txmail']:.0f} "
        f"signatures/s (stock {1000 / medians['stock']:.0f}/s)"
    )
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
