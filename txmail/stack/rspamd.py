"""rspamd for the spam check: `txmail up` runs Debian's rspamd when spam.enabled is on.

The instance is txmail's own, beside any rspamd.service of the machine: its configuration and
state live in STATE/rspamd, it binds spam.listen (loopback by default) with one normal worker
and no controller, and it asks spam.nameservers (else the system's resolver). Its top-level
file is written here; the modules, scores and actions are Debian's (/etc/rspamd, included as
$CONFDIR), and the operator's changes go in STATE/rspamd/local.d and override.d (rspamd's
LOCAL_CONFDIR is STATE/rspamd, so /etc/rspamd/local.d of a system rspamd is not read).

    STATE/rspamd/rspamd.conf        written by `txmail up` on each start
    STATE/rspamd/txmail.d/options.inc   the resolver, when spam.nameservers is set (included
                                    with priority 5: above local.d, below override.d)
    STATE/rspamd/local.d/, override.d/   the operator's (rspamd's usual semantics)
    STATE/rspamd/db/                rspamd's DBDIR (hyperscan cache, history, stats), owned
                                    by _rspamd: the only folder its workers may write

The folder, local.d, override.d, txmail.d and every file written here belong to the user that
runs `txmail up` (root), 0755 and 0644: rspamd's main process reads them as root, Lua included
(Debian's rules/rspamd.lua runs LOCAL_CONFDIR/rspamd.local.lua), so a worker, which parses
hostile mail, must not be able to change them. Nothing else is written outside db/: in the
foreground (-f) rspamd writes no pidfile. (rspamd 3.4 logs "save_items: cannot create file
.../db/symbols.cache.new: No such file or directory" at each stop: it opens that file
without O_CREAT, whoever owns db/; the cache only carries symbol statistics over a restart.)

rspamd runs in the foreground (-f), its workers as _rspamd, and logs to its stderr, which the
supervisor passes on as component rspamd (relay.py). The milter asks it at spam.url
(supervisor.py starts it before the milter). A GTUBE message gets rspamd's reject score
(Debian's actions: reject = 15, the default spam_threshold), so it is refused.

write_config() writes a configuration for any folder; the tests' private rspamd
(txmail_testing/rspamd.py) calls it with stock=False, no module but those asked for and a
rule of its own.

missing() says why a node cannot run it (no rspamd binary, no _rspamd user): `txmail doctor`
and `txmail up` print it (stack/doctor.py, check_spam).
"""

from __future__ import annotations

import os
import pwd
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from txmail.config import Settings
from txmail.files import replace_atomically

BINARY = "rspamd"
USER = "_rspamd"  # Debian's package creates it
CONFDIR = "/etc/rspamd"
# The reject action's score (Debian's too): what GTUBE scores, and the default spam_threshold.
REJECT_SCORE = 15
CONFIG_FOLDERS = ("local.d", "override.d", "txmail.d")  # root's, like the folder itself

STOCK = """\
# Written by txmail (`txmail up`, spam.enabled); changes here are lost at the next start.
# Put yours in {dir}/local.d/ or {dir}/override.d/, as with any rspamd.
.include "$CONFDIR/common.conf"

options {{
  pidfile = "{dir}/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
  .include(try=true; priority=5) "{dir}/txmail.d/options.inc"
  .include(try=true; priority=10) "$LOCAL_CONFDIR/override.d/options.inc"
}}
"""

MINIMAL = """\
options {{
  pidfile = "{dir}/rspamd.pid";
  filters = "{filters}";
  url_tld = "{url_tld}";
  dns {{
    nameserver = [{nameservers}];
    timeout = 1s;
    retransmits = 1;
  }}
}}
actions {{
  reject = {reject};
  add_header = 6;
}}
"""

COMMON = """\
logging {{
  type = "console";
  level = "{level}";
}}

worker "normal" {{
  bind_socket = "{bind}";
  count = 1;
{worker_include}}}
{extra}"""

