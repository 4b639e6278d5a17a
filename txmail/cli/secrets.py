"""`txmail secrets`: the installation's HMAC keys, kept in Redis and shared by every node."""

from __future__ import annotations

import time

import click

from txmail import store
from txmail.cli.confirm import confirm, yes_option
from txmail.errors import UsageError
from txmail.store import secrets

_CHOICES = {short: name for name, short in secrets.NAMES.items()}


@click.group("secrets")
def secrets_group() -> None:
    """Show and rotate the keys that sign bounce addresses, tracking links, webhooks and the
    console's sessions."""


@secrets_group.command("status")
@click.pass_obj
def status(obj: object) -> None:
    """Say when each key was last rotated (never the keys themselves)."""
    settings = obj.settings  # type: ignore[attr-defined]
    shared = secrets.shared(settings, store.connect(settings))
    for short, name in _CHOICES.items():
        ring = shared.ring(name)
        when = (
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ring.rotated_at))
            if ring.rotated_at
            else "never"
        )
        click.echo(
            f"{short:9} rotated {when}"
            + ("; the key before it still verifies" if ring.previous else "")
        )


# What a --revoke cuts off, for each key.
_REVOKED = {
    "bounce": "bounce addresses and copy headers signed before are now refused",
    "tracking": "tracking links signed before are now refused",
    "webhook": "posts are no longer signed with secrets derived from the old key: give "
    "receivers the new ones (txmail webhooks secret ACCOUNT)",
    "console": "console sessions and operator tokens signed before are now refused "
    "(everybody logs in again)",
}


@secrets_group.command("rotate")
@click.argument("key", type=click.Choice(sorted(_CHOICES)))
@click.option(
    "--force",
    is_flag=True,
    help="Rotate even though tokens signed before the last rotation still live (they stop "
    "verifying).",
)
@click.option(
    "--revoke",
    is_flag=True,
    help="The key leaked: make a new one and drop the old one at once, so nothing signed "
    "with it verifies any more (asks first, unless --yes).",
)
@yes_option
@click.pass_obj
def rotate(obj: object, key: str, force: bool, revoke: bool, yes: bool) -> None:
    """Make a new KEY for every node. Tokens signed with the old key keep verifying until the
    next rotation, so a second rotation is refused while tokens signed before the first still
    live (milter.message_ttl_days), unless --force. After a leak, --revoke drops the old key
    (and the one before it) at once."""
    settings = obj.settings  # type: ignore[attr-defined]
    shared = secrets.shared(settings, store.connect(settings))
    lifetime = settings.milter.message_ttl_days * 86400
    safe_at = secrets.safe_to_rotate_at(shared.ring(_CHOICES[key]), lifetime)
    if time.time() < safe_at and not (force or revoke):
        when = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(safe_at))
        raise UsageError(
            f"the {key} key was rotated less than milter.message_ttl_days "
            f"({settings.milter.message_ttl_days} days) ago, and a second rotation now would "
            f"stop the tokens signed before that one from verifying: rotate after {when}, or "
            "with --force to cut them off now (--revoke if the key leaked)"
        )
    if revoke:
        confirm(yes, f"drop the {key} key now: {_REVOKED[key]}")
    shared.rotate(_CHOICES[key], revoke=revoke)
    shared.write_cache(_CHOICES[key])
    if revoke:
        click.echo(
            f"{key}: revoked, the old key dropped; {_REVOKED[key]} (every node within "
            f"{secrets.REFRESH_SECONDS:.0f} s)"
        )
        return
    click.echo(
        f"{key}: rotated; every node uses the new key within {secrets.REFRESH_SECONDS:.0f} s, "
        "and the old one still verifies"
    )


COMMANDS = [secrets_group]
