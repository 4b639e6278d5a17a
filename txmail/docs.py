"""Keep the generated parts of README.md current.

The README's configuration and account-settings references and its metric list are generated
from the declarations in config.py, accounts/settings.py, tracker/metrics.py and histograms.py,
between marker comments:

    <!-- generated:NAME -->  ...  <!-- end:NAME -->

`python -m txmail.docs README.md` rewrites them; tests/unit/test_docs.py fails when they are
stale, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

from txmail import config
from txmail.accounts import settings as account_settings
from txmail.tracker import metrics

SECTIONS: dict[str, Callable[[], str]] = {
    "config-reference": config.reference,
    "account-settings": account_settings.reference,
    "metrics": metrics.reference,
}


def render(text: str) -> str:
    for name, produce in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- generated:{name} --> section")
        text = pattern.sub(functools.partial(_filled, produce), text)
    return text


def _filled(produce: Callable[[], str], section: re.Match[str]) -> str:
    """A generated section between its markers (groups 1 and 2), with fresh text."""
    return section.group(1) + produce() + section.group(2)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "README.md")
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
