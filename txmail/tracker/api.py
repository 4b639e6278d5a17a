"""The HTTP send API under /v1: send, messages, events, suppressions and stats of one account.

SYNOPSIS
    curl -H "Authorization: Bearer $KEY" -d @message.json https://HOST/v1/send

DESCRIPTION
    Every request but GET /v1/openapi.json names an account by its API key (`txmail accounts
    apikey NAME`; Redis keeps only the key's SHA-256) and sees only that account's data.

    POST /v1/send {envelope, recipients | recipient, mime, dsn: {notify, ret, envid, orcpt},
    trackbounces, tags} submits `mime` through Postfix as the account (txmail/submit.py):
    policyd's limits and every milter rule apply as on the submission port, so a refusal here
    has the same sentence and SMTP codes as there. `envelope` is MAIL FROM (absent: MAIL
    FROM:<>, bounces recorded, never forwarded); `tags` become an X-Mxm-Tag header;
    `trackbounces` turns bounce tracking on or off for this message alone (absent: the
    sender address's, the sender domain's or the account's choice); it travels to the milter
    as an X-CloudMTA-Track-Bounces header that the milter reads on the API's listener only.
    Answers {"message_id": QUEUE_ID}, the id every event and webhook uses.
    What the request itself shows is judged before anything is sent, as SMTP would judge it:
    more recipients than the account's max_recipients (or 1,000) is a 422 naming the limit
    (552 5.5.3: the same request can never pass, so no Retry-After), and the tags go through
    the milter's own check (txmail/tags.py: the same limits and sentence, 554 5.6.0, 422).

    With an Idempotency-Key header (1 to 255 visible ASCII characters) the same key within
    24 hours gets the first answer, status and body (header Idempotent-Replayed: true), and
    nothing is sent again; a request while the first is still being sent gets 409 (ask again
    in a few seconds); the same key with a different body (another SHA-256) is a 422. The
    header is judged before the body is read (a malformed one is a 400 at once). Only
    Postfix's final answers are kept (queued, or refused for good): bad input, a limit of the
    request or a temporary refusal leaves the key free for the corrected request or the
    retry (txmail/tracker/idempotency.py).

    OUTCOME UNKNOWN: when the whole message was sent to Postfix but its answer never came
    (a timeout, a closed connection) or named no queue id (txmail/submit.py Unknown), the
    message may be queued. The answer is 503 (451 4.3.0, "outcome": "unknown", no
    Retry-After) saying so, and it is kept for the Idempotency-Key like a final one: a retry
    with the key gets it again and never sends a second copy. Look for the message in GET
    /v1/events (by recipient, or `tag`) before sending it again, under a new key.

    GET /v1/messages/{id}   the message record and its events, from the message's own list
                            (txmail/events.py), so found whatever their age while the record
                            lives; another account's message is a 404 like a missing one.
    GET /v1/events          the account's event stream, oldest first, paged by `after`;
                            `kind`, `message_id` and `tag` filter the `limit` entries read
                            (each event carries its message's tags), so a page may hold
                            fewer, and `next` goes on from the last entry read.
    GET|POST|DELETE /v1/suppressions   the account's bounce and unsubscribe lists.
    GET /v1/stats           counts of accepted messages and events per UTC day and kind,
                            and per tag; `tag` for one tag's alone, `days` (1-90, default
                            7) or `since` (YYYY-MM-DD, at most MAX_ANSWER_DAYS = 90 days
                            back, today included) for the days (txmail/stats.py).
    GET /v1/openapi.json    the OpenAPI 3.0 document of all of this (txmail/tracker/openapi.py).

LIMITS
    A request body is never read past what a request can honestly need. For /v1/send that is
    send_body_limit() of the account's max_message_size (3 bytes of JSON for each byte of
    the message, plus room for the other fields at their largest); before the key is checked,
    of Postfix's ceiling, postfix.message_size_limit (tracker/server.py); for the other
    requests with a body, 64 KiB. A Content-Length above the limit is answered 413 at once,
    without reading the body; a body without one (chunked) is cut off with a 413 as soon as
    it passes the limit. Either way the connection is closed after the answer. Sends over
    LARGE_BODY (1 MiB) or of unknown length are read at most tracker.api_large_sends at a
    time per account and process (the others wait unread), and each body must arrive within
    tracker.api_timeout (408 otherwise), so memory stays bounded however many large messages
    an account sends at once, and a slow account only ever waits for itself.

ERRORS
    JSON {"error": {"message", "smtp_code", "status"}}. HTTP status from the SMTP reply:
    4.7.x (limits, warm-up) 429, other 4xx 503 with Retry-After; 5.3.4 (size) 413, 5.7.x
    (policy: sender, attachments, suspension) 403, other 5xx 422. Bad input 400 (501 5.5.4),
    no or unknown key 401 (535 5.7.8), unknown ids 404, an Idempotency-Key in use 409 (451
    4.5.0, Retry-After). Redis trouble 503 (451 4.3.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from txmail import tags as tag_limits
from txmail.accounts.records import Accounts, ApiKeys
from txmail.dsn import notify_words as dsn_notify_words
from txmail.errors import TemporaryFailure, UsageError
from txmail.events import KINDS
from txmail.reports.search import message_json, read_events
from txmail.stats import MAX_ANSWER_DAYS, check_tag, last_days, read_counts, since_days
from txmail.store.suppressions import LISTS, Suppressions
from txmail.submit import (
    TRACK_BOUNCES_HEADER,
    Accepted,
    Envelope,
    Refused,
    Unknown,
    submit,
    xtext,
)
from txmail.tracker import idempotency, openapi
from txmail.tracker.services import SERVICES, Services, error_response

log = logging.getLogger("txmail.tracker")

ADDRESS = re.compile(
    r"^[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f]{1,64}@[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f]"
    r"{1,255}$"
)
QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,32}$")
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
ENVID = re.compile(r"^[\x20-\x7e]{1,100}$")
SEND_FIELDS = {"envelope", "recipients", "recipient", "mime", "dsn", "trackbounces", "tags"}
MAX_RECIPIENTS = 1000  # of one request, whatever the account's max_recipients
MAX_ADDRESS = 320  # characters of an address (ADDRESS: 64 + "@" + 255)
MAX_SMALL_BODY = 64 * 1024  # any request body but a send's (suppressions)
LARGE_BODY = 1024 * 1024  # sends above this wait for one of tracker.api_large_sends
# A send request carries the message as a JSON string. Each byte of mail text is at most 3
# bytes of JSON however the client escapes it: a 2-byte UTF-8 character as \uXXXX (6 bytes for
# 2), a 3- or 4-byte one as one or two of them (6 for 3, 12 for 4), CR LF as \r\n (4 for 2),
# a quote or backslash as 2 bytes for 1; base64 and quoted-printable parts, the bulk of large
# mail, are about 1.03 bytes per byte (\r\n at the end of each 76-character line). Only the C0
# control characters other than TAB, CR and LF (\u0001, 6 for 1) and raw non-UTF-8 bytes sent
# as lone surrogates (\udc80, 6 for 1) take more; mail text does not carry them, so a message
# made of them can be refused here though it would fit.
JSON_BYTES_PER_MESSAGE_BYTE = 3
# Every other field at its largest with each character written as \uXXXX (12 bytes for one
# outside the Basic Multilingual Plane): 1,000 recipients and the envelope and dsn.orcpt
# addresses, 10 tags, dsn.envid; and 64 KiB for field names, punctuation and whitespace.
JSON_ESCAPED_CHARACTER = 12
SEND_FIELDS_ROOM = (
    (MAX_RECIPIENTS + 2) * (MAX_ADDRESS * JSON_ESCAPED_CHARACTER + 4)
    + tag_limits.MAX_TAGS * (tag_limits.MAX_LENGTH * JSON_ESCAPED_CHARACTER + 4)
    + 100 * JSON_ESCAPED_CHARACTER
    + 64 * 1024
)
UNAVAILABLE = (
    "txmail cannot answer right now because its store is unavailable; try again in a few minutes"
)
OUTCOME_UNKNOWN = (
    "The message was handed to Postfix but its answer was lost, so it may have been queued and "
    "sent: look for it in GET /v1/events before sending it again, and send it again only under "
    "a new Idempotency-Key (this key keeps this answer)"
)


class ApiError(Exception):
    def __init__(
        self,
        http_status: int,
        message: str,
        smtp_code: int | None = 501,
        status: str | None = "5.5.4",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.smtp_code = smtp_code
        self.status = status
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(
            self.http_status, self.message, self.smtp_code, self.status, headers=self.headers
        )


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def send_body_limit(max_message_size: int) -> int:
    """The largest body of a /v1/send request whose message has `max_message_size` bytes."""
    return max_message_size * JSON_BYTES_PER_MESSAGE_BYTE + SEND_FIELDS_ROOM


def body_too_large(size: str, limit: int, max_message_size: int | None) -> ApiError:
    """413 for a request body over `limit` (`size` says how much was seen, e.g. "more than
    N bytes"); the connection is closed after the answer (endpoint())."""
    if max_message_size is None:
        what = (
            f"this request takes a JSON body of at most {limit} bytes; send only the "
            "fields it documents"
        )
    else:
        what = (
            f"a send request for this account's largest message ({max_message_size} bytes) "
            f"is at most {limit} bytes; make the message smaller, for example by linking "
            "to large files instead of attaching them"
        )
    return ApiError(413, f"The request body is {size}; {what}", 552, "5.3.4")


Handler = Callable[[web.Request, Services, str], Awaitable[web.StreamResponse]]


def endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authenticate the request's API key, run the handler, map failures to JSON errors."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        try:
            account = await authenticate(request, services)
            return await handler(request, services, account)
        except ApiError as exc:
            response = exc.response()
            if exc.http_status == 413:  # the body was left unread: never reuse the connection
                response.force_close()
            return response
        except UsageError as exc:
            return bad(str(exc)).response()
        except TemporaryFailure as exc:
            log.warning("api: %s %s: %s", request.method, request.path, exc)
            return error_response(503, UNAVAILABLE, 451, "4.3.0", headers={"Retry-After": "60"})

    return wrapped


async def authenticate(request: web.Request, services: Services) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "Authentication required: send the account's API key as "
            "'Authorization: Bearer KEY' (create one with `txmail accounts apikey`)",
            535,
            "5.7.8",
            headers={"WWW-Authenticate": 'Bearer realm="txmail"'},
        )
    account = await asyncio.to_thread(
        ApiKeys(services.client, services.keys).account_of, key.strip()
    )
    if account is None:
        raise ApiError(
            401,
            "Authentication failed: this API key is not known or was revoked",
            535,
            "5.7.8",
            headers={"WWW-Authenticate": 'Bearer realm="txmail"'},
        )
    return account


