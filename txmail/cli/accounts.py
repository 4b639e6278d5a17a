"""`txmail accounts`: create, inspect, suspend and remove sending accounts (kept in Redis)."""

from __future__ import annotations

import json
import sys
import time

import click

from txmail import store
from txmail.accounts import settings as account_settings
from txmail.accounts.records import Account, Accounts, Logins, generate_password
from txmail.cli.confirm import confirm, yes_option
from txmail.errors import UsageError


def _accounts(obj: object) -> Accounts:
    settings = obj.settings  # type: ignore[attr-defined]
    return Accounts(store.connect(settings), store.Keys(settings.redis.prefix))


def _within_node(obj: object, values: dict[str, object]) -> dict[str, object]:
    """Postfix's message_size_limit must cover every account's max_message_size."""
    ceiling = obj.settings.postfix.message_size_limit  # type: ignore[attr-defined]
    size = values.get("max_message_size")
    if isinstance(size, int) and size > ceiling:
        raise UsageError(
            f"max_message_size: {size} is above this node's "
            f"postfix.message_size_limit ({ceiling}); raise that in txmail.toml "
            "and restart `txmail up` first"
        )
    return values


def _read_password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    if password_stdin == generate:
        raise UsageError("give exactly one of --password-stdin or --generate-password")
    if generate:
        return generate_password(), True
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on standard input")
    return password, False


password_options = [
    click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input.",
    ),
    click.option(
        "--generate-password",
        "generate",
        is_flag=True,
        help="Generate a strong password and print it once.",
    ),
]


def with_password_options(fn):  # type: ignore[no-untyped-def]
    for option in reversed(password_options):
        fn = option(fn)
    return fn


@click.group("accounts")
def accounts() -> None:
    """Manage sending accounts. The SASL login is the account name, or one of the account's
    own logins (`txmail accounts login`)."""


@accounts.command("add")
@click.argument("name")
@click.option(
    "--domain",
    "domains",
    multiple=True,
    required=True,
    help="A sending domain this account owns (repeat for more).",
)
@with_password_options
@click.option("--webhook-url", default="", help="Where this account's events are posted.")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="An account setting (see `txmail accounts settings`); repeat for more.",
)
@click.pass_obj
def add(
    obj: object,
    name: str,
    domains: tuple[str, ...],
    password_stdin: bool,
    generate: bool,
    webhook_url: str,
    assignments: tuple[str, ...],
) -> None:
    """Create account NAME owning the given sending domains."""
    values = _within_node(obj, dict(account_settings.parse_assignment(a) for a in assignments))
    password, generated = _read_password(password_stdin, generate)
    account = _accounts(obj).add(
        name, list(domains), password, webhook_url=webhook_url, settings=values
    )
    click.echo(f"account {account.name} created for {', '.join(account.domains)}")
    if generated:
        click.echo(f"password: {password}")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(obj: object, as_json: bool) -> None:
    """List every account."""
    rows = _accounts(obj).all()
    if as_json:
        click.echo(json.dumps([a.public() for a in rows], indent=2))
        return
    for a in rows:
        click.echo(f"{a.name:24} {a.status:10} {', '.join(a.domains)}")


@accounts.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(obj: object, name: str, as_json: bool) -> None:
    """Show one account, with its warm-up day and today's usage."""
    from txmail.cli.policyd import today

    store_accounts = _accounts(obj)
    account = store_accounts.get(name)
    usage = today(obj.settings, store_accounts.client, account)  # type: ignore[attr-defined]
    logins = [x.login for x in Logins(store_accounts.client, store_accounts.keys).list(name)]
    if as_json:
        click.echo(json.dumps({**account.public(), "logins": logins, "usage": usage}, indent=2))
        return
    _print_account(account)
    click.echo(f"logins:      {', '.join([account.name, *logins])}")
    click.echo(f"warm-up:     {usage['warmup_text']}")
    click.echo(f"today:       {usage['today_text']}")


