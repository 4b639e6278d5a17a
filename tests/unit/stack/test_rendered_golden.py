"""Golden text: the Postfix main.cf and master.cf and Dovecot's dovecot.conf that txmail renders
for one fixed configuration, compared line by line with tests/data/golden/ (Mailman's
test_aliases.py), and the rendered Postfix directory read by Postfix itself (postconf -n, -M).

A change to postfix-conf/ or to txmail/stack/render.py shows up here as a diff to review. When
the change is meant, regenerate the expected files and commit them with it:

    TXMAIL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/stack/test_rendered_golden.py

The output is made deterministic: the state directory is a fixed path (Dovecot's, rendered into
a temporary folder because rendering writes the authpolicy key beside it, has that folder
replaced by the fixed path), and the interpreter of the bounce pipe, whichever venv runs the
tests, is written as @PYTHON@. No secret is rendered into these three files.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from pathlib import Path

import pytest

from txmail import config
from txmail.stack import render

GOLDEN = Path(__file__).resolve().parents[2] / "data/golden"
UPDATE = os.environ.get("TXMAIL_UPDATE_GOLDEN") == "1"
STATE = "/var/lib/txmail"
PORT_OFFSET = 10000


def golden_settings(state_dir: str) -> config.Settings:
    """What `txmail init --port-offset 10000` writes for these names and this relayhost, plus
    a trusted listener so that its optional master.cf lines are compared too."""
    settings = config.Settings(
        state_dir=state_dir, hostname="mta.golden.test", bounce_domain="bounces.golden.test"
    )
    settings = dataclasses.replace(
        config.with_port_offset(settings, PORT_OFFSET),
        postfix=dataclasses.replace(settings.postfix, relayhost="[127.0.0.1]:12525"),
        trusted=config.TrustedSettings(
            port=2587 + PORT_OFFSET, networks=["10.1.2.0/24"], account="golden"
        ),
    )
    config.validate(settings)
    return settings


def assert_golden(name: str, rendered: str) -> None:
    expected_file = GOLDEN / name
    if UPDATE:
        expected_file.write_text(rendered)
        return
    expected = expected_file.read_text() if expected_file.exists() else ""
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                f"tests/data/golden/{name} (expected)",
                f"{name} (rendered now)",
            )
        )
        pytest.fail(
            f"the rendered {name} differs from tests/data/golden/{name}:\n{diff}\n"
            "If the change is meant, regenerate the expected files and commit them:\n"
            "  TXMAIL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest "
            "tests/unit/stack/test_rendered_golden.py",
            pytrace=False,
        )


def portable(text: str) -> str:
    return text.replace(sys.executable, "@PYTHON@")


@pytest.fixture(scope="module")
def postfix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = golden_settings(STATE)
    out = tmp_path_factory.mktemp("postfix-etc")
    return render.render_postfix(settings, Path(STATE) / "txmail.toml", out)


@pytest.mark.parametrize("name", ["main.cf", "master.cf"])
def test_postfix_config_is_the_expected_text(postfix_dir: Path, name: str) -> None:
    assert_golden(name, portable((postfix_dir / name).read_text()))


def test_postfix_reads_the_rendered_config_without_a_warning(postfix_dir: Path) -> None:
    render.check_postfix(postfix_dir)  # postconf -n and postconf -M, any warning fails


def test_dovecot_config_is_the_expected_text(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = golden_settings(str(state))
    conf = render.render_dovecot(settings, state / "txmail.toml")
    # `instance` is made from the state directory's path: put the fixed path's in its place.
    config_file = Path(STATE) / "txmail.toml"
    instance_here = render.values(settings, state / "txmail.toml")["instance"]
    instance_fixed = render.values(golden_settings(STATE), config_file)["instance"]
    text = conf.read_text().replace(instance_here, instance_fixed).replace(str(state), STATE)
    assert_golden("dovecot.conf", portable(text))
