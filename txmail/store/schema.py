"""The version of txmail's layout of keys in Redis, and the migrations between versions.

    PREFIX schema    string    the schema version of the data under PREFIX (an integer)

Code of this release reads and writes schema CURRENT. `txmail init --redis-url` and `txmail up`
write it when it is absent (`ensure()`): an installation from before the version was kept has
the layout of schema 1, the first one, so absent means 1. A node refuses to start on data of
a newer schema than its code knows (a newer release migrated it: run that release, or restore
a backup taken before), and on data of an older schema until `txmail migrate` has brought it
up to date: migrations run when the operator asks, after a backup, never behind their back.

`txmail migrate` applies MIGRATIONS in order, from the stored version to CURRENT, each one
step (N-1 -> N) that writes its new version when it is done, so an interrupted migration
starts again at the step it stopped in. There are none yet: schema 1 is the only one.

Fails: StoreUnavailable when Redis does not answer; ConfigError for a stored version this
code does not know (newer, or not a number).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from txmail.errors import ConfigError
from txmail.store import Client, Keys, decoded_or_none, guard

CURRENT = 1
FIRST = 1  # the layout before the version was stored


@dataclass(frozen=True)
class Migration:
    """One step: brings data of schema `version - 1` to schema `version`."""

    version: int
    description: str
    apply: Callable[[Client, Keys], None]


# In order of version; each one's version is the one before it plus one, ending at CURRENT.
MIGRATIONS: tuple[Migration, ...] = ()


def stored(client: Client, keys: Keys) -> int | None:
    """The schema version under the prefix, or None when none is written."""
    with guard("reading the schema version"):
        raw = decoded_or_none(client.get(keys.schema))
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"Redis key {keys.schema} holds {raw[:40]!r}, not a schema version; it should be "
            f"a number such as {CURRENT}"
        ) from None


def too_new(version: int, keys: Keys) -> ConfigError:
    return ConfigError(
        f"the data under {keys.prefix!r} has schema {version}, newer than this txmail knows "
        f"(schema {CURRENT}): a newer release migrated it; run that release, or restore a "
        "backup taken before the migration"
    )


def ensure(client: Client, keys: Keys) -> int:
    """Write schema FIRST when none is stored (SET NX: every node agrees), and return the
    version; ConfigError when this code cannot run on it (newer, or older until `txmail
    migrate`)."""
    with guard("writing the schema version"):
        client.set(keys.schema, str(FIRST), nx=True)
    found = stored(client, keys)
    version = FIRST if found is None else found  # None only if deleted in between
    if version > CURRENT:
        raise too_new(version, keys)
    if version < CURRENT:
        raise ConfigError(
            f"the data under {keys.prefix!r} has schema {version}, and this txmail needs "
            f"schema {CURRENT}: take a backup (txmail backup FILE), then run `txmail migrate`"
        )
    return version


def migrate(
    client: Client,
    keys: Keys,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    current: int = CURRENT,
) -> tuple[int, list[Migration]]:
    """Apply the steps from the stored version to `current`, in order; the version found and
    the steps applied. ConfigError for a version newer than `current`."""
    found = stored(client, keys)
    version = FIRST if found is None else found
    if version > current:
        raise too_new(version, keys)
    applied = []
    for step in sorted(migrations, key=lambda m: m.version):
        if step.version <= version:
            continue
        if step.version != version + 1:
            raise ConfigError(f"no migration from schema {version} to {step.version}")
        step.apply(client, keys)
        with guard(f"writing schema {step.version}"):
            client.set(keys.schema, str(step.version))
        version = step.version
        applied.append(step)
    if version != current:
        raise ConfigError(f"no migration from schema {version} to {current}")
    if found is None:
        with guard("writing the schema version"):
            client.set(keys.schema, str(version), nx=True)
    return (FIRST if found is None else found), applied
