"""systemd's readiness protocol (sd_notify(3)), spoken directly: a datagram of KEY=VALUE lines
to the socket named by $NOTIFY_SOCKET, which systemd sets for a Type=notify service.

`txmail up` takes the variable out of its environment at start (as sd_notify's
unset_environment does), so the components it starts (Dovecot, Redis, rspamd, which speak the
protocol too) never announce themselves in its place; it sends READY=1 when it prints its
ready line and STOPPING=1 when it begins to stop. Without the variable (not under systemd,
or not Type=notify) nothing is sent.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environ(cls) -> Notifier:
        """The notifier of $NOTIFY_SOCKET, removed from the environment."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None) or None)

    def send(self, *lines: str) -> bool:
        """Send the lines as one datagram; False when there is nowhere to send them or
        systemd's socket refuses (a notification is never worth stopping the node for)."""
        if not self.address or self.address[0] not in "/@":
            return False
        # "@name" is a socket in the abstract namespace: a NUL byte first.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode("utf-8"), target)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
