"""The demo account `txmail up --dev` creates so a new user can send a first message at once."""

from __future__ import annotations

from txmail import store
from txmail.accounts.records import Accounts, generate_password
from txmail.config import Settings
from txmail.files import write_private

DEMO_ACCOUNT = "demo"
DEMO_DOMAIN = "example.com"


def ensure_demo_account(settings: Settings) -> str:
    """Create the demo account unless it exists; return the first-message instructions."""
    accounts = Accounts(store.connect(settings), store.Keys(settings.redis.prefix))
    password_file = settings.path("demo-password")
    if accounts.find(DEMO_ACCOUNT) is None or not password_file.exists():
        password = generate_password()
        if accounts.find(DEMO_ACCOUNT) is None:
            accounts.add(DEMO_ACCOUNT, [DEMO_DOMAIN], password)
        else:
            accounts.set_password(DEMO_ACCOUNT, password)
        write_private(password_file, password.encode() + b"\n")
    return (
        f"txmail: demo account '{DEMO_ACCOUNT}' sends as @{DEMO_DOMAIN}; its password is in "
        f"{password_file}\n"
        f"txmail: send a first message with:\n"
        f"  swaks --server {settings.listen.address}:{settings.listen.submission} --tls "
        f'--auth PLAIN --auth-user {DEMO_ACCOUNT} --auth-password "$(cat {password_file})" '
        f"--from app@{DEMO_DOMAIN} --to someone@example.net\n"
        f"txmail: delivered mail is kept in {settings.path(settings.dev.capture_dir)}"
    )
