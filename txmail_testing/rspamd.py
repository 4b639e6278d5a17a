"""A private rspamd for tests: Debian's rspamd binary with a minimal config in a temp folder,
written by the product's own writer (txmail/stack/rspamd.py, stock=False).

Only loopback traffic: no modules but those asked for (`filters`), DNS pointed at a loopback
server (or a closed loopback port), a three-line TLD list instead of the public suffix list
(which also cuts start-up from about 15 s to 1 s). The Lua rule TXMAIL_TEST_SPAM scores 20
when the Subject contains "txmail-test-spam", so tests get a deterministic verdict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from typing import Any

from txmail.stack import rspamd as product
from txmail_testing.harness import free_listening_port, state_dir, terminate, wait_for

SPAM_SUBJECT = "txmail-test-spam"

EXTRA = """
dkim {{
  check_local = true;
  check_authed = true;
}}
lua = "{dir}/txmail_test.lua";
"""

RULE = """
rspamd_config:register_symbol({
  name = 'TXMAIL_TEST_SPAM',
  score = 20.0,
  callback = function(task)
    local subject = task:get_subject()
    return subject ~= nil and subject:find('txmail%-test%-spam') ~= nil
  end,
})
"""


class Rspamd:
    def __init__(self, filters: str = "", dns_port: int | None = None) -> None:
        self.dir = state_dir("rspamd")
        self.port = free_listening_port()
        (self.dir / "txmail_test.lua").write_text(RULE)
        (self.dir / "tld.dat").write_text("example\ntest\nnet\n")
        product.write_config(
            self.dir,
            f"127.0.0.1:{self.port}",
            [f"127.0.0.1:{dns_port or free_listening_port()}"],
            stock=False,
            filters=filters,
            url_tld=str(self.dir / "tld.dat"),
            extra=EXTRA.format(dir=self.dir),
            level="info",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Rspamd:
        with (self.dir / "rspamd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                product.argv(self.dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.ping, 60, interval=0.2, what=f"rspamd on {self.port}")
        return self

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rspamd exited {self.proc.returncode}: {self.log()[-2000:]}")
        return product.ping(self.url)

    def check(self, message: bytes, **headers: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/checkv2", data=message, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def log(self) -> str:
        path = self.dir / "rspamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc, 20)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
