"""POST /v1/send with an Idempotency-Key against a scripted Postfix (tests/unit/tracker/
fake_postfix.py) and a real Redis: an answer lost after the message was sent keeps the key,
so a retry never sends a second copy; a malformed key is refused before the body is read;
and /v1/stats has one cap of days, by `days` or `since`."""

from __future__ import annotations

import asyncio
import datetime
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.tracker.fake_postfix import FakePostfix
from txmail.accounts.records import Accounts, ApiKeys
from txmail.config import Settings, TrackerSettings
from txmail.stats import MAX_ANSWER_DAYS
from txmail.store import Keys
from txmail.tokens.links import LinkSigner
from txmail.tracker import api
from txmail.tracker.services import SERVICES, Services

BODY = {
    "envelope": "app@acme.test",
    "recipient": "user@example.net",
    "mime": "From: app@acme.test\r\nSubject: hi\r\n\r\nhello\r\n",
}


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # A short directory: a UNIX socket's path has at most 107 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        yield Path(directory)


def _services(client: redis.Redis, keys: Keys, state_dir: Path, api_timeout: float) -> Services:
    settings = Settings(state_dir=str(state_dir), tracker=TrackerSettings(api_timeout=api_timeout))
    (settings.postfix_queue_path / "private").mkdir(parents=True)
    return Services(
        settings=settings,
        signer=LinkSigner(b"k" * 32),
        recording=None,
        client=client,
        keys=keys,
    )


def _post_twice(services: Services, headers: dict[str, str]) -> list[tuple[int, dict[str, Any]]]:
    async def run() -> list[tuple[int, dict[str, Any]]]:
        app = web.Application()
        app[SERVICES] = services
        api.add_routes(app)
        answers = []
        async with TestClient(TestServer(app)) as http:
            for _ in range(2):
                response = await http.post("/v1/send", data=json.dumps(BODY), headers=headers)
                answers.append((response.status, await response.json()))
        return answers

    return asyncio.run(run())


def _api_key(client: redis.Redis, keys: Keys) -> str:
    Accounts(client, keys).add("acme", ["acme.test"], "a-password-of-some-length")
    return ApiKeys(client, keys).create("acme")[1]


@pytest.mark.parametrize("after_dot", ["silent", "no_id"])
def test_a_lost_answer_keeps_the_idempotency_key(
    client: redis.Redis, keys: Keys, state_dir: Path, after_dot: str
) -> None:
    services = _services(client, keys, state_dir, api_timeout=0.5)
    headers = {
        "Authorization": f"Bearer {_api_key(client, keys)}",
        "Idempotency-Key": f"order-7-{after_dot}",
    }
    with FakePostfix(str(api.api_socket(services)), after_dot=after_dot) as fake:
        (first_status, first), (second_status, second) = _post_twice(services, headers)
    assert first_status == 503
    assert first["error"]["outcome"] == "unknown"
    assert "GET /v1/events" in first["error"]["message"]
    # The retry gets the same answer and sends nothing: Postfix saw one message.
    assert (second_status, second) == (first_status, first)
    assert len(fake.messages) == 1


def test_a_temporary_refusal_frees_the_key(
    client: redis.Redis, keys: Keys, state_dir: Path
) -> None:
    services = _services(client, keys, state_dir, api_timeout=5)
    headers = {"Authorization": f"Bearer {_api_key(client, keys)}", "Idempotency-Key": "k-1"}
    # No Postfix listening: refused before anything was sent, so the retry goes ahead.
    (first_status, first), (second_status, _) = _post_twice(services, headers)
    assert first_status == second_status == 503
    assert "outcome" not in first["error"]


def test_a_malformed_key_is_refused_before_the_body_is_read(
    client: redis.Redis, keys: Keys, state_dir: Path
) -> None:
    services = _services(client, keys, state_dir, api_timeout=5)
    headers = {
        "Authorization": f"Bearer {_api_key(client, keys)}",
        "Idempotency-Key": "two words",
        "Content-Length": str(10**12),  # a body never sent: reading it would be a 413
    }

    async def run() -> tuple[int, dict[str, Any]]:
        app = web.Application()
        app[SERVICES] = services
        api.add_routes(app)
        async with TestClient(TestServer(app)) as http:
            response = await http.post("/v1/send", data=b"", headers=headers)
            return response.status, await response.json()

    status, answer = asyncio.run(run())
    assert status == 400
    assert "Idempotency-Key" in answer["error"]["message"]


def test_stats_since_has_the_same_cap_as_days(
    client: redis.Redis, keys: Keys, state_dir: Path
) -> None:
    services = _services(client, keys, state_dir, api_timeout=5)
    headers = {"Authorization": f"Bearer {_api_key(client, keys)}"}
    today = datetime.datetime.now(datetime.UTC).date()

    async def run() -> list[tuple[int, dict[str, Any]]]:
        app = web.Application()
        app[SERVICES] = services
        api.add_routes(app)
        answers = []
        async with TestClient(TestServer(app)) as http:
            for back in (89, 90):
                since = (today - datetime.timedelta(days=back)).isoformat()
                response = await http.get("/v1/stats", params={"since": since}, headers=headers)
                answers.append((response.status, await response.json()))
        return answers

    (status, counts), (too_old, refusal) = asyncio.run(run())
    assert status == 200 and len(counts["days"]) == MAX_ANSWER_DAYS == 90
    assert too_old == 400
    assert "one answer covers at most 90 days" in refusal["error"]["message"]
