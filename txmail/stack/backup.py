"""`txmail backup FILE` and `txmail restore FILE`: one node's installation in one file, and back.

What a backup holds: every Redis key under the installation's prefix (redis.prefix) with its
type, value and expiry (DUMP and PTTL of each, read together by key_dump.lua; a key's DUMP
keeps everything, a stream's consumer groups and pending entries too, so events the
webhooks dispatcher has not delivered yet come back undelivered); the configuration file;
and the files of keys in the state directory (the TLS certificate and key, the cache files of
the shared HMAC keys, which live in Redis already, the key shared with Dovecot, and DKIM key
files of domains made before DKIM keys were kept in Redis).

The file: gzip-compressed JSON lines, written mode 0600 (it holds every secret of the
installation) to a temporary file beside FILE and renamed into place when complete.

    {"format": "txmail-backup", "version": 1, "txmail": ..., "created": ..., "prefix": ...,
     "schema": N, "redis_version": ..., "state_dir": ..., "config_name": ...}   the header
    {"file": PATH, "mode": MODE, "data": BASE64, "config": true|false}   PATH: relative to
                                                     the state directory, normalised
    {"external": PATH, "mode": MODE, "data": BASE64}   a key file outside the state directory
                                                     (PATH absolute): restored only with
                                                     --external-files, onto the same state dir
    {"key": BASE64, "expires_at": MS|null, "dump": BASE64}   one Redis key under the prefix;
                                                     expires_at in ms since 1970 (ABSTTL)
    {"end": true, "files": N, "keys": N}             the last line: a cut file is refused

Keys are read one at a time (SCAN MATCH PREFIX*, which a Redis Cluster client runs on every
master) and restored in small pipelined batches, so memory stays bounded by the largest key,
never the whole data set. A running node's keys are copied one by one, not as of one instant:
stop `txmail up` for a copy of one moment.

Restore reads the file through once to check it (format version, schema, its end line, the
shape of every line, every key under the prefix, every file name relative and inside the state
directory) before it writes anything; then it refuses to overwrite a configuration, a key file
or data of the prefix that is there already, unless --force (which first deletes every key of
the prefix, so the result is the backup and nothing else). Files are written with mode 0600, or
0644 when the backup had them readable by others; never outside the state directory (a symlink
in the way is refused), except the "external" files with --external-files. A private Redis (no
redis.url) that is not running is started for the time of a backup or restore, as `txmail up`
would. A DUMP payload is restored only by a Redis as new as the one that made it, or newer:
one key is restored into a scratch key (and deleted) before anything else is written.

The order, and what a failure midway leaves: the Redis data first (with --force the prefix's
old keys are deleted just before, so a failure there leaves the prefix partly restored: run the
restore again with --force), then the files, each replaced atomically (a failure leaves some
files new, the rest as they were, the configuration last so that a node is never started from
a new configuration with old keys).

Fails: UsageError for a file that is no txmail backup, of another format version, cut short,
damaged, of a newer schema, naming a file outside the state directory or a key outside the
prefix; Conflict for data or files in the way; StoreUnavailable when Redis does not answer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import gzip
import io
import json
import logging
import os
import re
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import redis

import txmail
from txmail import config as config_mod
from txmail import store
from txmail.config import Settings
from txmail.errors import ConfigError, Conflict, TxmailError, UsageError
from txmail.store import schema, scripts, secrets

log = logging.getLogger("txmail.backup")

FORMAT = "txmail-backup"
VERSION = 1
SCAN_COUNT = 500
RESTORE_BATCH = 100
READY_TIMEOUT = 30.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def match_pattern(prefix: str) -> str:
    """SCAN's MATCH pattern for every key under `prefix` (glob characters in it escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


