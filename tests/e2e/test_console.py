"""The console on a real node (`txmail up`): the tracker serves it, `txmail console token`
opens it for the operator, an account holder logs in with the password Dovecot checks for
SMTP, and the operator's nodes page finds the node's components answering."""

from __future__ import annotations

import re

import pytest
import requests

from tests.e2e.test_tracker import tracker_url
from txmail_testing.harness import Stack

pytestmark = pytest.mark.e2e


def _login(base: str, **fields: str) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    page = browser.get(base + "/console/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    answer = browser.post(
        base + "/console/login", data={"csrf": csrf.group(1), **fields}, timeout=10
    )
    return browser, answer


def test_operator_and_account_holder_on_a_running_node(stack: Stack) -> None:
    password = stack.add_account("consolee2e", "console-e2e.example")
    base = tracker_url(stack)
    token = stack.txmail("console", "token").stdout.strip()

    operator, landed = _login(base, token=token)
    assert landed.status_code == 200 and landed.url.endswith("/console/accounts")
    assert "consolee2e" in landed.text
    nodes = operator.get(base + "/console/nodes", timeout=30)
    assert nodes.status_code == 200
    components = dict(re.findall(r"<tr><td>([a-z-]+)</td><td class=\"(ok|bad)\">", nodes.text))
    for name in ("redis", "milter", "policyd", "tracker", "postfix", "dovecot"):
        assert components.get(name) == "ok", (name, components)

    holder, page = _login(base, login="consolee2e", password=password)
    assert page.status_code in (200, 404)  # the overview (insight's page) or its stub
    smtp = holder.get(base + "/console/smtp", timeout=10)
    assert smtp.status_code == 200 and "consolee2e" in smtp.text
    assert f"Port {stack.submission}" in smtp.text
    domains = holder.get(base + "/console/domains", timeout=10)
    assert "console-e2e.example" in domains.text and "no DKIM key yet" in domains.text
    stack.txmail("domains", "add", "console-e2e.example", "--account", "consolee2e")
    domains = holder.get(base + "/console/domains", timeout=10)
    assert "._domainkey.console-e2e.example" in domains.text
    assert holder.get(base + "/console/accounts", timeout=10).status_code == 403
