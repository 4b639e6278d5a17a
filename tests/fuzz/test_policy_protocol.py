"""Fuzz: the policy protocol (txmail/policyd/protocol.py) and policyd's read loop over it.

parse_block / parse_request on any bytes; well-formed blocks round-trip. Then whole connections:
byte streams of requests (and whatever follows them) cut into chunks at arbitrary points and fed
through a socket pair to PolicyServer.serve_connection, the server's own read loop, with the
decision (which needs Redis) replaced by a fixed DUNNO.
Properties: nothing but the documented ProtocolError is raised; the read loop never raises,
answers each well-formed request once and in order however the bytes were cut, and ends a
connection that sends garbage, an attribute over 512 characters, a block without
request=smtpd_access_policy, a request over 32 KB without its end, or half a request, with one
warning that says which; no request or connection costs a second of CPU.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, within_budget
from tests.fuzz.watch import logged
from txmail.config import RedisSettings, Settings
from txmail.policyd import connections, decide, protocol
from txmail.policyd.scripts import connect
from txmail.store import Keys

NUMBERS = ("recipient_count", "size", "server_port")
REQUEST = "request=smtpd_access_policy"

names = st.one_of(
    st.sampled_from(
        [
            "protocol_state",
            "sasl_username",
            "sender",
            "recipient",
            "queue_id",
            "instance",
            "client_address",
            "helo_name",
            "ccert_subject",
        ]
    ),
    st.text(st.characters(codec="ascii", exclude_characters="=\r\n"), min_size=1, max_size=40),
).filter(lambda name: name not in NUMBERS and name != "request")
values = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=protocol.MAX_ATTRIBUTE
)
attribute_sets = st.dictionaries(names, values, max_size=12).flatmap(
    lambda attributes: st.fixed_dictionaries(
        {
            **{k: st.just(v) for k, v in attributes.items()},
            **{n: st.integers(0, 10**9).map(str) for n in NUMBERS[:1]},
        },
        optional={n: st.integers(0, 10**6).map(str) for n in NUMBERS[1:]},
    )
)


def block_of(attributes: dict[str, str]) -> bytes:
    return (REQUEST + "\n" + "".join(f"{k}={v}\n" for k, v in attributes.items()) + "\n").encode()


# -- one block ------------------------------------------------------------------------------


@examples(1000)
@given(st.binary(max_size=3000))
@example(b"=\n")
@example(b"request=smtpd_access_policy\n" + "é".encode() * 513)
def test_any_block_parses_or_is_a_protocol_error(block: bytes) -> None:
    try:
        within_budget(protocol.parse_request, block)
    except protocol.ProtocolError as error:
        assert str(error)


@examples(500)
@given(attribute_sets, st.booleans())
def test_well_formed_blocks_round_trip(attributes: dict[str, str], crlf: bool) -> None:
    block = block_of(attributes)
    if crlf:
        block = block.replace(b"\n", b"\r\n")
    parsed = within_budget(protocol.parse_block, block)
    assert parsed == {"request": "smtpd_access_policy", **attributes}
    request = protocol.parse_request(block)
    assert request.recipient_count == int(attributes["recipient_count"])
    assert request.sasl_username == attributes.get("sasl_username", "")


BAD_TAILS = {
    # what follows the good requests -> the warning that must end the connection
    "garbage": (
        b"request=smtpd_access_policy\nthis is not an attribute\n\n",
        "not an attribute line",
    ),
    "long-value": (
        b"request=smtpd_access_policy\nsender=" + b"a" * 513 + b"\n\n",
        "over 512 characters",
    ),
    "long-name": (b"request=smtpd_access_policy\n" + b"n" * 513 + b"=1\n\n", "over 512 characters"),
    "no-request": (b"protocol_state=RCPT\nsender=a@b\n\n", "no request=smtpd_access_policy"),
    "not-a-number": (b"request=smtpd_access_policy\nsize=12x\n\n", "is not a number"),
    "endless": (
        b"request=smtpd_access_policy\nsender=" + b"a" * (protocol.MAX_REQUEST + 100),
        f"request over {protocol.MAX_REQUEST} bytes",
    ),
    "half-a-request": (
        b"request=smtpd_access_policy\nsender=a@b\n",
        "connection closed in the middle of a request",
    ),
}


# -- whole connections through the server's read loop ----------------------------------------


class FixedAnswer(connections.PolicyServer):
    """policyd's server with every decision DUNNO, so only the read loop is exercised."""

    def __init__(self) -> None:
        settings = Settings(
            state_dir=tempfile.gettempdir(), redis=RedisSettings(url="redis://127.0.0.1:9/0")
        )
        super().__init__(settings, connect(settings), Keys("fuzz:"), clock=lambda: 0.0)
        self.requests: list[decide.Request] = []

    async def answer(
        self, request: decide.Request, connection: connections.Connection
    ) -> decide.Action:
        self.requests.append(request)
        return decide.Action("DUNNO", "permit")