def key_files(settings: Settings) -> list[Path]:
    """The files of keys a node keeps: TLS, the HMAC key caches, Dovecot's shared key, and
    DKIM key files of old domain records. Only regular files that exist; within the DKIM
    folder no symlink is followed (rglob does not enter linked folders; linked files are left)."""
    paths = [
        settings.path(settings.tls.cert_file),
        settings.path(settings.tls.key_file),
        settings.path(settings.authpolicy.key_file),
        *(settings.path(getattr(settings.secrets, name)) for name in secrets.NAMES),
    ]
    dkim_dir = settings.path(settings.domains.dkim_key_dir)
    if dkim_dir.is_dir() and not dkim_dir.is_symlink():
        paths += sorted(
            p
            for p in dkim_dir.rglob("*")
            if not p.is_symlink()
            and not any((dkim_dir / up).is_symlink() for up in p.relative_to(dkim_dir).parents)
            and p.is_file()
        )
    return [p for p in paths if p.is_file()]


def _stored_path(settings: Settings, path: Path) -> tuple[str, str]:
    """("file", PATH relative to the state directory) or ("external", absolute PATH)."""
    path = path.resolve()
    state = settings.state_path.resolve()
    if path.is_relative_to(state):
        return "file", path.relative_to(state).as_posix()
    return "external", str(path)


def _file_mode(mode: int) -> int:
    """A restored file's mode: 0644 when the backup had it readable by others, else 0600."""
    return 0o644 if mode & 0o004 else 0o600


def _check_name(path: Path, stored: Any, external: bool = False) -> str:
    """A file name of the backup as it may be restored: a normalised path, relative (or
    absolute for an external record), no NUL, no `..`: UsageError otherwise."""
    what = f"{path}: the backup names a file"
    if not isinstance(stored, str) or not stored or "\0" in stored:
        raise UsageError(f"{what} that is no file name ({stored!r}): not a txmail backup")
    pure = PurePosixPath(stored)
    if ".." in pure.parts or pure.as_posix() != stored or "." in stored.split("/"):
        raise UsageError(f"{what} outside the state directory, or not normalised: {stored!r}")
    if pure.is_absolute() != external:
        raise UsageError(
            f"{what} {'relative' if external else 'absolute'} where the backup must name "
            f"{'an absolute' if external else 'a relative'} one: {stored!r}"
        )
    return stored


def _target_path(state: Path, stored: str, create: bool = False) -> Path:
    """Where the file `stored` (checked by _check_name) goes under `state`: UsageError when a
    symlink on the way leads out of it. With `create`, the folders on the way are made (0755)
    first, so the check is of what will be written."""
    target = state / stored
    if create:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not target.resolve().is_relative_to(state.resolve()):
        raise UsageError(
            f"{target} leads out of the state directory {state} (a symlink): remove the "
            "symlink, or restore into a fresh state directory (--state-dir)"
        )
    return target


def redis_version(client: store.Client) -> str:
    with contextlib.suppress(redis.RedisError, KeyError, TypeError, AttributeError):
        info: Any = client.info("server")
        if "redis_version" not in info:  # a Cluster client answers per node
            info = next(iter(info.values()))
        return str(info["redis_version"])
    return ""


@contextlib.contextmanager
def running_redis(settings: Settings, config_file: Path) -> Iterator[None]:
    """The node's Redis, answering: a configured one as it is, the private one of `txmail up`
    when it runs, else the private one started here for the time of the block (as `up` would
    start it: its own user, its socket only) and stopped after it."""
    from txmail.stack import render, supervisor
    from txmail.stack.components import can_connect_unix

    socket = settings.state_path / "run/redis/redis.sock"
    if settings.redis.url or can_connect_unix(socket):
        yield
        return
    state = settings.state_path
    supervisor.prepare_private_redis(settings)
    render.render_redis(settings, config_file)
    server = supervisor.private_redis(settings)
    server.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not can_connect_unix(socket):
            if not server.alive() or time.monotonic() > deadline:
                raise TxmailError(
                    f"the private Redis of {state} did not start; see {server.log_path}"
                )
            time.sleep(0.05)
        yield
    finally:
        server.stop(60)  # SIGTERM: Redis writes what it holds before it exits
        socket.unlink(missing_ok=True)


