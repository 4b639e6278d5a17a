"""The console's and the CLI's actions on a webhook endpoint, done twice at once or in a row:
a second rotation of the signing secret within the overlap keeps the secret receivers still
check, and two replays of the same dead letters post each once."""

from __future__ import annotations

import threading
import time

import redis

from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail.events import Event, iso_timestamp, random_event_id
from txmail.store import Keys, decoded_entries
from txmail.webhook_endpoints import account_secrets, dead_letters, replay, rotate_secret

DAY = 86400.0


def _settings(tmp_path: object) -> Settings:
    return Settings(state_dir=str(tmp_path))


def test_a_second_rotation_within_the_overlap_keeps_the_secret_in_use(
    client: redis.Redis, keys: Keys, tmp_path: object
) -> None:
    settings = _settings(tmp_path)
    Accounts(client, keys).add("acme", ["acme.example"], "pw-123456789")
    now = time.time()
    original = account_secrets(settings, client, keys, "acme", now)[0]
    first = rotate_secret(settings, client, keys, "acme", DAY)
    second = rotate_secret(settings, client, keys, "acme", DAY)  # a double click
    signing = account_secrets(settings, client, keys, "acme", time.time())
    assert signing[0] == second
    assert original in signing  # the receiver still on it loses no post
    assert first != second
    # after the overlap, the next rotation keeps the one it replaces
    later = time.time() + DAY + 1
    third = rotate_secret(settings, client, keys, "acme", DAY)
    assert account_secrets(settings, client, keys, "acme", later)[0] == third


def _dead_letter(client: redis.Redis, keys: Keys, account: str) -> str:
    now = time.time()
    event = Event(
        id=random_event_id(now),
        kind="bounce",
        recipient="someone@dest.example",
        message_id="4AbCdEfGh",
        timestamp=iso_timestamp(now),
        account=account,
        tags=[],
        details={},
    )
    client.xadd(
        keys.dead_letters(account),
        {"event": event.to_json(), "error": "HTTP 500", "failed_at": repr(now)},
    )
    return event.id


def test_two_replays_at_once_post_each_dead_letter_once(client: redis.Redis, keys: Keys) -> None:
    ids = [_dead_letter(client, keys, "acme") for _ in range(300)]
    counts: list[int] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        counts.append(replay(client, keys, "acme", batch=7))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == 300  # the "(N entries)" each caller shows adds up to the truth
    rows = decoded_entries(client.xrange(keys.events("acme")))
    posted = [Event.from_json(fields["event"]).id for _, fields in rows]
    assert sorted(posted) == sorted(ids)  # each once
    assert dead_letters(client, keys, "acme") == []


def test_replay_of_chosen_events_leaves_the_others(client: redis.Redis, keys: Keys) -> None:
    ids = [_dead_letter(client, keys, "acme") for _ in range(3)]
    client.hset(keys.webhook("acme"), mapping={"disabled": "1", "disabled_by": "410 Gone"})
    assert replay(client, keys, "acme", {ids[1]}) == 1
    assert [d.event.id for d in dead_letters(client, keys, "acme")] == [ids[0], ids[2]]
    assert not client.hexists(keys.webhook("acme"), "disabled")  # turned back on
    assert replay(client, keys, "acme", {ids[1]}) == 0
