# txmail in a container: Debian 12 with Postfix, Dovecot, rspamd and the txmail package. compose.yaml
# runs one component per container from this image (`txmail up --only NAME`); they meet in the
# shared state volume (/var/lib/txmail: sockets, the rendered Postfix, the queue).
FROM debian:12-slim

ENV DEBIAN_FRONTEND=noninteractive
RUN echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
 && apt-get update \
 && apt-get install -y --no-install-recommends postfix dovecot-core redis-tools libmilter1.0.1 \
        libmilter-dev gcc python3-venv python3-dev ca-certificates openssl rspamd \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid and gid, so every container agrees on who may enter the bounce recorder's socket
# folder and read the configuration in the shared volume (the keys are root's alone).
RUN groupadd --system --gid 990 txmail \
 && useradd --system --uid 990 --gid txmail --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin txmail

WORKDIR /opt/txmail
COPY pyproject.toml README.md ./
COPY txmail ./txmail
COPY postfix-conf ./postfix-conf
RUN python3 -m venv /opt/txmail/venv \
 && /opt/txmail/venv/bin/pip install --no-cache-dir . \
 && apt-get purge -y gcc libmilter-dev python3-dev && apt-get autoremove -y

ENV PATH=/opt/txmail/venv/bin:$PATH \
    TXMAIL_CONFIG=/var/lib/txmail/txmail.toml
VOLUME /var/lib/txmail
ENTRYPOINT ["txmail"]
CMD ["up"]
