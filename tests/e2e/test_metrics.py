"""/metrics of a real node after real traffic, and the dashboard and alert rules against it.

Mail goes through real Postfix, the milter and policyd (accepted, one refused, one bounced by
the sink), events are posted by the dispatcher to a real webhook receiver; then the scrape
passes `promtool check metrics` (Prometheus' conventions), contrib/prometheus/alerts.yml passes
`promtool check rules`, and every metric named in an expression of the alert rules or the
Grafana dashboard is one the node served with at least one sample.
"""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from txmail_testing.harness import Stack, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "txmail.json"
PROMTOOL = shutil.which("promtool")
# Words of PromQL that are not metric names (functions are recognised by their parenthesis).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label matchers,
    ranges and grouping clauses that are neither functions nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    found = set()
    for match in IDENTIFIER.finditer(text):
        name = match.group()
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # part of a number such as 1e3
            continue
        if re.match(r"\s*\(", text[match.end() :]) or name.lower() in KEYWORDS:
            continue
        found.add(name)
    return found


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'max without (instance) (txmail_a{scope="x"} >= 0.8 * txmail_b) and on (account) '
        'histogram_quantile(0.95, sum by (le) (rate(txmail_c_bucket{q="a{b}"}[5m]))) > bool 1e3'
    )
    assert metric_names(expr) == {"txmail_a", "txmail_b", "txmail_c_bucket"}


def alert_expressions() -> list[str]:
    exprs = []
    for line_block in re.split(r"\n\s*- alert: ", ALERTS.read_text())[1:]:
        match = re.search(r"\n\s*expr: (\|\n)?(.*?)\n\s*(for|labels):", line_block, re.S)
        assert match, line_block[:200]
        exprs.append(match.group(2))
    return exprs


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def scrape(stack: Stack) -> str:
    response = requests.get(f"http://127.0.0.1:{8080 + stack.offset}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def samples(text: str) -> dict[str, float]:
    """Sample name (without labels) -> the sum of its values."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name = series.split("{", 1)[0]
            found[name] = found.get(name, 0.0) + float(value)
    return found


@pytest.fixture(scope="module")
def served(stack: Stack, receiver: WebhookReceiver) -> str:
    """The scrape after traffic that gives every metric samples."""
    name = f"m{uuid.uuid4().hex[:8]}"
    domain = f"{name}.example"
    sender = f"app@{domain}"
    password = stack.add_account(name, domain)  # warm-up on: the warm-up gauges have series
    stack.txmail("webhooks", "url", name, receiver.url)
    for recipient in (f"reader-{name}@example.net", f"reject-{name}@example.net"):
        stack.send((name, password), sender, [recipient], simple_message(sender, recipient))
    with pytest.raises(smtplib.SMTPException):  # not the account's domain: the milter refuses
        other = f"app@not-{domain}"
        stack.send((name, password), other, ["x@example.net"], simple_message(other, "x"))
    for kind in ("delivery", "bounce"):
        receiver.wait_event(lambda e, k=kind: e["account"] == name and e["kind"] == k, 60)

    def ready() -> str | None:
        text = scrape(stack)
        counts = samples(text)
        wanted = (
            "txmail_milter_end_of_message_seconds_count",
            "txmail_policy_decision_seconds_count",
            "txmail_webhook_post_seconds_count",
            "txmail_webhook_event_delay_seconds_count",
            "txmail_events_total",
            "txmail_component_last_seen_timestamp_seconds",
        )
        # the dispatcher flushes its observations about once a second: the bounce's delay may
        # come a flush after the delivery's
        bounce_delay = 'txmail_webhook_event_delay_seconds_bucket{kind="bounce",le="+Inf"'
        if all(counts.get(w, 0) > 0 for w in wanted) and bounce_delay in text:
            return text
        return None

    text = wait_for(ready, 30, 0.5, what="histograms and counters with samples in /metrics")
    assert f'txmail_events_total{{account="{name}",kind="bounce",scope="installation"}} 1.0' in text
    assert 'txmail_webhook_event_delay_seconds_bucket{kind="bounce",le="+Inf",scope="node"}' in text
    for component in ("milter", "policyd", "webhooks"):
        assert f'component="{component}"' in text
    return text


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: `make` installs prometheus")
def test_the_scrape_follows_prometheus_conventions(served: str) -> None:
    assert PROMTOOL
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=served, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'txmail_build_info{python="' in served


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: `make` installs prometheus")
def test_alert_rules_pass_promtool() -> None:
    assert PROMTOOL
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: `make` installs prometheus")
def test_a_component_that_stopped_or_never_reported_fires() -> None:
    """tests/data/prometheus/alerts_test.yml: on two nodes, a milter that stopped reporting
    fires TxmailComponentDown and one that never reported TxmailComponentNeverReported."""
    assert PROMTOOL
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(ROOT / "tests/data/prometheus/alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_in_the_rules_and_dashboard_is_served(served: str) -> None:
    names = samples(served)
    prometheus_own = {"up"}  # the scrape's own series, not the exporter's
    exprs = alert_expressions() + dashboard_expressions()
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        found = metric_names(expr)
        assert found, expr
        used |= found
    missing = sorted(n for n in used - prometheus_own if names.get(n) is None)
    assert not missing, f"named in contrib/ but not served: {missing}"
    # each area the issue names has a rule or panel
    for needed in (
        "txmail_webhook_dead_letters",
        "txmail_webhook_oldest_undelivered_age_seconds",
        "txmail_postfix_queue_messages",
        "txmail_account_reputation_ratio",
        "txmail_up",
        "txmail_component_last_seen_timestamp_seconds",
        "txmail_account_warmup_day",
    ):
        assert needed in used, needed