def scan_keys(client: store.Client, prefix: str) -> Iterator[bytes]:
    """Every key under `prefix`, one at a time (on a Cluster: from every master)."""
    with store.guard("listing the keys"):
        yield from client.scan_iter(match=match_pattern(prefix), count=SCAN_COUNT)


def has_data(client: store.Client, prefix: str) -> bool:
    return next(scan_keys(client, prefix), None) is not None


# -- backup


@dataclass
class Written:
    path: Path
    keys: int
    files: int


def backup(settings: Settings, config_file: Path, target: Path, force: bool = False) -> Written:
    """Write the installation to `target` (0600, atomically)."""
    if target.exists() and not force:
        raise Conflict(f"{target} exists already: give another file name, or --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as raw:
            with running_redis(settings, config_file):
                keys, files = _write(settings, config_file, raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Written(target, keys, files)


def _write(settings: Settings, config_file: Path, raw: io.BufferedWriter) -> tuple[int, int]:
    client = store.connect(settings, decode=False)
    try:
        with store.guard("reading the schema version"):
            version = schema.stored(client, store.Keys(settings.redis.prefix))
        now = time.time()
        header = {
            "format": FORMAT,
            "version": VERSION,
            "txmail": txmail.__version__,
            "created": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "prefix": settings.redis.prefix,
            "schema": schema.FIRST if version is None else version,
            "redis_version": redis_version(client),
            "state_dir": str(settings.state_path),
            "config_name": config_file.name,
        }
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=int(now)) as out:

            def line(record: dict[str, Any]) -> None:
                out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")

            line(header)
            files = 0
            config_bytes = config_file.read_bytes()
            line(
                {
                    "file": config_file.name,
                    "mode": config_file.stat().st_mode & 0o777,
                    "data": _b64(config_bytes),
                    "config": True,
                }
            )
            files += 1
            for path in key_files(settings):
                kind, name = _stored_path(settings, path)
                record: dict[str, Any] = {
                    kind: name,
                    "mode": path.stat().st_mode & 0o777,
                    "data": _b64(path.read_bytes()),
                }
                if kind == "file":
                    record["config"] = False
                line(record)
                files += 1
            dump = scripts.get(client, "key_dump")
            keys = 0
            for key in scan_keys(client, settings.redis.prefix):
                with store.guard("reading a key"):
                    payload, ttl = dump(keys=[key])
                if payload is None:  # expired or deleted since SCAN listed it
                    continue
                line(
                    {
                        "key": _b64(key),
                        "expires_at": int(time.time() * 1000) + int(ttl) if ttl >= 0 else None,
                        "dump": _b64(payload),
                    }
                )
                keys += 1
            line({"end": True, "files": files, "keys": keys})
    finally:
        client.close()
    return keys, files


# -- restore


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of a backup, one at a time; UsageError for what is no backup line."""
    try:
        with gzip.open(path, "rb") as fh:
            for number, raw_line in enumerate(fh, 1):
                try:
                    record = json.loads(raw_line)
                except ValueError:
                    raise UsageError(
                        f"{path}: line {number} is not JSON: not a txmail backup"
                    ) from None
                if not isinstance(record, dict):
                    raise UsageError(f"{path}: line {number} is not a record of a txmail backup")
                record["_line"] = number
                yield record
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise UsageError(
            f"{path}: cannot be read as a txmail backup ({exc.__class__.__name__}: {exc}); "
            "it is damaged or cut short: use another copy"
        ) from None


def _decoded(path: Path, record: dict[str, Any], field: str) -> bytes:
    value = record.get(field)
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise UsageError(
            f"{path}: line {record['_line']}: {field!r} is not base64 text: the file is damaged "
            "or no txmail backup as written"
        ) from None


def _check_record(path: Path, record: dict[str, Any], prefix: bytes) -> str:
    """The kind of a line after a check of its shape ("file", "external", "key", "end")."""
    number = record["_line"]
    if "end" in record:
        if not all(isinstance(record.get(f), int) for f in ("files", "keys")):
            raise UsageError(f"{path}: line {number}: an end line without its counts")
        return "end"
    if "key" in record:
        key = _decoded(path, record, "key")
        _decoded(path, record, "dump")
        expires_at = record.get("expires_at")
        if expires_at is not None and (type(expires_at) is not int or expires_at < 0):
            raise UsageError(f"{path}: line {number}: 'expires_at' is not a time in ms")
        if not key.startswith(prefix):
            raise UsageError(
                f"{path}: line {number} holds the key {key[:80]!r}, which is not under the "
                f"backup's prefix {prefix.decode(errors='replace')!r}: refused, nothing written"
            )
        return "key"
    kind = "file" if "file" in record else "external" if "external" in record else ""
    if not kind:
        raise UsageError(f"{path}: line {number} is of no known kind: not a txmail backup")
    _check_name(path, record[kind], external=kind == "external")
    _decoded(path, record, "data")
    if type(record.get("mode")) is not int:
        raise UsageError(f"{path}: line {number}: 'mode' is not a number")
    if kind == "external" and record.get("config"):
        raise UsageError(f"{path}: line {number}: a configuration outside the state directory")
    return kind


def read_header(path: Path) -> dict[str, Any]:
    """The header, after a read and check of the whole file: UsageError unless it is a
    complete backup of this format version whose schema this txmail can run, every line of
    the right shape, every key under the prefix, every file name one restore may write."""
    records = _records(path)
    header = next(records, None)
    if header is None or header.get("format") != FORMAT:
        raise UsageError(f"{path} is not a txmail backup (made by `txmail backup FILE`)")
    if header.get("version") != VERSION:
        raise UsageError(
            f"{path} is a txmail backup of format {header.get('version')}, and this txmail "
            f"(txmail {txmail.__version__}) reads format {VERSION}: restore it with the "
            f"release that made it (txmail {header.get('txmail')})"
        )
    for field, wanted in (("schema", int), ("prefix", str), ("state_dir", str)):
        if type(header.get(field)) is not wanted:
            raise UsageError(
                f"{path}: its header's {field!r} is not a {wanted.__name__}: the file is "
                "damaged or no txmail backup as written"
            )
    if not header["prefix"]:
        raise UsageError(f"{path}: its header names no redis.prefix: not a txmail backup")
    config_name = header.get("config_name")
    if config_name is not None and (
        not isinstance(config_name, str) or "/" in config_name or config_name in ("", ".", "..")
    ):
        raise UsageError(
            f"{path}: its header's config_name {config_name!r} is no plain file name: refused"
        )
    if header["schema"] > schema.CURRENT:
        raise UsageError(
            f"{path} holds data of schema {header['schema']}, newer than this txmail knows "
            f"(schema {schema.CURRENT}): restore it with txmail {header.get('txmail')} or newer"
        )
    prefix = header["prefix"].encode()
    files = keys = configs = 0
    end = None
    for record in records:
        if end is not None:
            raise UsageError(f"{path}: lines after its end: not a txmail backup as written")
        line_kind = _check_record(path, record, prefix)
        if line_kind == "end":
            end = record
        elif line_kind == "key":
            keys += 1
        else:
            files += 1
            configs += bool(record.get("config"))
    if end is None or end.get("keys") != keys or end.get("files") != files:
        raise UsageError(f"{path} is cut short (no end line, or too few lines): use another copy")
    if configs != 1:
        raise UsageError(
            f"{path} holds {configs} configuration files, not one: not a txmail backup"
        )
    return header


def check_redis_url(url: str) -> None:
    """UsageError, with a sentence, for a --redis-url redis-py cannot use."""
    from redis.connection import parse_url

    shown = store.shown_url(url)
    if not re.match(r"^(redis|rediss|unix)://", url):
        raise UsageError(
            f"--redis-url {shown!r}: write a URL such as redis://HOST:6379/0, rediss://... or "
            "unix:///path/to/redis.sock"
        )
    try:
        parse_url(url)
    except ValueError as exc:
        raise UsageError(f"--redis-url {shown!r} cannot be used: {exc}") from None


@dataclass
class Restored:
    config_file: Path
    keys: int
    files: int
    schema: int
    left_out: list[str] = dataclasses.field(default_factory=list)


def _files(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The file lines of a checked backup (configuration, key files, external ones) with
    their contents."""
    for record in _records(path):
        if "file" in record or "external" in record:
            yield record, base64.b64decode(record["data"])


def restore(
    path: Path,
    state_dir: Path | None = None,
    config_file: Path | None = None,
    redis_url: str | None = None,
    force: bool = False,
    external_files: bool = False,
) -> Restored:
    """Put the installation in the backup `path` back: its configuration (into `config_file`,
    default STATE/NAME as it was named), its key files, its Redis data. `state_dir` and
    `redis_url` move it to another state directory or Redis (written into the configuration).
    Key files that were outside the state directory are written only with `external_files`,
    and only into the state directory the backup was made of (else UsageError); without it
    they are left out and named in Restored.left_out. The order and what a failure midway
    leaves: see the module's docstring."""
    if redis_url is not None:
        check_redis_url(redis_url)
    header = read_header(path)
    prefix = header["prefix"]
    original = Path(header["state_dir"]).resolve()
    state = (state_dir or original).resolve()
    if config_file is not None:
        config_target = config_file
    else:
        config_target = _target_path(state, str(header.get("config_name") or "txmail.toml"))
    # The configuration as restored, read before anything is written.
    config_record, config_bytes = next((r, d) for r, d in _files(path) if r.get("config"))
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "txmail.toml"
        probe.write_bytes(config_bytes)
        try:
            settings = config_mod.load(probe)
        except ConfigError as exc:
            shown = str(exc).removeprefix(f"{probe}: ")
            raise UsageError(f"{path}: its configuration cannot be used: {shown}") from None
    moved = {"state_dir": str(state)} if settings.state_path.resolve() != state else {}
    if redis_url is not None and redis_url != settings.redis.url:
        moved["redis"] = dataclasses.replace(settings.redis, url=redis_url)  # type: ignore[assignment]
    settings = dataclasses.replace(settings, **moved)  # type: ignore[arg-type]
    if settings.redis.prefix != prefix:
        raise UsageError(f"{path}: its configuration's redis.prefix is not its header's {prefix!r}")
    if moved:
        config_bytes = config_mod.to_toml(settings).encode()
    # What goes where, and nothing overwritten unless --force.
    in_way = [config_target] if config_target.exists() else []
    left_out: list[str] = []
    for record, data in _files(path):
        if record.get("config"):
            continue
        if "external" in record:
            if not external_files:
                left_out.append(record["external"])
                continue
            if state != original:
                raise UsageError(
                    f"{path} holds files outside its state directory ({record['external']}), "
                    f"and this restore goes to {state}, not {original}: leave out "
                    "--external-files (and copy them by hand where the new node needs them)"
                )
            target = Path(record["external"])
        else:
            target = _target_path(state, record["file"])
        if target.exists() and (not target.is_file() or target.read_bytes() != data):
            in_way.append(target)
    if in_way and not force:
        raise Conflict(
            f"{', '.join(map(str, in_way[:3]))}{' and more' if len(in_way) > 3 else ''} "
            "exist already: restore into a fresh state directory (--state-dir), or --force "
            "to replace them"
        )
    if not settings.redis.url and not force:
        held = state / "redis"
        if held.is_dir() and any(p.name != "redis.conf" for p in held.iterdir()):
            raise Conflict(
                f"{held} holds Redis data already: restore into a fresh state directory "
                "(--state-dir), or --force to replace the data of the prefix"
            )
    if not settings.redis.url:
        _warn_if_running(settings)
    # The Redis data first (checked against this Redis before anything is written), then the
    # files: the private Redis is rendered from the settings, not from the file.
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # as `txmail init`: Postfix and Dovecot must traverse it
    with running_redis(settings, config_target):
        keys = _restore_keys(path, settings, header, force)
    from txmail.files import replace_atomically

    files = 0
    for record, data in _files(path):
        if record.get("config"):
            continue
        if "external" in record:
            if not external_files:
                continue
            target = Path(record["external"])
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            target = _target_path(state, record["file"], create=True)
        replace_atomically(target, data, mode=_file_mode(record["mode"]))
        files += 1
    # The configuration last: a node is never started from it with the old files or keys.
    if config_file is None:
        _target_path(state, config_target.name, create=True)
    replace_atomically(config_target, config_bytes, mode=_file_mode(config_record["mode"]))
    files += 1
    return Restored(config_target, keys, files, int(header["schema"] or schema.FIRST), left_out)


def _warn_if_running(settings: Settings) -> None:
    from txmail.stack.components import can_connect_unix

    if can_connect_unix(settings.state_path / "run/redis/redis.sock"):
        log.warning(
            "the private Redis of %s answers: `txmail up` seems to run there; stop it "
            "before a restore, or the daemons see the data change under them",
            settings.state_path,
        )


def _restore_keys(path: Path, settings: Settings, header: dict[str, Any], force: bool) -> int:
    """Restore the keys: REPLACE only with `force`, after a probe of this Redis with the first
    key (into a scratch key under the prefix, deleted at once) so that a Redis too old for the
    payloads refuses before any key is deleted or written."""
    prefix = settings.redis.prefix
    client = store.connect(settings, decode=False)

    def too_old(exc: redis.ResponseError) -> UsageError | None:
        if "payload version" not in str(exc):
            return None
        return UsageError(
            f"this Redis ({redis_version(client) or 'its version unknown'}) cannot "
            f"read the backup's data, made by Redis {header.get('redis_version')}: "
            "restore into a Redis as new as that one, or newer; nothing was written"
        )

    try:
        with store.guard("checking the keys of the prefix"):
            if not force and has_data(client, prefix):
                raise Conflict(
                    f"{store.shown_url(store.effective_url(settings))} holds keys under "
                    f"{prefix!r} already: restore into a fresh Redis (--redis-url), or "
                    "--force to delete them and put the backup's in their place"
                )
            first = next((r for r in _records(path) if "key" in r), None)
            if first is not None:
                scratch = f"{prefix}restore-probe:{uuid.uuid4().hex}".encode()
                try:
                    client.restore(scratch, 0, base64.b64decode(first["dump"]))
                except redis.ResponseError as exc:
                    raise too_old(exc) or exc from None
                finally:
                    client.delete(scratch)
        if force:
            with store.guard("deleting the keys of the prefix"):
                for key in scan_keys(client, prefix):
                    client.delete(key)
        count = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            pipe = client.pipeline(transaction=False)
            for record in batch:
                expires_at = record.get("expires_at")
                pipe.restore(
                    base64.b64decode(record["key"]),
                    int(expires_at) if expires_at is not None else 0,
                    base64.b64decode(record["dump"]),
                    replace=force,
                    absttl=expires_at is not None,
                )
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                if "BUSYKEY" in str(exc):
                    raise Conflict(
                        f"a key under {prefix!r} was written while the restore ran: stop what "
                        "writes to this Redis, then restore again with --force"
                    ) from None
                raise too_old(exc) or exc from None
            batch.clear()

        with store.guard("restoring the keys"):
            for record in _records(path):
                if "key" in record:
                    batch.append(record)
                    count += 1
                    if len(batch) >= RESTORE_BATCH:
                        flush()
            if batch:
                flush()
    finally:
        client.close()
    return count
