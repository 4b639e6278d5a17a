# txmail in a container: Debian 12 with Postfix, Dovecot, rspamd and the txmail package.
# compose.yaml runs one component per container from this image; they meet in the shared state
# volume (/var/lib/txmail: sockets, the rendered Postfix, the queue). Alone, the image runs the
# whole node (`txmail up`).
#
# Two stages: the first has the compilers and headers and builds the venv (pymilter compiles
# against libmilter); the second copies that venv beside the runtime packages only, so no
# compiler or header file reaches the image. BASE lets a build use a base image made locally
# (tests/e2e/test_image.py: debootstrap, then `docker import`).
ARG BASE=debian:12-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
# Versions are those of the Debian release in BASE (bookworm): not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libmilter-dev python3-dev \
        python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY txmail ./txmail
COPY postfix-conf ./postfix-conf
# Not editable, not cached: the venv holds txmail and its dependencies and nothing else. The
# bounce pipe runs as the unprivileged txmail user, who cannot write __pycache__: compile now.
# Behind a proxy that signs TLS with its own CA, pip is given that CA (a public certificate)
# beside Debian's: `--build-arg PIP_CA="$(cat ca.pem)"`. Only this stage sees it; the image
# does not hold it.
ARG PIP_CA=""
RUN if [ -n "$PIP_CA" ]; then \
        { cat /etc/ssl/certs/ca-certificates.crt; printf '%s\n' "$PIP_CA"; } > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi \
 && python3 -m venv /opt/txmail/venv \
 && /opt/txmail/venv/bin/pip install --no-cache-dir . \
 && /opt/txmail/venv/bin/python -m compileall -q /opt/txmail/venv

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini is PID 1: it reaps the children of the components' own children and forwards SIGTERM
# to the whole process group (-g), Postfix's master (start-fg) among them.
# hadolint ignore=DL3008
RUN echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 libmilter1.0.1 postfix dovecot-core \
        redis-tools ca-certificates openssl rspamd tini \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid and gid, so every container agrees on who may enter the bounce recorder's socket
# folder and read the configuration in the shared volume (the keys are root's alone). The
# tracker and the webhooks dispatcher run as this user (compose.yaml).
RUN groupadd --system --gid 990 txmail \
 && useradd --system --uid 990 --gid txmail --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin txmail
COPY --from=build /opt/txmail/venv /opt/txmail/venv

ENV PATH=/opt/txmail/venv/bin:$PATH \
    TXMAIL_CONFIG=/var/lib/txmail/txmail.toml
VOLUME /var/lib/txmail
# The whole node when run alone; compose.yaml asks each container's component by name.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["txmail", "health"]
ENTRYPOINT ["tini", "-g", "--", "txmail"]
CMD ["up"]
