"""The Lua scripts: one per atomic operation, each documenting its KEYS and ARGV in its header.

SYNOPSIS
    from txmail.store import scripts
    scripts.get(client, "policy_commit")(keys=[...], args=[...])
    scripts.text("policy_commit")          # the source, for EVAL inside a pipeline
    scripts.sha("policy_commit")           # its SHA1, for EVALSHA inside a pipeline

DESCRIPTION
    get() registers a script on a client once (redis-py's register_script: EVALSHA, with EVAL
    again after a Redis restart flushed its cache) and hands back the same object for every
    later call, whether the client is sync or asyncio, one Redis or a Cluster. Every module
    that runs a script gets it here, so a script is read from disk once per process and called
    one way. NAMES lists them; an unknown name is a programming error (KeyError).

    A script may share a function with others: a line "-- include: _PART" is replaced by the
    text of _PART.lua (a file whose name starts with "_" is a part, never a script of its
    own), so the same Lua runs in each script that includes it.

    auth_check, auth_report       txmail authpolicy: password-guessing state
    event_record                  events: one event, its counters, seen marks, its message's list
    events_trim                   webhooks: trim the event stream behind every reader
    forward_count                 the bounce pipe: one forward to a message's sender, capped
    idempotency_claim,            the HTTP API: an Idempotency-Key of a send, claimed once;
    idempotency_settle            its first answer kept, or the key freed
    key_dump                      txmail backup: one key's DUMP payload and PTTL, together
    message_accept                the milter: an accepted message's record, tag counts and
                                  count against the sending limits, in one call
    messages_get                  the maillog follower: several message records at once
    maillog_batch                 the maillog follower: a batch's events, attempts, reputation
                                  counts and suppressions, and its log position, in one call
    policy_check, policy_commit,  policyd and the milter: sending limits, holds, usage
    policy_release
    reputation_record             the reputation guard's daily totals
    reputation_count              reputation_record for one outcome event, with its "counted:"
                                  mark checked and set in the same call (the bounce pipe)
    secret_revoke                 a new value of one of the installation's HMAC keys, the
                                  old one dropped at once (after a leak)
    secret_rotate                 a new value of one of the installation's HMAC keys
    suppression_add               a suppression list entry, capped
    tags_count                    the milter: an accepted message per day and tag, capped
    unparsed_summaries            the newest kept unparsed bounces without their raw text
    webhook_dead_letter           webhooks: a batch that will not be retried again
    webhook_replay                dead letters back into the event stream, each once
    webhook_secret_rotate         an account's new webhook signing secret, keeping the old
                                  one a running overlap keeps

    A script may use another whole: a line `-- #include NAME` becomes NAME's source as a local
    function NAME(KEYS, ARGV) returning what NAME returns, so a batch runs the same code as a
    single call (maillog_batch).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
NAMES = tuple(sorted(path.stem for path in FOLDER.glob("*.lua") if path.stem[0] != "_"))
# Two ways one script uses another's text, both pasted in when the script is read:
# `-- include: _PART` pastes a fragment (_PART.lua, no script of its own) in place;
# `-- #include NAME` wraps whole script NAME as `local function NAME(KEYS, ARGV)`, so a
# script can run another one's logic on keys of its own choosing.
PART = re.compile(r"^-- include: (_\w+)$", re.MULTILINE)
SCRIPT_AS_FUNCTION = re.compile(r"^-- #include (\w+)$", re.MULTILINE)
ATTRIBUTE = "_txmail_scripts"  # where a client keeps the scripts registered on it


@cache
def text(name: str) -> str:
    """The source of script `name`."""
    if name not in NAMES:
        raise KeyError(f"no Lua script named {name!r} (there are: {', '.join(NAMES)})")
    pasted = PART.sub(
        lambda found: (FOLDER / f"{found[1]}.lua").read_text().rstrip("\n"),
        (FOLDER / f"{name}.lua").read_text(),
    )
    return SCRIPT_AS_FUNCTION.sub(_as_function, pasted)


def _as_function(match: re.Match[str]) -> str:
    name = match[1]
    return f"local function {name}(KEYS, ARGV)\n{text(name)}\nend"


@cache
def sha(name: str) -> str:
    """The SHA1 Redis knows script `name` by (EVALSHA)."""
    return hashlib.sha1(text(name).encode()).hexdigest()


def get(client: Any, name: str) -> Any:
    """The registered script `name` on `client` (sync or asyncio, single or cluster).

    The scripts are kept on the client itself: each holds its client, so a table keyed by
    client (even a weak one) would keep every client alive; this way they go together."""
    registered = getattr(client, ATTRIBUTE, None)
    if registered is None:
        registered = {}
        setattr(client, ATTRIBUTE, registered)
    found = registered.get(name)
    if found is None:
        found = registered[name] = client.register_script(text(name))
    return found
