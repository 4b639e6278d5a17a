"""bench/milters.py: the reference milters bench/throughput.py measures txmail's against.

    .venv/bin/python bench/milters.py passthrough SOCKET
    .venv/bin/python bench/milters.py dkim SOCKET KEYFILE DOMAIN SELECTOR

(dkim writes a new RSA key to KEYFILE when there is none.)

Both are single pymilter processes that negotiate as txmail's milter does (no callbacks for
connect, helo, data and end of headers; no replies awaited for headers and body chunks), so
the difference between them and txmail is txmail's own work:

passthrough  lets every message through untouched: what the milter protocol and pymilter cost.
dkim         what a milter that only signs must do: keep the headers and the body, and at end
             of message sign with DKIM the way txmail signs (txmail/milter/dkim.py: dkimpy
             canonicalises and hashes, OpenSSL does the RSA) and add the header.

They serve only the benchmark: no rules, no Redis, no error handling beyond pymilter's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import Milter

from txmail.accounts.domains import RSA, DkimKey
from txmail.milter import dkim as txmail_dkim


class Passthrough(Milter.Base):
    def envfrom(self, mailfrom: str, *params: str) -> int:
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE

    def eom(self) -> int:
        return Milter.CONTINUE


class DkimOnly(Passthrough):
    key: list[tuple[DkimKey, object]] = []
    domain = ""

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.headers: list[bytes] = []
        self.chunks: list[bytes] = []
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.headers.append(f"{name}: {value}".replace("\n", "\r\n").encode())
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        message = b"\r\n".join(self.headers) + b"\r\n\r\n" + b"".join(self.chunks)
        for name, value in txmail_dkim.sign_with(message, self.domain, self.key):
            self.addheader(name, value, 0)
        return Milter.CONTINUE


USAGE = "usage: bench/milters.py passthrough SOCKET | dkim SOCKET KEYFILE DOMAIN SELECTOR"


def main() -> None:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if sys.argv[1:2] not in (["passthrough"], ["dkim"]) or len(sys.argv) != (
        6 if sys.argv[1] == "dkim" else 3
    ):
        raise SystemExit(USAGE)
    kind, socket_path = sys.argv[1], sys.argv[2]
    factory: type[Passthrough] = Passthrough
    if kind == "dkim":
        key_file, DkimOnly.domain, selector = sys.argv[3:6]
        if not Path(key_file).exists():
            txmail_dkim.generate_rsa_key(Path(key_file))
        DkimOnly.key = [
            (DkimKey(selector, RSA, key_file, ""), txmail_dkim.load_private_key(key_file))
        ]
        factory = DkimOnly
        Milter.set_flags(Milter.ADDHDRS)
    Path(socket_path).unlink(missing_ok=True)
    os.umask(0o000)  # Postfix's smtpd connects as its own user
    Milter.factory = factory
    Milter.runmilter(f"bench-{kind}", f"unix:{socket_path}", timeout=300)


if __name__ == "__main__":
    main()