DNS_OVERRIDE = """\
# Written by txmail from spam.nameservers.
dns {{
  nameserver = [{nameservers}];
  timeout = 1s;
  retransmits = 2;
}}
"""


def _own(path: Path, uid: int, gid: int) -> None:
    status = path.stat()
    if (status.st_uid, status.st_gid) != (uid, gid):
        os.chown(path, uid, gid)


def _quoted(items: Sequence[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def write_config(
    folder: Path,
    bind: str,
    nameservers: Sequence[str] = (),
    *,
    stock: bool = True,
    filters: str = "",
    url_tld: str = "",
    extra: str = "",
    level: str = "notice",
    owner: str | None = USER,
) -> Path:
    """Write FOLDER/rspamd.conf (and what it includes) for an rspamd that binds `bind`.

    stock: Debian's modules, scores and options, the resolver from `nameservers` (empty: the
    system's). Not stock: no module but `filters`, the resolver `nameservers` (which must be
    given), the public suffix list `url_tld` (a path), actions reject = 15.
    `extra`: more configuration appended at the top level (a `lua = "...";` line, say)."""
    # Only db/ is the workers': rspamd reads Lua and configuration from the rest
    # (LOCAL_CONFDIR/rspamd.local.lua, local.d, ...) as root, and its workers parse hostile mail.
    for sub in (folder, *(folder / s for s in CONFIG_FOLDERS)):
        sub.mkdir(parents=True, exist_ok=True)
        _own(sub, os.geteuid(), os.getegid())
        sub.chmod(0o755)
    db = folder / "db"
    db.mkdir(exist_ok=True)
    if owner is not None:
        user = pwd.getpwnam(owner)
        _own(db, user.pw_uid, user.pw_gid)

    def write(path: Path, text: str) -> None:
        # Atomically: in containers every `up --only` renders this into the shared volume.
        replace_atomically(path, text.encode(), 0o644)

    if stock:
        head = STOCK.format(dir=folder)
        worker_include = '  .include "$CONFDIR/worker-normal.inc"\n'
        resolver = folder / "txmail.d/options.inc"
        if nameservers:
            write(resolver, DNS_OVERRIDE.format(nameservers=_quoted(nameservers)))
        else:
            resolver.unlink(missing_ok=True)
    else:
        if not nameservers:
            raise ValueError("a minimal rspamd needs nameservers (a loopback one in tests)")
        head = MINIMAL.format(
            dir=folder,
            filters=filters,
            url_tld=url_tld,
            nameservers=_quoted(nameservers),
            reject=REJECT_SCORE,
        )
        worker_include = ""
    config = folder / "rspamd.conf"
    write(
        config,
        head
        + "\n"
        + COMMON.format(level=level, bind=bind, worker_include=worker_include, extra=extra),
    )
    return config


def argv(folder: Path, user: str = USER) -> list[str]:
    """The command line of the rspamd whose configuration write_config() put in `folder`."""
    return [
        BINARY,
        "-f",
        "-c",
        str(folder / "rspamd.conf"),
        "-u",
        user,
        "-g",
        user,
        f"--var=LOCAL_CONFDIR={folder}",
        f"--var=DBDIR={folder / 'db'}",
        f"--var=RUNDIR={folder}",
    ]


def folder_of(settings: Settings) -> Path:
    return settings.state_path / "rspamd"


def render(settings: Settings) -> Path:
    """The configuration of the node's rspamd (spam.listen, spam.nameservers)."""
    return write_config(folder_of(settings), settings.spam.listen, settings.spam.nameservers)


def missing(settings: Settings) -> str:
    """Why this node cannot run rspamd ("" when it can, or when spam.enabled is off)."""
    if not settings.spam.enabled:
        return ""
    if shutil.which(BINARY) is None:
        return "the rspamd program is not installed"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"the user {USER}, which Debian's rspamd package creates, does not exist"
    return ""


def ping(url: str) -> bool:
    """Whether rspamd at `url` answers /ping."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=1) as response:
            return bool(response.read().startswith(b"pong"))
    except OSError:
        return False
