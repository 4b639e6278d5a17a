"""`txmail init`: create a state directory with a configuration, a certificate and secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from txmail import config as config_mod
from txmail import store
from txmail.errors import StoreUnavailable, UsageError
from txmail.files import write_private, write_secret
from txmail.stack import tls
from txmail.store import schema, secrets


@click.command("init")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to create (or complete) for this relay's state.",
)
@click.option(
    "--hostname", default="mta.example.test", show_default=True, help="This relay's host name."
)
@click.option(
    "--bounce-domain",
    default="bounces.example.test",
    show_default=True,
    help="Return-path domain for sending domains without their own.",
)
@click.option(
    "--port-offset",
    type=int,
    default=None,
    help="Listen on 127.0.0.1 with every port moved by N (25+N, 465+N, 587+N, "
    "8080+N, capture 2525+N, authpolicy 10030+N).",
)
@click.option(
    "--listen-address",
    default="127.0.0.1",
    show_default=True,
    help="Address every listener binds (0.0.0.0 for all, as in containers).",
)
@click.option("--relayhost", default="", help="Send all mail to HOST:PORT instead of MX hosts.")
@click.option("--redis-url", default="", help="Use this Redis instead of a private one.")
@click.option("--redis-cluster", is_flag=True, help="--redis-url is a Redis Cluster node.")
@click.option(
    "--spam",
    is_flag=True,
    help="Turn the spam check on: `txmail up` runs rspamd (spam.enabled).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing txmail.toml.")
def init(
    state_dir: str,
    hostname: str,
    bounce_domain: str,
    port_offset: int | None,
    listen_address: str,
    relayhost: str,
    redis_url: str,
    redis_cluster: bool,
    spam: bool,
    force: bool,
) -> None:
    """Create DIR/txmail.toml, a self-signed TLS certificate and the HMAC secrets."""
    state = Path(state_dir).resolve()
    config_file = state / config_mod.DEFAULT_CONFIG_NAME
    if config_file.exists() and not force:
        raise UsageError(f"{config_file} exists already (use --force to overwrite it)")
    settings = config_mod.Settings(
        state_dir=str(state), hostname=hostname.lower(), bounce_domain=bounce_domain.lower()
    )
    if port_offset is not None:
        if not 0 <= port_offset <= 60000:
            raise UsageError("--port-offset must be between 0 and 60000")
        settings = config_mod.with_port_offset(settings, port_offset)
    settings = dataclasses.replace(
        settings,
        listen=dataclasses.replace(settings.listen, address=listen_address),
        postfix=dataclasses.replace(settings.postfix, relayhost=relayhost),
        redis=dataclasses.replace(settings.redis, url=redis_url, cluster=redis_cluster),
        spam=dataclasses.replace(settings.spam, enabled=spam),
    )
    config_mod.validate(settings)
    # What `txmail up` would refuse (the state, the venv or txmail behind a folder the
    # unprivileged users may not pass): refused now, before anything is written.
    from txmail.bounce_pipe.server import check_interpreter_reach
    from txmail.stack.supervisor import check_reach

    check_reach(settings, config_file)
    check_interpreter_reach(settings.user)

    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # Postfix and Dovecot run as their own users and must traverse it
    cert, key = settings.path(settings.tls.cert_file), settings.path(settings.tls.key_file)
    if not (cert.exists() and key.exists()):
        cert_pem, key_pem = tls.self_signed(hostname.lower())
        cert.parent.mkdir(parents=True, exist_ok=True)
        cert.write_bytes(cert_pem)
        write_private(key, key_pem)
    if redis_url:
        # A joining node takes the installation's keys; random files of its own would later
        # sign in its name whenever Redis is away (and seed a new installation's keys).
        _join(settings)
    else:
        for name in secrets.NAMES:  # the private Redis takes its keys from these files
            write_secret(settings.path(getattr(settings.secrets, name)))
    write_secret(settings.path(settings.authpolicy.key_file))  # shared with Dovecot
    if store.holds_password(redis_url):  # `txmail up` lets the txmail user's group read it
        write_private(config_file, config_mod.to_toml(settings).encode())
    else:
        config_file.write_text(config_mod.to_toml(settings))
    click.echo(f"txmail: wrote {config_file}")
    click.echo(f"txmail: start the relay with: txmail --config {config_file} up")


def _join(settings: config_mod.Settings) -> None:
    """Take the installation's keys from its Redis (creating them there, once, if this is the
    first node) and keep them as this node's key files, so every node signs and verifies alike.
    A Redis that cannot be reached now is no error, and no key file is written: the node
    fetches the keys from Redis when it starts (`txmail up`)."""
    client = store.connect(settings)
    try:
        secrets.cache_keys(settings, client)
        schema.ensure(client, store.Keys(settings.redis.prefix))
    except StoreUnavailable as exc:
        click.echo(
            f"txmail: {exc}; no key file was written: this node fetches the installation's "
            "keys from Redis when it starts, so `txmail up` needs Redis the first time"
        )
        return
    finally:
        client.close()
    click.echo(
        f"txmail: keys of the installation in {store.shown_url(settings.redis.url)} "
        "in use on this node"
    )


COMMANDS = [init]
