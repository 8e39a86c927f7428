"""A real OpenSSH sshd on loopback for tests (needs root and the openssh-server binary).

    sshd = Sshd(tmp_path / "sshd", authorized_keys=[public_line]).start()
    session = Session(sshd.host, sshd.port, sshd.user, key_path, host_keys=[sshd.host_public])
    ...
    sshd.kill_connections()  # drop every client connection, keep listening
    sshd.stop()

End-to-end cloud tests pass ``host_key_pem`` (the key the provider put in user data) so the
"machine" presents exactly the host key the client pinned.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from launcher.keys import generate_ed25519, host_key_line, write_private_key

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    """Absolute path of sshd (it refuses to re-exec itself from a relative one)."""
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    # bind-then-close can race with another process; start() retries on a bind failure
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            kids.append(int(entry))
    return kids


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Sshd:
    """One sshd listener, started with ``start()`` and reaped by ``stop()``."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        authorized_keys: list[str],
        host: str = "127.0.0.1",
        port: int | None = None,
        host_key_pem: str | None = None,
        sshd_path: str | None = None,
    ):
        self.workdir = Path(workdir)
        self.authorized_keys = list(authorized_keys)
        self.host = host
        self.port = port
        self.user = getpass.getuser()
        self.sshd_path = sshd_path or find_sshd()
        self.host_key_pem = host_key_pem or generate_ed25519("test-host")[0]
        self.host_public = host_key_line(self.host_key_pem)  # "ssh-ed25519 AAAA..."
        self.log_path = self.workdir / "sshd.log"
        self.pid_path = self.workdir / "sshd.pid"
        self.config_path = self.workdir / "sshd_config"
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        """None when usable, else why not (for pytest.skip)."""
        if find_sshd() is None:
            return "no OpenSSH sshd binary (apt-get install openssh-server)"
        if os.geteuid() != 0:
            return "the sshd harness runs sshd as root"
        return None

    def _write_config(self, port: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_path = write_private_key(self.workdir / "ssh_host_ed25519_key", self.host_key_pem)
        auth = self.workdir / "authorized_keys"
        auth.write_text("".join(k.strip() + "\n" for k in self.authorized_keys))
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {key_path}",
                    f"PidFile {self.pid_path}",
                    f"AuthorizedKeysFile {auth}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "AllowAgentForwarding no",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "ClientAliveInterval 5",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def start(self, timeout_s: float = 10) -> "Sshd":
        if self.sshd_path is None:
            raise RuntimeError("no sshd binary")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
        fixed = self.port is not None
        for _ in range(1 if fixed else 3):
            port = self.port if fixed else free_port(self.host)
            self._write_config(port)
            # -D: stay in the foreground as our child, so stop() can reap it (PID 1 may not)
            self._proc = subprocess.Popen(
                [self.sshd_path, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening(port, timeout_s):
                self.port = port
                return self
            self.stop()
        raise RuntimeError(f"sshd did not start on {self.host}:{self.port}; log:\n{self.log_text()}")

    def _wait_listening(self, port: int, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                return False  # e.g. port taken: sshd exits at once
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def connection_pids(self) -> list[int]:
        """Per-connection sshd processes (children of the listener and their sshd children)."""
        if not self._proc:
            return []
        found, todo = [], _children(self._proc.pid)
        while todo:
            pid = todo.pop()
            if _comm(pid).startswith("sshd") and not _gone(pid):
                found.append(pid)
                todo += _children(pid)
        return found

    def kill_connections(self, timeout_s: float = 5) -> int:
        """SIGKILL every connection's sshd processes but not the listener: the client sees
        its link drop; jobs started with setsid live on. Returns how many were killed."""
        pids = self.connection_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not all(_gone(p) for p in pids):
            time.sleep(0.01)
        return len(pids)

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {self.host_public}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._proc = proc  # kill_connections looks at the listener's children
            self.kill_connections()
            self._proc = None
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> "Sshd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
