"""A tiny authoritative DNS server on loopback UDP for tests: answers from a dict, NXDOMAIN else.

Used as the resolver of a test rspamd (DKIM key lookups) and, later, of `domains verify`.
Records are (name, type) -> list of text values, e.g. ("s1._domainkey.acme.example", "TXT").
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class LoopbackDns:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.queries: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    def set_txt(self, name: str, value: str) -> None:
        """Publish a TXT record, split into 255-byte strings as zone files do."""
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
        self.records[(name.lower().rstrip("."), "TXT")] = [
            " ".join('"' + c.replace('"', '\\"') + '"' for c in chunks)
        ]

    def set(self, name: str, kind: str, *values: str) -> None:
        self.records[(name.lower().rstrip("."), kind.upper())] = list(values)

    def start(self) -> LoopbackDns:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopped:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            self.sock.sendto(self.answer(query).to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        values = self.records.get((name, kind))
        if values is None:
            known = any(n == name for n, _ in self.records)
            response.set_rcode(dns.rcode.NOERROR if known else dns.rcode.NXDOMAIN)
            return response
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
        for value in values:
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, value), ttl=60)
        response.answer.append(rrset)
        return response

    def stop(self) -> None:
        self._stopped = True
        self.sock.close()