def _print_account(account: Account) -> None:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(account.created_at))
    click.echo(f"name:        {account.name}")
    click.echo(
        f"status:      {account.status}"
        + (f" ({account.suspended_reason})" if account.suspended else "")
    )
    click.echo(f"domains:     {', '.join(account.domains)}")
    click.echo(f"webhook url: {account.webhook_url or '-'}")
    click.echo(f"created:     {created}")
    for key, value in account.settings.as_dict().items():
        shown = ",".join(value) if isinstance(value, list) else value
        click.echo(f"  {key}: {shown}")
    for sender, tracked in sorted(account.sender_track_bounces.items()):
        click.echo(f"  track_bounces for {sender}: {tracked}")


@accounts.command("set")
@click.argument("name")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_obj
def set_(obj: object, name: str, assignments: tuple[str, ...]) -> None:
    """Change account settings, e.g. `txmail accounts set acme max_recipients=50`."""
    values = _within_node(obj, dict(account_settings.parse_assignment(a) for a in assignments))
    _accounts(obj).update_settings(name, values)
    for key, value in values.items():
        click.echo(f"{name}: {key} = {value}")


@accounts.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.pass_obj
def unset(obj: object, name: str, keys: tuple[str, ...]) -> None:
    """Return account settings to their defaults."""
    _accounts(obj).reset_settings(name, list(keys))
    click.echo(f"{name}: {', '.join(keys)} back to default")


@accounts.command("settings")
def settings_reference() -> None:
    """List every account setting with its default and meaning."""
    click.echo(account_settings.reference(), nl=False)


@accounts.command("passwd")
@click.argument("name")
@with_password_options
@click.pass_obj
def passwd(obj: object, name: str, password_stdin: bool, generate: bool) -> None:
    """Set a new password for NAME."""
    password, generated = _read_password(password_stdin, generate)
    _accounts(obj).set_password(name, password)
    click.echo(f"password of {name} changed")
    if generated:
        click.echo(f"password: {password}")


@accounts.command("suspend")
@click.argument("name")
@click.option(
    "--reason",
    default="suspended by the operator",
    show_default=True,
    help="Shown to the client in the refusal.",
)
@click.pass_obj
def suspend(obj: object, name: str, reason: str) -> None:
    """Refuse all mail from NAME until it is resumed."""
    _accounts(obj).suspend(name, reason)
    click.echo(f"account {name} suspended")


@accounts.command("resume")
@click.argument("name")
@click.pass_obj
def resume(obj: object, name: str) -> None:
    """Let a suspended account send again."""
    _accounts(obj).resume(name)
    click.echo(f"account {name} resumed")


@accounts.command("remove")
@click.argument("name")
@yes_option
@click.pass_obj
def remove(obj: object, name: str, yes: bool) -> None:
    """Delete NAME and release its domains and logins (asks first, unless --yes)."""
    store_accounts = _accounts(obj)
    store_accounts.get(name)  # NotFound before asking about an account that is not there
    confirm(yes, f"remove account {name} with its logins, and release its domains")
    store_accounts.remove(name)
    click.echo(f"account {name} removed")


@accounts.command("apikey")
@click.argument("name")
@click.option("--list", "list_keys", is_flag=True, help="List the key ids of NAME instead.")
@click.option(
    "--revoke",
    "revoke_id",
    metavar="ID",
    default="",
    help="Revoke the key with this id instead (asks first, unless --yes).",
)
@yes_option
@click.pass_obj
def apikey(obj: object, name: str, list_keys: bool, revoke_id: str, yes: bool) -> None:
    """Create an HTTP API key for NAME (printed once; only its hash is kept)."""
    from txmail.accounts.records import ApiKeys

    store_accounts = _accounts(obj)
    api_keys = ApiKeys(store_accounts.client, store_accounts.keys)
    if list_keys:
        for row in api_keys.list(name):
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["created_at"]))
            click.echo(f"{row['id']}  created {created}")
        return
    if revoke_id:
        if revoke_id not in {row["id"] for row in api_keys.list(name)}:
            raise UsageError(f"account {name} has no API key {revoke_id!r} (see --list)")
        confirm(yes, f"revoke API key {revoke_id} of {name}: clients using it are refused")
        if not api_keys.revoke(name, revoke_id):
            raise UsageError(f"account {name} has no API key {revoke_id!r} (see --list)")
        click.echo(f"API key {revoke_id} of {name} revoked")
        return
    key_id, key = api_keys.create(name)
    click.echo(f"API key {key_id} created for {name}; it is shown only now:")
    click.echo(key)


