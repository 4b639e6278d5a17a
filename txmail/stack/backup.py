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
                                                     the state directory, or absolute
    {"key": BASE64, "expires_at": MS|null, "dump": BASE64}   one Redis key; expires_at in ms
                                                     since 1970 (RESTORE ... ABSTTL)
    {"end": true, "files": N, "keys": N}             the last line: a cut file is refused

Keys are read one at a time (SCAN MATCH PREFIX*, which a Redis Cluster client runs on every
master) and restored in small pipelined batches, so memory stays bounded by the largest key,
never the whole data set. A running node's keys are copied one by one, not as of one instant:
stop `txmail up` for a copy of one moment.

Restore reads the file through once to check it (format version, schema, its end line)
before it writes anything; then it refuses to overwrite a configuration, a key file or data
of the prefix that is there already, unless --force (which first deletes every key of the
prefix, so the result is the backup and nothing else). A private Redis (no redis.url) that is
not running is started for the time of a backup or restore, as `txmail up` would.
A DUMP payload is restored only by a Redis as new as the one that made it, or newer.

Fails: UsageError for a file that is no txmail backup, of another format version, cut short,
or of a newer schema; Conflict for data or files in the way; StoreUnavailable when Redis
does not answer.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import gzip
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

import txmail
from txmail import config as config_mod
from txmail import store
from txmail.config import Settings
from txmail.errors import ConfigError, Conflict, TxmailError, UsageError
from txmail.store import schema, scripts, secrets

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
    DKIM key files of old domain records. Only those that exist."""
    paths = [
        settings.path(settings.tls.cert_file),
        settings.path(settings.tls.key_file),
        settings.path(settings.authpolicy.key_file),
        *(settings.path(getattr(settings.secrets, name)) for name in secrets.NAMES),
    ]
    dkim_dir = settings.path(settings.domains.dkim_key_dir)
    if dkim_dir.is_dir():
        paths += sorted(p for p in dkim_dir.rglob("*") if p.is_file())
    return [p for p in paths if p.is_file()]


def _stored_path(settings: Settings, path: Path) -> str:
    path = path.resolve()
    state = settings.state_path.resolve()
    return str(path.relative_to(state)) if path.is_relative_to(state) else str(path)


def _target_path(state: Path, stored: str) -> Path:
    path = Path(stored)
    if path.is_absolute():
        return path
    if ".." in path.parts:
        raise UsageError(f"the backup names a file outside the state directory: {stored!r}")
    return state / path


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
    from txmail.stack.components import ProcessComponent, can_connect_unix

    socket = settings.state_path / "run/redis/redis.sock"
    if settings.redis.url or can_connect_unix(socket):
        yield
        return
    import pwd

    user = supervisor.redis_user(settings)
    supervisor.ensure_user(user)
    owner = pwd.getpwnam(user)
    state = settings.state_path
    for sub, mode, uid, gid in (
        ("run", 0o755, 0, 0),
        ("log", 0o750, 0, 0),
        ("run/redis", 0o750, owner.pw_uid, owner.pw_gid),
        ("redis", 0o700, owner.pw_uid, owner.pw_gid),
    ):
        (state / sub).mkdir(parents=True, exist_ok=True)
        os.chown(state / sub, uid, gid)
        (state / sub).chmod(mode)
    for path in (state / "redis").rglob("*"):
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    conf = render.render_redis(settings, config_file)
    server = ProcessComponent(
        "redis", ["redis-server", str(conf)], state / "log", ready=lambda: False, user=user
    )
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
                line(
                    {
                        "file": _stored_path(settings, path),
                        "mode": path.stat().st_mode & 0o777,
                        "data": _b64(path.read_bytes()),
                        "config": False,
                    }
                )
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
                yield record
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UsageError(
            f"{path}: cannot be read as a txmail backup ({exc.__class__.__name__}: {exc}); "
            "it is damaged or cut short: use another copy"
        ) from None


def read_header(path: Path) -> dict[str, Any]:
    """The header, after a read of the whole file: UsageError unless it is a complete backup
    of this format version whose schema this txmail can run."""
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
    if int(header.get("schema") or 0) > schema.CURRENT:
        raise UsageError(
            f"{path} holds data of schema {header['schema']}, newer than this txmail knows "
            f"(schema {schema.CURRENT}): restore it with txmail {header.get('txmail')} or newer"
        )
    files = keys = configs = 0
    end = None
    for record in records:
        if end is not None:
            raise UsageError(f"{path}: lines after its end: not a txmail backup as written")
        if "end" in record:
            end = record
        elif "key" in record:
            keys += 1
        elif "file" in record:
            files += 1
            configs += bool(record.get("config"))
        else:
            raise UsageError(f"{path}: a line of no known kind: not a txmail backup as written")
    if end is None or end.get("keys") != keys or end.get("files") != files:
        raise UsageError(f"{path} is cut short (no end line, or too few lines): use another copy")
    if configs != 1:
        raise UsageError(
            f"{path} holds {configs} configuration files, not one: not a txmail backup"
        )
    return header


@dataclass
class Restored:
    config_file: Path
    keys: int
    files: int
    schema: int


def restore(
    path: Path,
    state_dir: Path | None = None,
    config_file: Path | None = None,
    redis_url: str | None = None,
    force: bool = False,
) -> Restored:
    """Put the installation in the backup `path` back: its configuration (into `config_file`,
    default STATE/NAME as it was named), its key files, its Redis data. `state_dir` and
    `redis_url` move it to another state directory or Redis (written into the configuration)."""
    header = read_header(path)
    prefix = str(header["prefix"])
    state = (state_dir or Path(str(header["state_dir"]))).resolve()
    config_target = config_file or state / str(header.get("config_name") or "txmail.toml")
    # The configuration as restored, read before anything is written.
    config_record = next(r for r in _records(path) if r.get("config"))
    config_bytes = base64.b64decode(config_record["data"])
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
    # Nothing is overwritten unless --force: the configuration, key files, the prefix's data.
    in_way = [config_target] if config_target.exists() else []
    for record in _records(path):
        if "file" in record and not record.get("config"):
            target = _target_path(state, record["file"])
            if target.exists() and target.read_bytes() != base64.b64decode(record["data"]):
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
    if settings.redis.url:
        client = store.connect(settings, decode=False)
        try:
            if has_data(client, prefix) and not force:
                raise Conflict(
                    f"{store.shown_url(settings.redis.url)} holds keys under {prefix!r} "
                    "already: restore into a fresh Redis (--redis-url), or --force to delete "
                    "them and put the backup's in their place"
                )
        finally:
            client.close()
    # Files first (the private Redis is rendered from the configuration), then Redis.
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # as `txmail init`: Postfix and Dovecot must traverse it
    from txmail.files import replace_atomically

    replace_atomically(config_target, config_bytes, mode=int(config_record["mode"]) & 0o777)
    files = 1
    for record in _records(path):
        if "file" in record and not record.get("config"):
            replace_atomically(
                _target_path(state, record["file"]),
                base64.b64decode(record["data"]),
                mode=int(record["mode"]) & 0o777,
            )
            files += 1
    with running_redis(settings, config_target):
        keys = _restore_keys(path, settings, header, force)
    return Restored(config_target, keys, files, int(header.get("schema") or schema.FIRST))


def _restore_keys(path: Path, settings: Settings, header: dict[str, Any], force: bool) -> int:
    client = store.connect(settings, decode=False)
    try:
        if force:
            with store.guard("deleting the keys of the prefix"):
                for key in scan_keys(client, settings.redis.prefix):
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
                    replace=True,
                    absttl=expires_at is not None,
                )
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                if "payload version" in str(exc):
                    raise UsageError(
                        f"this Redis ({redis_version(client) or 'its version unknown'}) cannot "
                        f"read the backup's data, made by Redis {header.get('redis_version')}: "
                        "restore into a Redis as new as that one, or newer"
                    ) from None
                raise
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
