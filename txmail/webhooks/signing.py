"""Standard Webhooks signatures: moved to the core, txmail/tokens/webhooks.py (the console in
the tracker signs test posts too); this name stays for the dispatcher and older imports."""

from txmail.tokens.webhooks import (  # noqa: F401 - re-exported
    PREFIX,
    TOLERANCE,
    account_secret,
    account_secrets,
    headers,
    secret_bytes,
    secret_text,
    signature,
    verify,
)
