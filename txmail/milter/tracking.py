"""Open and click tracking: the milter rewrites HTML parts so the tracker sees opens and clicks.

SYNOPSIS
    choice = wanted(plan.flags, account.settings)            # Tracking(opens, clicks)
    rewritten = rewrite_html(message_bytes, signer, base_url, account, queue_id, recipient,
                             opens=True, clicks=True)       # None when nothing changed
    body = track_for(submission, tracker, choice, recipient)  # the milter's call site
    body = apply(submission, settings, tracker)               # the same, body shared

DESCRIPTION
    Whether a message is tracked: bits 1 (opens) and 2 (clicks) of X-Mxm-Flags when the header
    is there (it overrides the account, as Maxemail documents), else the account settings
    track_opens and track_clicks.

    Clicks: in every text/html part that is not an attachment (and not inside an attached
    message), each <a href> with an absolute http or https URL becomes
    BASE/c/TOKEN, TOKEN signed and carrying the message (queue id), the recipient, the link's
    index and the URL (txmail/tokens/links.py). Never rewritten: mailto:, tel: and other
    schemes, in-page anchors (#top), relative links, and links marked as unsubscribe links:
    an attribute data-unsubscribe, data-notrack, data-no-track, data-txmail-notrack,
    rel="unsubscribe", or a URL that the List-Unsubscribe header names.
    Opens: a 1x1 image BASE/o/TOKEN.gif goes before the last </body> of the first HTML part
    (at its end when there is none).

    Each rewritten part keeps its Content-Transfer-Encoding (base64 and quoted-printable are
    encoded again; 7bit and 8bit lines are wrapped below 998 bytes at a space), so the
    message's own headers never change and only the body is replaced (smfi_replacebody).

    One queue file has one body for all its recipients, so a tracked message with several
    recipients (or with the BCC copy of single-recipient mode, which must never be tracked)
    is split: the first recipient keeps the client's queue file, tracked for them
    (track_for), and every other recipient gets a copy of its own, tracked for them or, the
    BCC copy, not at all (milter/copies.py, finish.py). Every token names one recipient.
    Without the copy listener (`apply`) the body stays shared: the token's recipient is the
    only recipient or "", and a message with a BCC copy is not rewritten (logged). The milter
    calls this after every rule and before the envelope rewrite and DKIM, which signs the
    rewritten message.

FAILURE
    A part whose charset is unknown or whose text cannot be encoded again is left as it is;
    rewriting never refuses a message.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.message
import html
import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.policy import compat32

from txmail.accounts.settings import AccountSettings
from txmail.config import Settings
from txmail.milter.submission import Submission
from txmail.store.secrets import SharedSecrets
from txmail.tokens.links import LinkSigner, Mark, Tracking, public_base_url

log = logging.getLogger("txmail.milter")

OPEN_TRACKING, CLICK_TRACKING = 1, 2  # X-Mxm-Flags bits (rules/flags.py)
# A start tag <a ...>, attribute values may hold ">" when quoted.
A_TAG = re.compile(r"""<a(?=[\s>/])(?:[^>"']|"[^"]*"|'[^']*')*>""", re.I)
HREF = re.compile(
    r"""(?P<lead>\shref\s*=\s*)"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))""",
    re.I,
)
ATTRIBUTE = re.compile(r"""\s([a-z][a-z0-9_:.-]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""", re.I)
BODY_END = re.compile(rb"</body\s*>", re.I)
ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte decoded with surrogateescape
NO_TRACK_ATTRIBUTES = {"data-unsubscribe", "data-notrack", "data-no-track", "data-txmail-notrack"}
MAX_LINE = 998  # RFC 5322 §2.1.1, without CRLF
WRAP_AT = 900
MAX_PARTS = 200  # cap the work a hostile message can cause


@dataclass(frozen=True)
class Rewritten:
    body: bytes  # the message body after the header block, CRLF line ends
    links: int  # links that now go through the tracker
    pixel: bool  # whether an open pixel went in


def wanted(flags: int | None, settings: AccountSettings) -> Tracking:
    """Opens and clicks for this message: X-Mxm-Flags bits 1 and 2, else the account's."""
    if flags is not None:
        return Tracking(opens=bool(flags & OPEN_TRACKING), clicks=bool(flags & CLICK_TRACKING))
    return Tracking(
        opens=settings.track_opens,
        clicks=settings.track_clicks,
    )


def _html_parts(message: email.message.Message) -> list[email.message.Message]:
    """text/html leaves that are shown as the message, not attachments nor attached mail."""
    found: list[email.message.Message] = []
    stack = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        if part.is_multipart():
            if part.get_content_maintype() == "message":
                continue  # an attached message (message/rfc822) belongs to somebody else
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[0:0] = [p for p in payload if isinstance(p, email.message.Message)]
            continue
        if part.get_content_type() != "text/html":
            continue
        # str(): a value with raw 8-bit bytes comes back as an email.header.Header
        if str(part.get("Content-Disposition", "")).strip().lower().startswith("attachment"):
            continue
        found.append(part)
    return found


def _unsubscribe_urls(message: email.message.Message) -> set[str]:
    urls: set[str] = set()
    for value in message.get_all("List-Unsubscribe") or []:
        urls.update(u.strip() for u in re.findall(r"<([^>]+)>", str(value)))
    return urls


def _marked_no_track(tag: str) -> bool:
    for match in ATTRIBUTE.finditer(tag):
        name = match.group(1).lower()
        if name in NO_TRACK_ATTRIBUTES:
            return True
        if name == "rel" and "unsubscribe" in (match.group(2) or "").lower():
            return True
    return False


def trackable(url: str) -> bool:
    """Only absolute web links: never mailto:, tel:, javascript:, anchors or relative links,
    nor a link with bytes that are not text in its part's charset (a UTF-8 link in a part
    labelled us-ascii): those stay as escapes no token can carry, so the link is left as it is."""
    return url.strip().lower().startswith(("http://", "https://")) and not ESCAPED_BYTE.search(url)


class _Counter:
    def __init__(self) -> None:
        self.links = 0


def _rewrite_links(
    text: str, make_url: Callable[[int, str], str], skip: set[str], counter: _Counter
) -> str:
    def one_tag(match: re.Match[str]) -> str:
        tag = match.group(0)
        href = HREF.search(tag)
        if href is None or _marked_no_track(tag):
            return tag
        raw = (
            href.group("dq")
            if href.group("dq") is not None
            else (href.group("sq") if href.group("sq") is not None else href.group("bare"))
        )
        url = html.unescape(raw).strip()
        if not trackable(url) or url in skip:
            return tag
        tracked = make_url(counter.links, url)
        counter.links += 1
        return f'{tag[: href.start()]}{href.group("lead")}"{tracked}"{tag[href.end() :]}'

    return A_TAG.sub(one_tag, text)


def _add_pixel(data: bytes, pixel: bytes) -> bytes:
    ends = list(BODY_END.finditer(data))
    if ends:
        at = ends[-1].start()
        return data[:at] + pixel + data[at:]
    return data + pixel


def _wrap(data: bytes) -> bytes:
    """Keep 7bit/8bit lines below 998 bytes, breaking at a space (HTML treats both alike)."""
    lines = data.split(b"\n")
    out: list[bytes] = []
    for line in lines:
        while len(line) > MAX_LINE:
            cut = line.rfind(b" ", 0, WRAP_AT)
            if cut <= 0:
                cut = line.find(b" ", WRAP_AT)
            if cut <= 0:
                break  # one unbreakable word: leave it, Postfix will fold it
            out.append(line[:cut])
            line = line[cut + 1 :]
        out.append(line)
    return b"\n".join(out)


def _encode(data: bytes, cte: str) -> str:
    """The part's payload in its own transfer encoding, as the str compat32 keeps."""
    data = data.replace(b"\r\n", b"\n")
    if cte == "base64":
        encoded = base64.encodebytes(data)
    elif cte == "quoted-printable":
        encoded = binascii.b2a_qp(data, istext=True)
    else:
        encoded = _wrap(data)
    return encoded.decode("ascii", "surrogateescape")


def rewrite_html(
    message: bytes | email.message.Message,
    signer: LinkSigner,
    base_url: str,
    account: str,
    queue_id: str,
    recipient: str,
    opens: bool = True,
    clicks: bool = True,
    sent_at: int = 0,
) -> Rewritten | None:
    """The message body with its HTML parts tracked; None when there was nothing to track."""
    if not (opens or clicks):
        return None
    parsed = email.message_from_bytes(message) if isinstance(message, bytes) else message
    parts = _html_parts(parsed)
    if not parts:
        return None
    base = base_url.rstrip("/")
    skip = _unsubscribe_urls(parsed)
    counter = _Counter()
    pixel_added = False

    def click_url(index: int, url: str) -> str:
        token = signer.sign(Mark("click", account, queue_id, recipient, index, url, sent_at))
        return f"{base}/c/{token}"

    changed = False
    for part in parts:
        try:
            charset = part.get_content_charset() or "us-ascii"
        except TypeError:  # charset given whole and in RFC 2231 pieces: the stdlib raises
            charset = "(unreadable)"
        cte = str(part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        try:
            text = data.decode(charset, "surrogateescape")
        except (LookupError, ValueError):  # ValueError: a NUL in the charset name
            log.info(
                "%s: tracking: an HTML part in charset %r is left as it is", queue_id, charset[:40]
            )
            continue
        new_text = _rewrite_links(text, click_url, skip, counter) if clicks else text
        try:
            new_data = new_text.encode(charset, "surrogateescape")
        except (LookupError, ValueError):
            continue
        if opens and not pixel_added:
            token = signer.sign(Mark("open", account, queue_id, recipient, sent_at=sent_at))
            pixel = (
                f'<img src="{base}/o/{token}.gif" width="1" height="1" alt="" '
                'style="display:block;width:1px;height:1px;border:0" />'
            ).encode("ascii")
            new_data = _add_pixel(new_data, pixel)
            pixel_added = True
        if new_data != data:
            part.set_payload(_encode(new_data, cte))
            changed = True
    if not changed:
        return None
    out = io.BytesIO()
    policy = compat32.clone(linesep="\r\n", max_line_length=0)
    try:
        BytesGenerator(out, mangle_from_=False, policy=policy).flatten(parsed)
    except UnicodeEncodeError:
        # The stdlib cannot write back a multipart without a boundary whose text has 8-bit
        # bytes (it reads them as U+FFFD, which its byte writer refuses): left as it is.
        log.info("%s: tracking: the message cannot be written back; left as it is", queue_id)
        return None
    whole = out.getvalue()
    split = whole.find(b"\r\n\r\n")
    body = whole[split + 4 :] if split >= 0 else b""
    return Rewritten(body=body, links=counter.links, pixel=pixel_added)


def apply(
    submission: Submission, settings: AccountSettings, tracker: TrackingContext | None
) -> bytes | None:
    """Tracking for a message whose body stays shared by all its recipients (a node without
    the copy listener, milter/copies.py): the token's recipient is the only recipient, or ""
    when there are several, and a message with a single-recipient BCC copy is left as it is.
    Returns the new body for smfi_replacebody, or None when the body stays as it is."""
    plan = submission.plan
    choice = wanted(plan.flags, settings)
    if tracker is None or not choice or not plan.recipients:
        return None
    if plan.bcc:
        log.info(
            "%s: tracking: off, the message carries a single-recipient BCC copy",
            submission.queue_id,
        )
        return None
    recipient = plan.recipients[0] if len(plan.recipients) == 1 else ""
    return track_for(submission, tracker, choice, recipient)


def track_for(
    submission: Submission,
    tracker: TrackingContext,
    choice: Tracking,
    recipient: str,
    message_id: str = "",
) -> bytes | None:
    """Rewrite the message in `submission` for `recipient`, its tokens naming `message_id`
    (default: the submission's queue id; a copy names its parent's). Returns the new body (also
    put into the submission, so DKIM signs it), or None when there was nothing to track."""
    # Header edits (single-recipient To, stripped control headers) do not touch the body, and
    # List-Unsubscribe is read from the message as the client sent it.
    rewritten = rewrite_html(
        submission.message_bytes(),
        tracker.signer,
        tracker.base_url,
        submission.account,
        message_id or submission.queue_id,
        recipient,
        opens=choice.opens,
        clicks=choice.clicks,
        sent_at=int(time.time()),
    )
    if rewritten is None:
        return None
    submission.replace_body(rewritten.body)
    log.info(
        "%s: tracking: opens=%s clicks=%s links=%d to=<%s>",
        submission.queue_id,
        "yes" if rewritten.pixel else "no",
        "yes" if choice.clicks else "no",
        rewritten.links,
        recipient,
    )
    return rewritten.body


@dataclass(frozen=True)
class TrackingContext:
    """What the milter keeps for tracking: the signer and the tracker's public base URL."""

    signer: LinkSigner
    base_url: str

    @classmethod
    def from_settings(
        cls, settings: Settings, shared: SharedSecrets | None = None
    ) -> TrackingContext:
        return cls(
            signer=LinkSigner(
                (lambda: shared.accepted("tracking_key_file"))
                if shared is not None
                else settings.read_secret("tracking_key_file")
            ),
            base_url=public_base_url(settings),
        )