def converse(stream: bytes, cuts: list[int]) -> tuple[bytes, list[decide.Request], list[str]]:
    """Send `stream` cut at `cuts` to the read loop; (what it answered, the requests it read,
    the warnings it logged). Fails if the read loop raised."""

    async def run() -> tuple[bytes, list[decide.Request]]:
        policy = FixedAnswer()
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=theirs, limit=protocol.MAX_REQUEST)
        session = asyncio.create_task(policy.serve_connection(reader, writer))
        client_reader, client_writer = await asyncio.open_connection(sock=ours)
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        try:
            for piece in pieces:
                client_writer.write(piece)
                await client_writer.drain()
                await asyncio.sleep(0)  # let the server read this piece on its own
            client_writer.write_eof()
        except ConnectionError:
            pass  # the server hung up on garbage while we were still sending
        try:
            answers = await client_reader.read()
        except ConnectionError:
            answers = b""  # reset by the server's hang-up; nothing was answered after all
        client_writer.close()
        await session  # raises what the read loop raised
        await policy.client.aclose()
        return answers, policy.requests

    with logged("txmail.policyd") as records:
        answers, requests = within_budget(asyncio.run, run())
    return answers, requests, [r.getMessage() for r in records]


cut_points = st.lists(st.integers(0, 1 << 16), max_size=12)


def cuts_in(stream: bytes, points: list[int]) -> list[int]:
    return sorted({point % (len(stream) + 1) for point in points})


@examples(300)
@given(st.lists(attribute_sets, max_size=4), st.sampled_from([None, *BAD_TAILS]), cut_points)
def test_requests_cut_anywhere_are_answered_in_order(
    attribute_list: list[dict[str, str]], tail: str | None, points: list[int]
) -> None:
    stream = b"".join(block_of(a) for a in attribute_list)
    if tail is not None:
        stream += BAD_TAILS[tail][0]
    answers, requests, warnings = converse(stream, cuts_in(stream, points))
    assert answers == b"action=DUNNO\n\n" * len(attribute_list)
    assert [r.recipient_count for r in requests] == [
        int(a["recipient_count"]) for a in attribute_list
    ]
    assert [r.queue_id for r in requests] == [a.get("queue_id", "") for a in attribute_list]
    if tail is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and BAD_TAILS[tail][1] in warnings[0], warnings


@examples(500)
@given(st.binary(max_size=2000), cut_points)
@example(b"\n\n\n\n", [])
@example(b"request=smtpd_access_policy\n\n\n\nrequest=smtpd_access_policy\n\n", [1, 30, 31])
def test_any_stream_cut_anywhere_never_breaks_the_read_loop(
    stream: bytes, points: list[int]
) -> None:
    answers, requests, warnings = converse(stream, cuts_in(stream, points))
    assert answers == b"action=DUNNO\n\n" * len(requests)
    assert len(requests) <= stream.count(b"\n\n")
    assert len(warnings) <= 1
