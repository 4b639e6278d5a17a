"""`txmail console token`: a signed operator token under the console key in Redis, printed once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis
from click.testing import CliRunner

from txmail.store import Keys
from txmail.tokens.console import ConsoleSigner
from txmail_testing.harness import RedisServer


def test_the_token_verifies_with_the_console_key_until_it_expires(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    from txmail.cli import main

    keys = Keys(f"token-{uuid.uuid4().hex[:8]}:")
    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{keys.prefix}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "console", "token", "--hours", "2"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "valid until" in result.stderr and token not in result.stderr
    key = client.hget(keys.secret("console"), "current")
    assert key
    signer = ConsoleSigner(lambda: (key.encode() if isinstance(key, str) else key,))
    assert signer.verify_operator(token, time.time() + 7100)
    assert not signer.verify_operator(token, time.time() + 7300)
    refused = CliRunner().invoke(
        main, ["--config", str(config), "console", "token", "--hours", "0"]
    )
    assert (
        refused.exit_code == 2 and "--hours" in refused.output and "Traceback" not in refused.output
    )
