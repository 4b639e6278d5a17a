"""Recipient addresses as bounce reports and log lines print them, made comparable.

clean_address() turns 'rfc822; <A@B>', '"Name" <a@b>', 'SMTP:a@b' and bare forms into one
lowercase addr-spec (or '' when there is none); ADDRESS_RE finds an address in free text.
Pure functions over short strings; nothing here raises on odd input.
"""

from __future__ import annotations

import re

ADDRESS_RE = re.compile(
    r"""(?:"[^"\n]{1,64}"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,128})@"""
    r"""(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.)*"""
    r"""[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"""
)
_ADDR_TRIM = ".,;:<>()[]{}'\""
_QUOTED_LOCAL_RE = re.compile(r'"[^"\n]{1,64}"@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]')


def clean_address(value: str) -> str:
    """A recipient as reported: lowercase addr-spec, without brackets or type.

    Accepts 'rfc822; <a@b>', '"Name" <a@b>', 'SMTP:a@b' and bare forms.
    Returns '' when there is no address in the value.
    """
    text = value.strip()
    if ";" in text and not text.startswith('"'):
        head, _, rest = text.partition(";")
        if "@" not in head or "@" in rest:
            text = rest.strip()
    if "<" in text and ">" in text:
        inner = (
            text[text.rfind("<") + 1 : text.rfind(">")] if text.rfind("<") < text.rfind(">") else ""
        )
        if "@" in inner:
            text = inner
    text = text.strip()
    if text.lower().startswith(("smtp:", "mailto:")):
        text = text.split(":", 1)[1]
    quoted = _QUOTED_LOCAL_RE.search(text)
    if quoted:
        # "odd..local"@example.org: the quotes belong to the address.
        return quoted.group(0).lower()
    text = text.strip(_ADDR_TRIM).strip()
    if "@" not in text:
        return ""
    if " " in text:
        found = ADDRESS_RE.search(text)
        if not found:
            return ""
        text = found.group(0)
    return text.strip(_ADDR_TRIM).lower()
