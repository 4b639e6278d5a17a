"""txmail socketmap: the netstring protocol, the return-path tables and a real UNIX socket."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail.errors import StoreUnavailable
from txmail.socketmap.protocol import (
    ProtocolError,
    netstring,
    parse_request,
    read_netstring,
)
from txmail.socketmap.server import SocketmapServer
from txmail.socketmap.tables import ReturnPathTables


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Known:
    """Stands in for Domains.serves_return_path."""

    def __init__(self, *domains: str) -> None:
        self.domains = set(domains)
        self.asked: list[str] = []
        self.down = False

    def __call__(self, domain: str) -> bool:
        self.asked.append(domain)
        if self.down:
            raise StoreUnavailable("looking up a return-path domain: Redis unavailable")
        return domain in self.domains


def answer(tables: ReturnPathTables, name: str, key: str) -> str:
    return tables.lookup(name, key).encode().decode()


def test_relay_and_transport_answers() -> None:
    tables = ReturnPathTables("bounces.example.test", Known("mta.acme.example"))
    assert answer(tables, "relay", "mta.acme.example") == "OK mta.acme.example"
    assert answer(tables, "relay", "MTA.Acme.Example.") == "OK mta.acme.example"
    assert answer(tables, "relay", "bounces.example.test") == "OK bounces.example.test"
    assert answer(tables, "transport", "bounces+x@mta.acme.example") == "OK bouncepipe:"
    assert answer(tables, "transport", "mta.acme.example") == "OK bouncepipe:"
    assert answer(tables, "transport", "bounces+x@bounces.example.test") == "OK bouncepipe:"


@pytest.mark.parametrize(
    "name,key",
    [
        ("relay", "elsewhere.example"),
        ("relay", ".acme.example"),
        ("relay", "acme.example"),
        ("relay", "x.mta.acme.example"),
        ("relay", "a@mta.acme.example"),
        ("relay", ""),
        ("transport", "someone@elsewhere.example"),
        ("transport", "a@"),
    ],
)
def test_everything_else_is_not_found(name: str, key: str) -> None:
    tables = ReturnPathTables("bounces.example.test", Known("mta.acme.example"))
    assert answer(tables, name, key) == "NOTFOUND "


def test_unknown_table_is_perm() -> None:
    assert answer(ReturnPathTables("b.example", Known()), "aliases", "x").startswith("PERM ")


def test_redis_down_is_temp() -> None:
    known = Known("mta.acme.example")
    known.down = True
    tables = ReturnPathTables("bounces.example.test", known)
    assert answer(tables, "relay", "mta.acme.example").startswith("TEMP ")
    assert answer(tables, "relay", "bounces.example.test") == "OK bounces.example.test"


def test_answers_are_cached_for_the_ttl() -> None:
    known, clock = Known(), Clock()
    tables = ReturnPathTables("bounces.example.test", known, ttl=1.0, clock=clock)
    assert answer(tables, "relay", "mta.new.example") == "NOTFOUND "
    known.domains.add("mta.new.example")
    clock.now += 0.5
    assert answer(tables, "relay", "mta.new.example") == "NOTFOUND "
    clock.now += 0.6
    assert answer(tables, "relay", "mta.new.example") == "OK mta.new.example"
    assert known.asked == ["mta.new.example", "mta.new.example"]


def test_netstrings() -> None:
    assert netstring(b"OK x") == b"4:OK x,"
    stream = io.BytesIO(b"19:relay mta.a.example,5:a b c,")
    assert parse_request(read_netstring(stream) or b"") == ("relay", "mta.a.example")
    assert parse_request(read_netstring(stream) or b"") == ("a", "b c")
    assert read_netstring(stream) is None


@pytest.mark.parametrize(
    "bad", [b"x:", b"3:abc", b"3:ab", b":abc,", b"99999999999:", b"20000:" + b"a" * 20000 + b","]
)
def test_bad_netstrings(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_netstring(io.BytesIO(bad))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sm.sock"
    srv = SocketmapServer(path, ReturnPathTables("bounces.example.test", Known("mta.acme.example")))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield path
    srv.shutdown()
    srv.server_close()


def test_server_answers_several_requests_on_one_connection(server: Path) -> None:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(server))
        stream = client.makefile("rwb")
        for request, expected in [
            (b"relay mta.acme.example", b"OK mta.acme.example"),
            (b"transport b@elsewhere.example", b"NOTFOUND "),
        ]:
            stream.write(netstring(request))
            stream.flush()
            assert read_netstring(stream) == expected


def test_server_closes_on_garbage(server: Path) -> None:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(server))
        client.sendall(b"garbage")
        client.settimeout(5)
        assert client.recv(100) == b""
