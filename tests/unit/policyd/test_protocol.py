"""protocol.py: attribute blocks in, action lines out; garbage is a ProtocolError, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txmail.policyd import protocol

# What Postfix 3.7 sends at RCPT (SMTPD_POLICY_README), trimmed of the TLS attributes.
RCPT_BLOCK = b"""request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
client_address=127.0.0.1
client_name=localhost
reverse_client_name=localhost
helo_name=client.test
sender=app@acme.example
recipient=user@example.net
recipient_count=0
queue_id=
instance=1a2b.6560aa11.8c3d1.0
size=0
etrn_domain=
stress=
sasl_method=PLAIN
sasl_username=acme
sasl_sender=
ccert_subject=
policy_context=
server_address=127.0.0.1
server_port=587
compatibility_level=3.6
mail_version=3.7.11
"""


def test_parse_a_postfix_request() -> None:
    request = protocol.parse_request(RCPT_BLOCK)
    assert request.protocol_state == "RCPT"
    assert request.sasl_username == "acme"
    assert request.recipient == "user@example.net"
    assert (request.queue_id, request.recipient_count, request.size) == ("", 0, 0)
    assert request.instance == "1a2b.6560aa11.8c3d1.0"
    assert request.server_port == 587


def test_end_of_message_counts() -> None:
    block = (
        RCPT_BLOCK.replace(b"protocol_state=RCPT", b"protocol_state=END-OF-MESSAGE")
        .replace(b"recipient_count=0", b"recipient_count=3")
        .replace(b"size=0", b"size=5120")
        .replace(b"queue_id=", b"queue_id=4jXCs06YbRzJJ2Y")
    )
    request = protocol.parse_request(block + b"\n")
    assert (request.protocol_state, request.recipient_count, request.size, request.queue_id) == (
        "END-OF-MESSAGE",
        3,
        5120,
        "4jXCs06YbRzJJ2Y",
    )


def test_unknown_attributes_and_values_with_equals_signs() -> None:
    attributes = protocol.parse_block(b"request=smtpd_access_policy\nfuture_thing=a=b\n")
    assert attributes["future_thing"] == "a=b"


@pytest.mark.parametrize(
    "block, complaint",
    [
        (b"request=smtpd_access_policy\nthis is garbage\n", "not an attribute line"),
        (b"request=smtpd_access_policy\n=value\n", "not an attribute line"),
        (b"protocol_state=RCPT\n", "no request=smtpd_access_policy"),
        (b"request=something_else\n", "no request=smtpd_access_policy"),
        (b"request=smtpd_access_policy\nsender=" + b"a" * 513 + b"\n", "over 512 characters"),
        (b"request=smtpd_access_policy\n" + b"n" * 513 + b"=1\n", "over 512 characters"),
        (b"request=smtpd_access_policy\nsize=12x\n", "is not a number"),
        (b"request=smtpd_access_policy\nrecipient_count=-1\n", "is not a number"),
    ],
)
def test_garbage_is_refused(block: bytes, complaint: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=complaint):
        protocol.parse_request(block)


def test_an_attribute_of_exactly_512_characters_is_fine() -> None:
    request = protocol.parse_request(b"request=smtpd_access_policy\nsender=" + b"a" * 512)
    assert request.protocol_state == ""


def test_non_utf8_bytes_do_not_break_parsing() -> None:
    request = protocol.parse_request(b"request=smtpd_access_policy\nsasl_username=\xff\xfe\n")
    assert request.sasl_username == "\ufffd\ufffd"


def test_encode_action_keeps_the_answer_one_line() -> None:
    assert protocol.encode_action("DUNNO") == b"action=DUNNO\n\n"
    assert protocol.encode_action("450 4.7.1 a\nb") == b"action=450 4.7.1 a b\n\n"


@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_protocol_error(block: bytes) -> None:
    try:
        protocol.parse_request(block)
    except protocol.ProtocolError:
        pass


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(blacklist_characters="=\n\r"), min_size=1, max_size=40),
        st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60),
        max_size=20,
    )
)
def test_any_attribute_set_parses_or_raises_protocol_error(attributes: dict[str, str]) -> None:
    block = "".join(f"{k}={v}\n" for k, v in attributes.items())
    try:
        protocol.parse_request(
            ("request=smtpd_access_policy\n" + block).encode("utf-8", "surrogatepass")
        )
    except protocol.ProtocolError:
        pass
