"""`txmail backup FILE` and `txmail restore FILE` (see txmail.stack.backup)."""

from __future__ import annotations

from pathlib import Path

import click

from txmail.cli.confirm import confirm, yes_option
from txmail.store import schema


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.pass_obj
def backup(obj: object, file: Path, force: bool) -> None:
    """Write this installation to FILE (mode 0600: it holds every key): the Redis data of its
    prefix, its configuration and the key files of its state directory."""
    from txmail.stack import backup as backup_mod

    written = backup_mod.backup(
        obj.settings,  # type: ignore[attr-defined]
        Path(obj.config_path),  # type: ignore[attr-defined]
        file,
        force=force,
    )
    click.echo(f"txmail: wrote {written.path}: {written.keys} keys, {written.files} files")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Restore into this state directory (default: the one in the backup).",
)
@click.option(
    "--redis-url",
    default=None,
    help="Restore the data into this Redis (default: the backup's redis.url; none: the "
    "private Redis of the state directory).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a configuration, key files and the keys of the prefix that are there "
    "(asks first, unless --yes).",
)
@click.option(
    "--external-files",
    is_flag=True,
    help="Also write the backup's key files that were outside the state directory, to the "
    "paths they had (only into the state directory the backup was made of).",
)
@yes_option
@click.pass_context
def restore(
    ctx: click.Context,
    file: Path,
    state_dir: Path | None,
    redis_url: str | None,
    force: bool,
    external_files: bool,
    yes: bool,
) -> None:
    """Put the installation in FILE (from `txmail backup`) back: configuration, key files and
    Redis data. Refuses to overwrite any of them unless --force, and writes nothing outside
    the state directory unless --external-files. The configuration goes to --config when
    given, else into the state directory."""
    from txmail.stack import backup as backup_mod

    if redis_url is not None:
        backup_mod.check_redis_url(redis_url)
    header = backup_mod.read_header(file)
    if force:
        confirm(
            yes,
            f"replace every key under {header['prefix']!r} and the files in the way with the "
            f"backup of {header['created']}",
        )
    explicit = ctx.find_root().params.get("config_path")
    restored = backup_mod.restore(
        file,
        state_dir=state_dir,
        config_file=Path(explicit) if explicit else None,
        redis_url=redis_url,
        force=force,
        external_files=external_files,
    )
    click.echo(
        f"txmail: restored {restored.keys} keys and {restored.files} files of the backup of "
        f"{header['created']} (txmail {header['txmail']})"
    )
    if restored.left_out:
        shown = ", ".join(restored.left_out[:3]) + (
            " and more" if len(restored.left_out) > 3 else ""
        )
        click.echo(
            f"txmail: left out {len(restored.left_out)} files that were outside the state "
            f"directory ({shown}): copy them by hand, or restore onto the same state directory "
            "with --external-files"
        )
    if restored.schema < schema.CURRENT:
        click.echo(f"txmail: its data has schema {restored.schema}: run `txmail migrate` first")
    click.echo(f"txmail: start the node with: txmail --config {restored.config_file} up")


COMMANDS = [backup, restore]
