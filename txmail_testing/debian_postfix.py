"""An operator's Postfix as Debian 12 ships it, on loopback, logging through a real rsyslog.

DebianPostfix makes a Postfix instance in its own folders from Debian's stock files:
main.cf from /usr/share/postfix/main.cf.debian (what the postfix package's postinst copies),
master.cf from /usr/share/postfix/master.cf.dist (what the postinst copies, byte for byte what
/etc/postfix/master.cf is: smtpd, cleanup, trivial-rewrite, smtp, bounce... chroot `y`). Only
what an instance of its own needs is changed: its folders, loopback, port 25 moved to a free
port, no local delivery, a relayhost. The chroot jail is populated by Debian's own
/usr/lib/postfix/configure-instance.sh (what postfix@.service runs before every start), which
copies resolv.conf, hosts, services, localtime, nsswitch.conf and the NSS libraries into the
queue directory.

Postfix logs through syslog(3) to /dev/log, and Postfix 3.7 cannot be told another socket
(only maillog_file, which is not how Debian logs). This machine has no /dev/log, and other
tests may run at the same time, so instead of taking the machine's /dev/log, Postfix is
started in a private mount namespace (unshare) whose /dev is a small tmpfs holding the usual
device nodes and a /dev/log that leads to this instance's own rsyslogd. Every Postfix process
is a child of that master, so all of them log there; nothing outside the namespace changes.
The rsyslogd is Debian's, with Debian's mail.* rule and, as /etc/rsyslog.d/postfix.conf
does, a second socket in the chroot jail (QUEUE/dev/log) for chrooted daemons that reconnect.

Stopped by the pids it started: rsyslogd by its own pid, Postfix with `postfix stop` (the
namespace goes when its last process does).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from txmail_testing.harness import free_listening_port, state_dir, terminate, wait_for

DEBIAN_MAIN = Path("/usr/share/postfix/main.cf.debian")
DEBIAN_MASTER = Path("/usr/share/postfix/master.cf.dist")
CONFIGURE_INSTANCE = Path("/usr/lib/postfix/configure-instance.sh")

# The device nodes Postfix and its commands use, bound into the namespace's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

NAMESPACE_START = """set -e
mount --bind /dev "$ROOT/ns/realdev"
mount -t tmpfs -o mode=755,size=64k txmail-test-dev /dev
for node in {devices}; do
  touch "/dev/$node"
  mount --bind "$ROOT/ns/realdev/$node" "/dev/$node"
done
umount -l "$ROOT/ns/realdev"
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
ln -s "$ROOT/syslog/log" /dev/log
exec postfix -c "$ROOT/etc" start
"""


class Rsyslog:
    """Debian's rsyslogd with a configuration of its own: mail.* into `log_file`, from the
    unix sockets `sockets` (imuxsock; never the machine's /dev/log)."""

    def __init__(self, folder: Path, log_file: Path, sockets: list[Path]) -> None:
        self.folder = folder
        self.log_file = log_file
        self.sockets = sockets
        self.pid_file = folder / "rsyslogd.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        inputs = "".join(f'input(type="imuxsock" Socket="{s}")\n' for s in self.sockets)
        return (
            f'global(workDirectory="{self.folder}")\n'
            'module(load="imuxsock" SysSock.Use="off")\n'
            f"{inputs}"
            # Debian's /etc/rsyslog.conf: file mode and the mail rule
            "$FileOwner root\n$FileGroup adm\n$FileCreateMode 0640\n"
            f"mail.*\t\t\t\t-{self.log_file}\n"
        )

    def start(self) -> Rsyslog:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "rsyslog.conf"
        conf.write_text(self.config())
        with (self.folder / "rsyslogd.out").open("wb") as out:
            self.proc = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.pid_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: all(s.is_socket() for s in self.sockets), 10, what="rsyslogd's sockets")
        return self

    def stop(self) -> None:
        terminate(self.proc, 10)


class DebianPostfix:
    """An operator's Postfix made from Debian's stock main.cf and master.cf (chroot as
    shipped), in its own folders under /tmp, with port 25 on a free loopback port."""

    def __init__(self, relay_port: int, extra: dict[str, str] | None = None) -> None:
        self.root = state_dir("debian")
        self.etc = self.root / "etc"
        self.queue = self.root / "spool"
        self.data = self.root / "data"
        self.mail_log = self.root / "mail.log"
        self.port = free_listening_port()
        self.relay_port = relay_port
        self.extra = extra or {}
        self.syslog = Rsyslog(
            self.root / "syslog",
            self.mail_log,
            [self.root / "syslog/log", self.queue / "dev/log"],
        )

    def postconf(self, *args: str) -> str:
        return subprocess.run(
            ["postconf", "-c", str(self.etc), *args], capture_output=True, text=True, check=True
        ).stdout

    def create(self) -> DebianPostfix:
        for folder in (self.etc, self.queue, self.data, self.root / "ns/realdev"):
            folder.mkdir(parents=True)
        shutil.chown(self.data, "postfix", "postfix")
        self.data.chmod(0o700)
        shutil.copy(DEBIAN_MAIN, self.etc / "main.cf")
        shutil.copy(DEBIAN_MASTER, self.etc / "master.cf")
        settings = {
            # what the postinst adds for a new main.cf
            "smtpd_relay_restrictions": (
                "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
            ),
            # an instance of its own on loopback
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "myhostname": "mx.operator.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            **self.extra,
        }
        self.postconf("-e", *(f"{k} = {v}" for k, v in settings.items()))
        # Port 25 onto a free loopback port; the service keeps Debian's columns (chroot y).
        [smtp] = [line for line in self.postconf("-M", "smtp/inet").splitlines()]
        fields = smtp.split()[2:]
        self.postconf(
            "-M", "-e", f"127.0.0.1:{self.port}/inet=127.0.0.1:{self.port} inet {' '.join(fields)}"
        )
        self.postconf("-M", "-X", "smtp/inet")
        return self

    def populate_chroot(self) -> None:
        """What Debian runs before each start (postfix@.service ExecStartPre)."""
        subprocess.run(
            [str(CONFIGURE_INSTANCE), "-"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MAIL_CONFIG": str(self.etc)},
            check=True,
            capture_output=True,
        )

    def start(self) -> DebianPostfix:
        self.populate_chroot()
        (self.queue / "dev").mkdir(exist_ok=True)
        if self.syslog.proc is None:
            self.syslog.start()
        script = self.root / "ns/start.sh"
        script.write_text(NAMESPACE_START.format(devices=" ".join(DEVICES)))
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", str(script)],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(self.root)},
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.master_pid, 10, what="Postfix's master.pid")
        wait_for(lambda: "daemon started" in self.log(), 10, what="master's start in the log")
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid/master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def reload(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "reload"], check=True, capture_output=True)

    def log(self) -> str:
        return self.mail_log.read_text(errors="replace") if self.mail_log.exists() else ""

    def files(self) -> dict[str, bytes]:
        return {name: (self.etc / name).read_bytes() for name in ("main.cf", "master.cf")}

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, check=False)
        pid = self.master_pid()
        if pid is not None:
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15, what="Postfix's master to exit")

    def close(self) -> None:
        self.stop()
        self.syslog.stop()
        shutil.rmtree(self.root, ignore_errors=True)
