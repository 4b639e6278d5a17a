# txmail: `make run` starts the whole stack, `make test` runs every test (`make unit` and
# `make e2e` run the two halves, `make lint` the static checks). Each installs what is missing
# first (Debian packages with apt-get, then a venv with the project), so they work on a fresh
# Debian 12 machine as root.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= state
PORT_OFFSET ?= 0
# Debian packages the stack, the tests and the benchmarks need (systemd: its journald and
# journalctl, which tests/e2e/test_journal.py runs privately, so it never skips in CI;
# prometheus: its promtool checks /metrics and contrib/prometheus/alerts.yml in
# tests/e2e/test_metrics.py; docker.io and debootstrap: tests/e2e/test_image.py builds the image
# with a private engine on a base made from Debian's packages; chromium and chromium-driver:
# selenium drives the console in tests/e2e/test_console_browser.py).
DEB_PACKAGES := postfix dovecot-core redis-server redis-tools libmilter-dev swaks \
	python3-venv python3-dev gcc openssl ca-certificates docker-compose rspamd \
	wrk postfwd rsyslog systemd prometheus logrotate docker.io debootstrap \
	chromium chromium-driver \
	$(EXTRA_DEB_PACKAGES)
EXTRA_DEB_PACKAGES :=
# opendkim, opendkim-tools: the peer stack bench/throughput.py --peer measures txmail against.
DEB_PACKAGES += opendkim opendkim-tools

.PHONY: run test unit e2e deps system-deps venv bench fuzz lint clean

# compileall: the bounce pipe runs once per bounce as the unprivileged txmail user, who cannot
# write __pycache__ here; without compiled files each run compiles the parser again (about a
# fifth of its start-up time: 397 against 320 ms).
run: deps
	$(PY) -m compileall -q txmail
	@if [ ! -f $(STATE)/txmail.toml ]; then \
		$(VENV)/bin/txmail init --state-dir $(STATE) --port-offset $(PORT_OFFSET); fi
	$(VENV)/bin/txmail --config $(STATE)/txmail.toml up --dev

# One pytest run over everything. The split is by marker: `e2e` tests start real Postfix,
# Dovecot and Redis stacks (tests/e2e/, most of tests/security/); the rest (tests/unit/,
# tests/fuzz/, the security tests that need no stack) start at most a private redis-server.
test: deps
	$(PY) -m pytest

unit: deps
	$(PY) -m pytest -m 'not e2e'

e2e: deps
	$(PY) -m pytest -m e2e

bench: deps
	$(PY) bench/throughput.py
	$(PY) bench/dkim_signing.py
	$(PY) bench/policyd.py
	$(PY) bench/bounce_parser.py
	$(PY) bench/bounce_latency.py
	$(PY) bench/bounce_pipe.py
	$(PY) bench/webhooks.py
	$(PY) bench/tracker.py

# Coverage-guided fuzzing of the bounce parser (atheris, from the optional extra `fuzz`).
FUZZ_SECONDS ?= 300
fuzz: deps
	$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q -e '.[test,fuzz]'
	$(PY) bench/fuzz_bounce.py --seconds $(FUZZ_SECONDS)

LINT_PATHS := txmail txmail_testing tests bench
lint: deps
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

deps: system-deps venv

# Installs only what is missing, so a second run costs a second.
system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get -o DPkg::Lock::Timeout=900 update -q && \
		apt-get -o DPkg::Lock::Timeout=900 install -y -q $$missing; \
	fi

# The venv is built on Debian's /usr/bin/python3 so that pipe(8)'s unprivileged user can run
# it (an interpreter under root's mode-0700 home cannot be executed by that user).
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