async def read_body(request: web.Request, limit: int, max_message_size: int | None = None) -> bytes:
    """The request body, read only while it stays within `limit` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise body_too_large(f"{declared} bytes", limit, max_message_size)
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise body_too_large(f"more than {limit} bytes", limit, max_message_size)
    return bytes(body)


async def _json_object(
    request: web.Request, limit: int = MAX_SMALL_BODY, max_message_size: int | None = None
) -> dict[str, Any]:
    return _json_of(await read_body(request, limit, max_message_size))


def _json_of(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON; send a JSON object") from None
    if not isinstance(value, dict):
        raise bad("The request body must be a JSON object")
    return value


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not ADDRESS.match(value.strip()):
        raise bad(f"{name} must be a mail address such as user@example.com")
    return value.strip()


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise bad(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _choice_param(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise bad(f"{name} must be one of {', '.join(allowed)}")
    return raw


# -- POST /v1/send ---------------------------------------------------------------------------


def parse_send(body: dict[str, Any], size_limit: int) -> tuple[Envelope, bytes, Any]:
    """Envelope and message bytes of a send request; the `trackbounces` asked (or None)."""
    unknown = sorted(set(body) - SEND_FIELDS)
    if unknown:
        raise bad(f"unknown field {unknown[0][:40]!r}; known: {', '.join(sorted(SEND_FIELDS))}")
    mime = body.get("mime")
    if not isinstance(mime, str) or not mime.strip():
        raise bad("mime must be the whole message (headers, blank line, body) as a string")
    envelope = body.get("envelope")
    sender = "" if envelope in (None, "") else _address(envelope, "envelope")
    if "recipients" in body and "recipient" in body:
        raise bad("give recipients (a list) or recipient (one address), not both")
    if "recipient" in body:
        recipients = [_address(body["recipient"], "recipient")]
    else:
        given = body.get("recipients")
        if not isinstance(given, list) or not given:
            raise bad("recipients must be a list of mail addresses, at least one")
        if len(given) > MAX_RECIPIENTS:
            raise too_many_recipients(len(given), MAX_RECIPIENTS, "one request takes")
        recipients = [_address(r, "each recipient") for r in given]
    tags = _tags(body.get("tags", []))
    trackbounces = body.get("trackbounces")
    if trackbounces is not None and not isinstance(trackbounces, bool):
        raise bad("trackbounces must be true or false")
    mail_options, rcpt_options, orcpt = _dsn(body.get("dsn"), recipients)
    data = mime.encode("utf-8", "surrogateescape")
    if tags:
        header = "X-Mxm-Tag: " + ",".join(tags) + "\r\n"
        data = header.encode("utf-8") + data
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if len(data) > size_limit:
        raise ApiError(
            413,
            f"The message is {len(data)} bytes; this account sends messages of "
            f"at most {size_limit} bytes: make it smaller, for example by linking to "
            "large files instead of attaching them",
            552,
            "5.3.4",
        )
    if any(b > 127 for b in data):
        mail_options.append("BODY=8BITMIME")
    if not all(a.isascii() for a in [sender, *recipients]):
        mail_options.append("SMTPUTF8")
    return (
        Envelope(
            sender=sender,
            recipients=recipients,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            orcpt=orcpt,
        ),
        data,
        trackbounces,
    )


def too_many_recipients(given: int, limit: int, who: str) -> ApiError:
    """422 for more recipients than `limit` (`who` ... "at most LIMIT"): the same request
    can never pass, so no Retry-After, unlike the SMTP reply (452 4.5.3), where the
    recipients accepted so far are sent and the client sends the rest."""
    return ApiError(
        422,
        f"Too many recipients ({given}; {who} at most {limit}); send the rest in another message",
        552,
        "5.5.3",
    )


def _tags(given: Any) -> tuple[str, ...]:
    """The tags of a send, judged as the milter judges X-Mxm-Tag (txmail/tags.py): the
    same limits and sentence, 422, before anything is sent."""
    if not isinstance(given, list) or not all(
        isinstance(t, str) and t.strip() and "," not in t for t in given
    ):
        raise bad(
            'tags must be a list of texts without commas, such as ["password-reset"] '
            "(a comma separates tags in X-Mxm-Tag)"
        )
    merged = tag_limits.merge(given)
    if isinstance(merged, tag_limits.TagRefusal):
        raise ApiError(422, merged.sentence, merged.code, merged.status)
    return merged


def _dsn(dsn: Any, recipients: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    if dsn is None:
        return [], [], {}
    if not isinstance(dsn, dict) or set(dsn) - {"notify", "ret", "envid", "orcpt"}:
        raise bad("dsn must be an object with notify, ret, envid and orcpt")
    mail_options: list[str] = []
    rcpt_options: list[str] = []
    orcpt: dict[str, str] = {}
    notify = dsn.get("notify")
    if notify is not None:
        words = dsn_notify_words(notify) if isinstance(notify, str) else None
        if words is None:
            raise bad("dsn.notify must be NEVER or a comma list of SUCCESS, FAILURE, DELAY")
        rcpt_options.append("NOTIFY=" + ",".join(words))
    ret = dsn.get("ret")
    if ret is not None:
        if not isinstance(ret, str) or ret.upper() not in ("FULL", "HDRS"):
            raise bad("dsn.ret must be FULL or HDRS")
        mail_options.append(f"RET={ret.upper()}")
    envid = dsn.get("envid")
    if envid is not None:
        if not isinstance(envid, str) or not ENVID.match(envid):
            raise bad("dsn.envid must be 1 to 100 printable ASCII characters")
        mail_options.append(f"ENVID={xtext(envid)}")
    if dsn.get("orcpt") is not None:
        if len(recipients) != 1:
            raise bad("dsn.orcpt names the original recipient of a send to one recipient")
        orcpt[recipients[0]] = _address(dsn["orcpt"], "dsn.orcpt")
    return mail_options, rcpt_options, orcpt


def http_status_of(refusal: Refused) -> int:
    if refusal.temporary:
        return 429 if refusal.status.startswith("4.7.") else 503
    if refusal.status == "5.3.4":
        return 413
    if refusal.status.startswith("5.7."):
        return 403
    return 422


def api_socket(services: Services) -> str:
    """Postfix's private/txmail-api socket (master.cf) in this node's queue directory."""
    return str(services.settings.postfix_queue_path / "private/txmail-api")


@endpoint
async def send(request: web.Request, services: Services, account: str) -> web.StreamResponse:
    record = await asyncio.to_thread(Accounts(services.client, services.keys).find, account)
    if record is None:
        raise ApiError(
            401,
            f"Account {account} no longer exists; ask the relay's operator to restore it",
            535,
            "5.7.8",
        )
    try:
        key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    except ValueError as exc:
        raise bad(str(exc)) from None
    max_size = min(record.settings.max_message_size, services.settings.postfix.message_size_limit)
    declared = request.content_length
    large = declared is None or declared > LARGE_BODY
    # A body of several MB is buffered, parsed and copied: only so many at once per account
    # (an account that sends many, or slowly, waits for itself, never for another account),
    # and every body must arrive within api_timeout, counted from when it may be read (the
    # deadline is made once the slot is held).
    slot = (
        services.large_sends.setdefault(
            account, asyncio.Semaphore(services.settings.tracker.api_large_sends)
        )
        if large
        else contextlib.nullcontext()
    )
    wait = services.settings.tracker.api_timeout
    try:
        async with slot, asyncio.timeout(wait):
            raw = await read_body(request, send_body_limit(max_size), max_size)
    except TimeoutError:
        raise ApiError(
            408,
            f"The request body did not arrive within {wait:g} seconds; send "
            "it again, or a smaller message",
            451,
            "4.4.2",
        ) from None
    request_hash = "" if key is None else await asyncio.to_thread(idempotency.body_hash, raw)
    body = _json_of(raw)
    del raw
    envelope, data, trackbounces = parse_send(body, max_size)
    del body
    if len(envelope.recipients) > record.settings.max_recipients:
        raise too_many_recipients(
            len(envelope.recipients), record.settings.max_recipients, "this account sends to"
        )
    # Always on top, "default" when the request has no trackbounces: the milter reads only the
    # first copy, so one in the client's own `mime` is never taken for the API's (submit.py).
    flag = {True: "true", False: "false", None: "default"}[trackbounces]
    data = f"{TRACK_BOUNCES_HEADER}: {flag}\r\n".encode("ascii") + data
    if key is None:
        answer, _ = await _submit(services, account, envelope, data)
        return answer
    # Claimed only now, when everything but Postfix has said yes: an answer given before this
    # point (bad input, a limit of the request) never binds the key to a body.
    marker, held = await asyncio.to_thread(
        idempotency.claim,
        services.client,
        services.keys,
        account,
        key,
        request_hash,
        pending_seconds(services),
        secrets.token_hex(8),
    )
    if held is not None:
        return replay(key, request_hash, held)
    # Anything but an answer (a bug, a cancelled request) leaves the marker to lapse: the
    # message may have been sent, so the key is not freed for a retry at once.
    answer, final = await _submit(services, account, envelope, data)
    kept = (answer.status, answer.text or "") if final else None
    await asyncio.to_thread(_settle, services, account, key, marker, request_hash, kept)
    return answer


def send_seconds(services: Services) -> float:
    """The deadline of the whole SMTP dialogue of one send (submit()'s `total`): every step
    also waits at most api_timeout, however many recipients."""
    return 3 * services.settings.tracker.api_timeout


def pending_seconds(services: Services) -> int:
    """How long a claimed Idempotency-Key waits for its answer before it lapses: longer than
    a send can take (send_seconds()), with room for Redis and the thread pool."""
    return int(max(300, send_seconds(services) + services.settings.tracker.api_timeout))


def replay(key: str, request_hash: str, held: idempotency.Held) -> web.Response:
    """The answer to a request whose Idempotency-Key another request holds."""
    if held.body_hash != request_hash:
        raise ApiError(
            422,
            f"Idempotency-Key {key[:64]!r} was used within the last 24 hours for a different "
            "request; send a new key with a new message, or the first request unchanged",
            501,
            "5.5.4",
        )
    if held.pending:
        raise ApiError(
            409,
            f"A request with Idempotency-Key {key[:64]!r} is still being sent; ask again in a "
            "few seconds for its answer (nothing is sent twice)",
            451,
            "4.5.0",
            headers={"Retry-After": "5"},
        )
    return web.Response(
        status=held.status,
        text=held.answer,
        content_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def _settle(
    services: Services,
    account: str,
    key: str,
    marker: str,
    request_hash: str,
    answer: tuple[int, str] | None,
) -> None:
    """Keep the answer for the key, or free it; Redis failing here changes no answer (the
    message is sent or refused already), so it is logged and the marker lapses."""
    try:
        idempotency.settle(
            services.client, services.keys, account, key, marker, request_hash, answer
        )
    except TemporaryFailure as exc:
        log.warning(
            "api: account=%s: the answer to an Idempotency-Key is not kept (%s); a retry "
            "with that key gets 409 until its marker lapses",
            account,
            exc,
        )


async def _submit(
    services: Services, account: str, envelope: Envelope, data: bytes
) -> tuple[web.Response, bool]:
    """Postfix's answer to the message as the API gives it; True when an Idempotency-Key
    keeps it: it is final (queued, or refused for good) or the outcome is unknown (the key
    must never send the message a second time)."""
    outcome = await asyncio.to_thread(
        submit,
        api_socket(services),
        account,
        envelope,
        data,
        services.settings.tracker.api_timeout,
        send_seconds(services),
    )
    if isinstance(outcome, Unknown):
        log.warning(
            "api: account=%s from=<%s> nrcpt=%d: outcome unknown (%s)",
            account,
            envelope.sender,
            len(envelope.recipients),
            outcome.reason,
        )
        body = {
            "error": {
                "message": OUTCOME_UNKNOWN,
                "smtp_code": 451,
                "status": "4.3.0",
                "outcome": "unknown",
            }
        }
        return web.json_response(body, status=503), True
    if isinstance(outcome, Accepted):
        log.info(
            "%s: api: account=%s from=<%s> nrcpt=%d",
            outcome.queue_id,
            account,
            envelope.sender,
            len(envelope.recipients),
        )
        return web.json_response({"message_id": outcome.queue_id}), True
    log.info(
        "NOQUEUE: api: refused: account=%s from=<%s>%s: %d %s %s",
        account,
        envelope.sender,
        f" to=<{outcome.recipient}>" if outcome.recipient else "",
        outcome.code,
        outcome.status,
        outcome.text,
    )
    headers = {"Retry-After": "60"} if outcome.temporary else None
    error = error_response(
        http_status_of(outcome), outcome.text, outcome.code, outcome.status, headers=headers
    )
    if outcome.recipient:
        payload = json.loads(error.text or "{}")
        payload["error"]["recipient"] = outcome.recipient
        error = web.json_response(payload, status=error.status, headers=headers)
    return error, not outcome.temporary


# -- GET /v1/messages/{id}, /v1/events ----------------------------------------------------------


def _message(services: Services, account: str, queue_id: str) -> dict[str, Any] | None:
    """The message as GET /v1/messages/{id} shows it (txmail/reports/search.py, which the
    console's timeline reads too); None when missing or another account's."""
    ttl = services.settings.milter.message_ttl_days * 86400
    return message_json(services.client, services.keys, ttl, account, queue_id)


@endpoint
async def message(request: web.Request, services: Services, account: str) -> web.StreamResponse:
    queue_id = request.match_info["message_id"]
    found = (
        await asyncio.to_thread(_message, services, account, queue_id)
        if QUEUE_ID.match(queue_id)
        else None
    )
    if found is None:
        days = services.settings.milter.message_ttl_days
        raise ApiError(
            404,
            f"No message {queue_id[:40]!r} of this account is known (records are kept {days} days)",
            550,
            "5.1.0",
        )
    return web.json_response(found)


@endpoint
async def events(request: web.Request, services: Services, account: str) -> web.StreamResponse:
    limit = _int_param(request, "limit", 100, 1, 1000)
    kind = _choice_param(request, "kind", KINDS)
    after = request.query.get("after", "")
    if after and not STREAM_ID.match(after):
        raise bad("after must be the `next` value of a previous answer")
    message_id = request.query.get("message_id")
    if message_id is not None and not QUEUE_ID.match(message_id):
        raise bad("message_id must be a message id as /v1/send returned it")
    raw_tag = request.query.get("tag")
    tag = check_tag(raw_tag) if raw_tag is not None else None
    found, after = await asyncio.to_thread(
        read_events, services.client, services.keys, account, after, limit, kind, message_id, tag
    )
    return web.json_response({"events": found, "next": after})


# -- /v1/suppressions ------------------------------------------------------------------------


@endpoint
async def list_suppressions(
    request: web.Request, services: Services, account: str
) -> web.StreamResponse:
    list_name = _choice_param(request, "list", LISTS)
    limit = _int_param(request, "limit", 100, 1, 1000)
    entries = await asyncio.to_thread(
        Suppressions(services.client, services.keys).list, account, list_name, limit
    )
    return web.json_response({"suppressions": [e.public() for e in entries]})


@endpoint
async def add_suppression(
    request: web.Request, services: Services, account: str
) -> web.StreamResponse:
    body = await _json_object(request)
    unknown = sorted(set(body) - {"recipient", "list", "reason"})
    if unknown:
        raise bad(f"unknown field {unknown[0][:40]!r}; known: list, reason, recipient")
    recipient = _address(body.get("recipient"), "recipient")
    list_name = body.get("list", "unsubscribe")
    if list_name not in LISTS:
        raise bad(f"list must be one of {', '.join(LISTS)}")
    reason = body.get("reason", "added through the API")
    if not isinstance(reason, str) or len(reason) > 512:
        raise bad("reason must be a text of at most 512 characters")
    entry = await asyncio.to_thread(
        Suppressions(services.client, services.keys).add, account, list_name, recipient, reason
    )
    log.info("api: account=%s suppress <%s> on %s", account, entry.recipient, list_name)
    return web.json_response({"suppression": entry.public()}, status=201)


@endpoint
async def remove_suppression(
    request: web.Request, services: Services, account: str
) -> web.StreamResponse:
    recipient = _address(request.query.get("recipient"), "recipient")
    list_name = _choice_param(request, "list", LISTS)
    suppressions = Suppressions(services.client, services.keys)
    removed = False
    for name in [list_name] if list_name else list(LISTS):
        removed = await asyncio.to_thread(suppressions.remove, account, name, recipient) or removed
    if removed:
        log.info("api: account=%s unsuppress <%s>", account, recipient.lower())
    return web.json_response({"removed": removed})


# -- /v1/stats -------------------------------------------------------------------------------


@endpoint
async def stats(request: web.Request, services: Services, account: str) -> web.StreamResponse:
    raw_tag = request.query.get("tag")
    tag = check_tag(raw_tag) if raw_tag is not None else None
    since = request.query.get("since")
    now = time.time()
    if since is not None:
        if "days" in request.query:
            raise bad("give days or since, not both")
        days = since_days(since, now, services.settings.events.counter_days, MAX_ANSWER_DAYS)
    else:
        days = last_days(_int_param(request, "days", 7, 1, MAX_ANSWER_DAYS), now)
    counts = await asyncio.to_thread(
        read_counts, services.client, services.keys, account, days, tag
    )
    return web.json_response(counts.as_json())


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi.document())


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/openapi.json", openapi_document)
    router.add_post("/v1/send", send)
    router.add_get("/v1/messages/{message_id}", message)
    router.add_get("/v1/events", events)
    router.add_get("/v1/suppressions", list_suppressions)
    router.add_post("/v1/suppressions", add_suppression)
    router.add_delete("/v1/suppressions", remove_suppression)
    router.add_get("/v1/stats", stats)
