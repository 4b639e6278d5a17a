"""txmail_testing: the harness that tests/ and bench/ share, importable without path edits.

    harness           real Redis (and Redis Cluster), a scriptable SMTP sink, whole txmail
                      stacks on loopback, free ports, waiting
    webhook_receiver  an HTTP server that records webhook posts and can fail on demand
    loopback_dns      a tiny authoritative DNS server on loopback UDP
    rspamd            a private rspamd with a minimal configuration
    soak              the soak-under-faults engine (bench/soak.py, tests/e2e/test_soak.py)

It is not part of the product: the wheel ships only `txmail`. `make venv` installs the
project in editable mode, which puts the checkout's root on the venv's path (pyproject.toml:
dev-mode-dirs), so `.venv/bin/python bench/throughput.py` finds this package from any folder.
"""