def _logins(obj: object) -> Logins:
    store_accounts = _accounts(obj)
    return Logins(store_accounts.client, store_accounts.keys)


@accounts.group("login")
def login() -> None:
    """Extra SASL logins of an account: email addresses, each with its own password."""


@login.command("add")
@click.argument("name")
@click.argument("login_name", metavar="LOGIN")
@with_password_options
@click.pass_obj
def login_add(
    obj: object, name: str, login_name: str, password_stdin: bool, generate: bool
) -> None:
    """Let account NAME log in as LOGIN (an email address) with a password of its own."""
    password, generated = _read_password(password_stdin, generate)
    added = _logins(obj).add(name, login_name, password)
    click.echo(f"login {added.login} added to account {name}")
    if generated:
        click.echo(f"password: {password}")


@login.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def login_list(obj: object, name: str, as_json: bool) -> None:
    """List the logins of account NAME (besides its name)."""
    _accounts(obj).get(name)
    rows = _logins(obj).list(name)
    if as_json:
        click.echo(json.dumps([x.public() for x in rows], indent=2))
        return
    for row in rows:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.created_at))
        click.echo(f"{row.login}  created {created}")


@login.command("passwd")
@click.argument("name")
@click.argument("login_name", metavar="LOGIN")
@with_password_options
@click.pass_obj
def login_passwd(
    obj: object, name: str, login_name: str, password_stdin: bool, generate: bool
) -> None:
    """Set a new password for LOGIN of account NAME; its other logins keep theirs."""
    password, generated = _read_password(password_stdin, generate)
    _logins(obj).set_password(name, login_name, password)
    click.echo(f"password of login {login_name.strip().lower()} changed")
    if generated:
        click.echo(f"password: {password}")


@login.command("remove")
@click.argument("name")
@click.argument("login_name", metavar="LOGIN")
@yes_option
@click.pass_obj
def login_remove(obj: object, name: str, login_name: str, yes: bool) -> None:
    """Remove LOGIN from account NAME: clients using it can no longer log in (asks first,
    unless --yes)."""
    logins = _logins(obj)
    found = logins.get(name, login_name)
    confirm(yes, f"remove login {found.login} of account {name}")
    logins.remove(name, found.login)
    click.echo(f"login {found.login} removed from account {name}")


@accounts.group("trackbounces")
def trackbounces() -> None:
    """Bounce tracking per sending address or domain (SMTPeter: per sender), beside the
    account's track_bounces setting. Precedence: the send API's per-message `trackbounces`,
    then the address, then the domain, then the account."""


@trackbounces.command("set")
@click.argument("name")
@click.argument("sender", metavar="ADDRESS|DOMAIN")
@click.argument("value", type=click.Choice(["on", "off"]))
@click.pass_obj
def trackbounces_set(obj: object, name: str, sender: str, value: str) -> None:
    """Turn bounce tracking on or off for mail from one address or domain of account NAME."""
    _accounts(obj).set_sender_track_bounces(name, sender, value == "on")
    click.echo(f"{name}: track_bounces for {sender.strip().lower()} = {value == 'on'}")


@trackbounces.command("unset")
@click.argument("name")
@click.argument("sender", metavar="ADDRESS|DOMAIN")
@click.pass_obj
def trackbounces_unset(obj: object, name: str, sender: str) -> None:
    """Let the account's track_bounces setting apply again to an address or domain."""
    _accounts(obj).set_sender_track_bounces(name, sender, None)
    click.echo(f"{name}: track_bounces for {sender.strip().lower()} follows the account")


@trackbounces.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def trackbounces_list(obj: object, name: str, as_json: bool) -> None:
    """Show the addresses and domains of NAME with their own bounce tracking."""
    account = _accounts(obj).get(name)
    entries = dict(sorted(account.sender_track_bounces.items()))
    if as_json:
        click.echo(
            json.dumps({"account": account.settings.track_bounces, "senders": entries}, indent=2)
        )
        return
    click.echo(f"account {name}: track_bounces = {account.settings.track_bounces}")
    for sender, value in entries.items():
        click.echo(f"{sender}: track_bounces = {value}")


COMMANDS = [accounts]
