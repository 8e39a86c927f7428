"""SSH session to the machine: pinned host key, one reused connection, SFTP, a detached job
and a log stream that survives dropped connections.

Remote paths are absolute or relative to the login directory (``~/x`` is accepted and means
``x``): SFTP does not expand ``~`` and shell-quoted paths must not either.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import os
import re
import select
import shlex
import socket
import stat
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterable

import paramiko

from launcher.errors import (
    HostKeyError,
    RemoteCommandFailed,
    RemoteError,
    SSHConnectError,
    WaitTimeout,
)
from launcher import signals
from launcher.keys import fingerprint
from launcher.uploads import select_files

if TYPE_CHECKING:
    from launcher.providers.base import Machine

# paramiko logs transport errors (e.g. "connection reset") at ERROR; without a handler
# Python's last-resort handler would print them, and core code never prints.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
KEEPALIVE_S = 5  # SSH keepalive traffic, so TCP_USER_TIMEOUT below sees unacked data
DEAD_LINK_S = 15  # a link whose data stays unacknowledged this long is dead
STATUS_WAIT_S = 5.0  # after EOF, how long the exit status may trail the data
STOPPED_WAIT_S = 15.0  # after a signal stops a command, how long we wait for it to end remotely
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIGNAL = re.compile(r"[A-Z0-9]+")
# Host-key algorithm names a pinned key type can be negotiated under (RSA: SHA-2 only).
_HOSTKEY_ALGOS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def _rpath(path: str) -> str:
    return path[2:] if path.startswith("~/") else path


def _key_blob(public_line: str) -> bytes | None:
    fields = public_line.split()
    if len(fields) < 2:
        return None
    try:
        return base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def _host_pattern_match(names: str, target: str) -> bool:
    """OpenSSH known_hosts host field: comma list, hashed |1| entries, wildcards, ! negation."""
    matched = False
    for name in names.split(","):
        if name.startswith("|1|"):
            if paramiko.HostKeys.hash_host(target, name) == name:
                matched = True
            continue
        negate = name.startswith("!")
        # OpenSSH wildcards are only * and ?; "[host]:port" brackets are literal
        glob = re.escape(name.lstrip("!").lower()).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(glob, target.lower()):
            if negate:
                return False
            matched = True
    return matched


def known_host_keys(path: str | os.PathLike | None, host: str, port: int = 22) -> list[str]:
    """Public lines ("type base64") that a known_hosts file holds for host:port.

    Port 22 entries are written as ``host``, others as ``[host]:port`` (OpenSSH's rule; it
    does not fall back from one to the other). A missing file holds no keys.
    """
    target = host if port == 22 else f"[{host}]:{port}"
    try:
        text = Path(os.path.expanduser(path or DEFAULT_KNOWN_HOSTS)).read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise HostKeyError(f"cannot read known_hosts file {path}: {err.strerror}") from None
    keys = []
    for line in text.splitlines():
        fields = line.split()
        # @cert-authority / @revoked entries are not plain pins; skipping them never trusts more.
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        if _host_pattern_match(fields[0], target) and _key_blob(f"{fields[1]} {fields[2]}"):
            keys.append(f"{fields[1]} {fields[2]}")
    return keys


def _tune_socket(sock: socket.socket) -> None:
    """Kernel-side dead-link detection: keepalive probes when idle, and TCP_USER_TIMEOUT
    when SSH keepalives stay unacknowledged (the case a pulled cable or dead VM gives)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_S),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_LINK_S * 1000),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
            except OSError:
                pass  # not every kernel has every option; keepalive still helps


class _Cursor:
    """Byte offset into the remote log plus an incremental decoder: a chunk boundary may
    split a multibyte UTF-8 character, and a reconnect resumes mid-character too."""

    def __init__(self, offset: int, on_text: Callable[[str], None]):
        self.offset = offset
        self.on_text = on_text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> None:
        self.offset += len(data)
        text = self.decoder.decode(data)
        if text:
            self.on_text(text)

    def finish(self) -> None:
        text = self.decoder.decode(b"", final=True)
        if text:
            self.on_text(text)


def agent_keys() -> list:
    """Keys held by the ssh-agent at SSH_AUTH_SOCK (empty: no agent, or it holds none)."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        agent = paramiko.Agent()
        return list(agent.get_keys())
    except (paramiko.SSHException, OSError):
        return []


def load_private_key(key_path: str | os.PathLike) -> paramiko.PKey:
    """The client key, or one clear SSHConnectError (missing, encrypted, not a key)."""
    try:
        return paramiko.PKey.from_path(os.path.expanduser(str(key_path)))
    except FileNotFoundError:
        raise SSHConnectError(f"SSH key {key_path} does not exist", hint="pass --identity PATH") from None
    except paramiko.PasswordRequiredException:
        raise SSHConnectError(f"SSH key {key_path} is passphrase-protected",
                              hint="use an unencrypted key for gpujob runs") from None
    except (paramiko.SSHException, OSError, ValueError) as err:
        raise SSHConnectError(f"cannot load SSH key {key_path}: {err}",
                              hint="pass --identity PATH to an OpenSSH private key") from None


class Session:
    """One SSH connection to one machine, reused for the whole run.

    The host key is pinned: from ``host_keys`` (public lines the provider installed), else
    from a known_hosts file (default ``~/.ssh/known_hosts``). Unknown or changed keys raise
    HostKeyError; nothing is ever auto-accepted. Only ``key_path`` is offered, or, when it is
    empty, the keys of the running ssh-agent (``SSH_AUTH_SOCK``); no ~/.ssh key search, no agent
    forwarding. ``jumps`` (ProxyJump hops, first hop first; dicts with host, port, user and
    optionally key_path) are crossed with direct-tcpip channels, each hop's host key pinned
    from the same known_hosts.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_path: str | os.PathLike,
        host_keys: list[str] | None = None,
        known_hosts: str | os.PathLike | None = None,
        connect_timeout: float = 10,
        jumps: list[dict] | None = None,
    ):
        self.host, self.port, self.user = host, int(port), user
        self.key_path = os.path.expanduser(str(key_path)) if key_path else ""
        self.jumps = list(jumps or [])
        self._jump: "Session | None" = None
        self.host_keys = list(host_keys or [])
        self.known_hosts = os.path.expanduser(str(known_hosts or DEFAULT_KNOWN_HOSTS))
        self.connect_timeout = connect_timeout
        self.connections_opened = 0
        self._transport: paramiko.Transport | None = None
        self._sftp_client: paramiko.SFTPClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._abandoned: str | None = None  # set by abandon(): the machine is gone

    @classmethod
    def from_machine(cls, machine: "Machine", connect_timeout: float = 10) -> "Session":
        return cls(
            machine.host or "",
            machine.port,
            machine.user or "",
            machine.key_path or "",
            host_keys=machine.host_keys or None,
            known_hosts=machine.extra.get("known_hosts"),
            connect_timeout=connect_timeout,
            jumps=machine.extra.get("jumps"),
        )

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _pinned(self) -> list[str]:
        keys = self.host_keys or known_host_keys(self.known_hosts, self.host, self.port)
        return [k for k in keys if _key_blob(k) is not None]

    def _load_key(self) -> paramiko.PKey:
        if self._pkey is None:
            self._pkey = load_private_key(self.key_path)
        return self._pkey

    def _keys(self) -> list:
        """The key file's key, or the ssh-agent's keys when no key file is set."""
        if self.key_path:
            return [self._load_key()]
        keys = agent_keys()
        if not keys:
            raise SSHConnectError(f"no key for {self.user}@{self.label}: no identity file and no ssh-agent key",
                                  hint="pass --identity PATH, set IdentityFile in ~/.ssh/config, or ssh-add a key")
        return keys

    def _open_socket(self):
        """A TCP socket to the machine, or a direct-tcpip channel through the last ProxyJump hop."""
        if not self.jumps:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            except OSError as err:
                raise SSHConnectError(f"cannot reach {self.label}: {err.strerror or err}") from None
            _tune_socket(sock)
            return sock
        hop = self.jumps[-1]
        if self._jump is None or not self._jump._alive():
            self._jump = Session(hop["host"], hop.get("port") or 22, hop.get("user") or self.user,
                                 hop.get("key_path") or self.key_path, known_hosts=self.known_hosts,
                                 connect_timeout=self.connect_timeout, jumps=self.jumps[:-1])
            self._jump.connect()
        try:
            return self._jump._transport.open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0),
                                                      timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise SSHConnectError(f"jump host {self._jump.label} cannot reach {self.label}: {err}",
                                  hint="check ProxyJump and that the jump host allows TCP forwarding") from None

    def _check_host_key(self, key: paramiko.PKey, pinned: list[str]) -> None:
        if key.asbytes() in {_key_blob(line) for line in pinned}:
            return
        got = fingerprint(f"{key.get_name()} {key.get_base64()}")
        if not pinned:
            keyscan = f"ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}"
            err = HostKeyError(
                f"host key for {self.label} is not known; add it with `{keyscan}` "
                f"after checking its fingerprint ({got})"
            )
        else:
            expected = ", ".join(fingerprint(line) for line in pinned)
            source = "the key this run installed" if self.host_keys else self.known_hosts
            err = HostKeyError(
                f"host key for {self.label} changed: expected {expected} ({source}), got {got}",
                hint="refusing to connect; if the machine was rebuilt, check and replace the "
                "old entry, else someone may be intercepting the connection",
            )
        err.host, err.port, err.got = self.host, self.port, got
        err.expected = [fingerprint(line) for line in pinned]
        raise err

    def connect(self) -> None:
        """Open the connection if it is not open; a no-op on a live one."""
        if self._alive():
            return
        if self._abandoned:
            raise SSHConnectError(f"{self.label}: {self._abandoned}")
        self._drop_connection()
        keys = self._keys()
        pinned = self._pinned()
        sock = self._open_socket()
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.handshake_timeout = self.connect_timeout
        transport.auth_timeout = self.connect_timeout
        # Offer the pinned key types first so a multi-key server presents the pinned one.
        options = transport.get_security_options()
        wanted = [a for line in pinned for a in _HOSTKEY_ALGOS.get(line.split()[0], (line.split()[0],))]
        first = [a for a in dict.fromkeys(wanted) if a in options.key_types]
        options.key_types = tuple(first + [a for a in options.key_types if a not in first])
        try:
            transport.start_client(timeout=self.connect_timeout)
            self._check_host_key(transport.get_remote_server_key(), pinned)
            for i, pkey in enumerate(keys):  # an agent may hold several keys: offer each in turn
                try:
                    transport.auth_publickey(self.user, pkey)
                    break
                except paramiko.AuthenticationException:
                    if i == len(keys) - 1:
                        raise
        except HostKeyError:
            transport.close()
            raise
        except paramiko.AuthenticationException:
            transport.close()
            raise SSHConnectError(
                f"{self.user}@{self.label} refused the key {self.key_path or '(ssh-agent keys)'}",
                hint="check the user name and that the public key is in the machine's "
                "~/.ssh/authorized_keys",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as err:
            transport.close()
            raise SSHConnectError(f"SSH handshake with {self.label} failed: {err}") from None
        transport.set_keepalive(KEEPALIVE_S)
        self._transport = transport
        self.connections_opened += 1

    def _probe_banner(self, timeout: float) -> None:
        """Cheap reachability check: TCP connect and read the 'SSH-' identification line."""
        if self.jumps:  # only the jump host can reach it: the login attempt is the check
            return
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"SSH-"):
            raise OSError(f"no SSH banner (got {data[:40]!r})")

    def _connect_until(self, what: str, deadline_s: float, probe: bool, last: str) -> float:
        """connect() with backoff until it works or deadline_s passes.

        A mismatch with the key a provider installed may be transient while the machine
        boots (its own generated keys are up before ours), so it is retried and, at the
        deadline, raised as the HostKeyError rather than a timeout. A mismatch with
        known_hosts, or an unknown key, is final at once.
        """
        start = time.monotonic()
        delay = 0.5
        key_error: HostKeyError | None = None
        while True:
            remaining = start + deadline_s - time.monotonic()
            try:
                if probe:
                    self._probe_banner(max(0.5, min(5.0, remaining)))
                self.connect()
                return time.monotonic() - start
            except HostKeyError as err:
                if not (self.host_keys and getattr(err, "expected", None)):
                    raise
                key_error, last = err, "host key mismatch"
            except SSHConnectError as err:
                if self._abandoned:
                    raise
                last = err.message
            except OSError as err:
                last = str(err.strerror or err)
            remaining = start + deadline_s - time.monotonic()
            if remaining <= 0:
                if key_error is not None and last == "host key mismatch":
                    raise key_error
                raise WaitTimeout(what, time.monotonic() - start, last)
            signals.sleep(min(delay, remaining))  # a signal ends the wait (at this safe point)
            delay = min(delay * 1.6, 5.0)

    def wait_until_reachable(self, deadline_s: float) -> float:
        """Wait for sshd and log in (the connection stays open). Returns seconds waited."""
        return self._connect_until(f"SSH on {self.label}", deadline_s, True, "no answer")

    def _reconnect(self, deadline_s: float, cause: BaseException) -> None:
        self._drop_connection()
        self._connect_until(f"SSH reconnect to {self.label}", deadline_s, False, str(cause))

    def _drop_connection(self) -> None:
        if self._sftp_client is not None:
            try:
                self._sftp_client.close()
            except Exception:  # closing a dead link: nothing useful to report
                pass
        if self._transport is not None:
            self._transport.close()
        self._sftp_client = self._transport = None

    def close(self) -> None:
        self._drop_connection()
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def abandon(self, why: str) -> None:
        """The machine is gone (e.g. spot reclaim): drop the link; no wait reconnects (any thread)."""
        self._abandoned = why
        self._drop_connection()

    def _session_channel(self) -> paramiko.Channel:
        self.connect()  # reopens a dropped link before a new command, never mid-command
        try:
            return self._transport.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise SSHConnectError(f"cannot open an SSH channel to {self.label}: {err}") from None

    def _sftp(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp_client is None:
            try:
                self._sftp_client = paramiko.SFTPClient.from_transport(self._transport)
            except (paramiko.SSHException, EOFError, OSError) as err:
                raise SSHConnectError(f"cannot start SFTP on {self.label}: {err}") from None
            self._sftp_client.get_channel().settimeout(DEAD_LINK_S * 4)
        return self._sftp_client

    # -- commands --------------------------------------------------------------------------

    def _exec(self, command: str, stdin: bytes | Callable[[paramiko.Channel], None] | None,
              timeout: float | None, shown: str):
        """Run ``command``; ``stdin`` is bytes, or a function that streams into the channel."""
        chan = self._session_channel()
        out, err = bytearray(), bytearray()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            chan.exec_command(command)
            if callable(stdin):
                stdin(chan)
            elif stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.closed or (chan.exit_status_ready() and chan.eof_received):
                    # output may trail the exit status; after EOF the buffers hold it all
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    break
                if end is not None and time.monotonic() > end:
                    tail = err.decode("utf-8", "replace").strip()[-200:]
                    raise WaitTimeout(f"remote command `{shown}` on {self.label}", timeout, tail or None)
                select.select([chan], [], [], 0.5)
                signals.check()  # between packets: a signal never cuts one in half
            status = chan.recv_exit_status()
        except signals.Stop:
            self._let_end(chan)
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHConnectError(f"connection to {self.label} lost while running `{shown}`: {exc}") from None
        finally:
            chan.close()
        if status == -1 and not self._alive():
            raise SSHConnectError(f"connection to {self.label} lost while running `{shown}`")
        return status, bytes(out), bytes(err)

    def _let_end(self, chan: paramiko.Channel) -> None:
        """A signal stopped a command mid-way: close its input and wait until it has ended on
        the machine, so that what the caller does next (clean up, fetch, release) never races
        a command still writing there (a half-done ``tar -x`` still creating files, say).

        Closing stdin ends an upload's ``tar`` (a truncated archive) at once; a command that
        ignores its input runs on. The wait is bounded: a further signal, ``STOPPED_WAIT_S``
        seconds or a dead link ends it, and the caller goes on as before. Never raises."""
        end = time.monotonic() + STOPPED_WAIT_S
        seen = signals.received()
        try:
            chan.shutdown_write()
            while not (chan.closed or (chan.exit_status_ready() and chan.eof_received)):
                if time.monotonic() > end or signals.received() != seen or not self._alive():
                    return
                while chan.recv_ready():  # drain: a full window would stall the command
                    chan.recv(65536)
                while chan.recv_stderr_ready():
                    chan.recv_stderr(65536)
                select.select([chan], [], [], 0.2)
        except (paramiko.SSHException, EOFError, OSError):
            return

    def run(self, cmd: str, timeout: float | None = None, check: bool = True) -> tuple[int, str, str]:
        """Run a shell command; returns (exit_status, stdout, stderr).

        With check, a non-zero status raises RemoteCommandFailed carrying the stderr tail.
        """
        status, out, err = self._exec(cmd, None, timeout, cmd)
        stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if check and status != 0:
            raise RemoteCommandFailed(cmd, status, stderr[-2000:])
        return status, stdout, stderr

    # -- files -----------------------------------------------------------------------------

    def _file_error(self, what: str, path: str, err: OSError) -> RemoteError:
        if not self._alive():
            return SSHConnectError(f"connection to {self.label} lost during {what} {path}")
        return RemoteError(f"{what} {path} on {self.label} failed: {err.strerror or err}")

    def put_dir(self, local_dir: str | os.PathLike, remote_dir: str, ignore: Iterable[str] = ()) -> list[str]:
        """Upload a directory tree, skipping gitignore-style ``ignore`` patterns and those in
        ``local_dir/.gpujobignore``. Returns the relative paths uploaded.

        One tar stream into one remote ``tar -x``: a file per SFTP call costs several round
        trips each (open, write, close, chmod), minutes for thousands of files over a
        WAN. Streamed, never held in memory; symlinks are followed, as a copy would; modes kept."""
        files = select_files(local_dir, ignore)
        root = _rpath(remote_dir)
        q = shlex.quote
        cmd = f"mkdir -p {q(root)} && tar -xf - -C {q(root)} --no-same-owner"
        base = Path(local_dir)
        unreadable: list[str] = []

        def stream(chan: paramiko.Channel) -> None:
            # Large writes: the channel's per-call cost, not the link, bounds small ones.
            with tarfile.open(fileobj=_ChannelWriter(chan), mode="w|", bufsize=1 << 20, copybufsize=1 << 20,
                              format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    try:  # local trouble is told apart from a lost connection
                        f = open(base / rel, "rb")  # follows symlinks: the machine gets a copy
                        st = os.fstat(f.fileno())
                    except OSError as exc:
                        unreadable.append(f"{base / rel}: {exc.strerror or exc}")
                        return
                    with f:
                        # Built by hand: no local user or group names travel (nor their lookups).
                        info = tarfile.TarInfo(rel)
                        info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime
                        tar.addfile(info, f)

        status, _, err = self._exec(cmd, stream, None, f"unpack into {root}")
        if unreadable:
            raise RemoteError(f"upload stopped: cannot read {unreadable[0]}; fix its permissions or add it "
                              f"to payload.ignore")
        if status != 0:
            raise RemoteCommandFailed(f"unpack into {root}", status, err.decode("utf-8", "replace")[-2000:])
        return files

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write bytes to a remote file atomically, created with ``mode`` from the start
        (umask 077 first: secrets are never readable by others, not even briefly)."""
        remote = _rpath(remote_path)
        q = shlex.quote
        tmp = f"{remote}.gpujob-tmp"
        parent = str(PurePosixPath(remote).parent)
        cmd = (
            f"umask 077 && mkdir -p {q(parent)} && cat > {q(tmp)} && "
            f"chmod {mode:o} {q(tmp)} && mv -f {q(tmp)} {q(remote)}"
        )
        status, _, err = self._exec(cmd, data, 60, f"write {remote}")
        if status != 0:
            raise RemoteCommandFailed(f"write {remote}", status, err.decode("utf-8", "replace"))

    def read_file(self, path: str) -> bytes | None:
        """A remote file's bytes, or None when it does not exist."""
        try:
            with self._sftp().open(_rpath(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, EOFError) as err:
            raise SSHConnectError(f"connection to {self.label} lost reading {path}: {err}") from None
        except OSError as err:
            raise self._file_error("reading", path, err) from None

    def get_file(self, remote_path: str, local_path: str | os.PathLike) -> None:
        """Download one remote file to ``local_path`` (overwritten); raises RemoteError/SSHConnectError."""
        try:
            self._sftp().get(_rpath(remote_path), str(local_path))
        except (paramiko.SSHException, EOFError) as err:
            raise SSHConnectError(f"connection to {self.label} lost reading {remote_path}: {err}") from None
        except OSError as err:
            raise self._file_error("reading", remote_path, err) from None

    @staticmethod
    def _get_file(sftp: paramiko.SFTPClient, remote: str, local: Path, size: int) -> None:
        """Download one file, resuming: a complete local copy is kept, a shorter one continued."""
        have = local.stat().st_size if local.is_file() else -1
        if have == size:
            return
        if have <= 0 or have > size:
            sftp.get(remote, str(local))
            return
        with sftp.open(remote, "rb") as src, open(local, "ab") as dst:
            src.seek(have)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                signals.check()

    def get_dir(self, remote_dir: str, local_dir: str | os.PathLike,
                on_skip: Callable[[str], None] | None = None) -> list[Path]:
        """Download a remote tree into ``local_dir``; returns the local paths of its regular files.
        A missing remote dir gives [] (a job may write nothing).

        Fresh (``local_dir`` missing or empty): one remote ``tar c`` streamed over an exec channel,
        unpacked as it arrives with tarfile's ``data`` filter. Resumed (``local_dir`` holds
        something): the remote tree is listed over SFTP; files complete locally are skipped, shorter
        ones continued over SFTP from their length, and the missing ones come in one tar of just
        their names. Entries the filter refuses (absolute or ``..`` names, links pointing outside
        ``local_dir``, devices, FIFOs) are not written; each is told to ``on_skip`` as "name: why".
        Nothing in ``local_dir`` is overwritten: a local file or directory in the way raises
        RemoteError naming it. A dropped link raises SSHConnectError (calling again resumes)."""
        root = _rpath(remote_dir).rstrip("/") or "/"
        local = Path(local_dir)
        skip = on_skip or (lambda why: None)
        if os.path.lexists(local) and not local.is_dir():
            raise _in_the_way(local, local)
        try:
            if local.is_dir() and any(local.iterdir()):
                return self._resume_dir(root, local, skip)
            return self._get_tar(root, local, None, skip)
        except (paramiko.SSHException, EOFError, socket.timeout) as err:
            raise SSHConnectError(f"connection to {self.label} lost during download: {err}") from None
        except OSError as err:
            if not self._alive() or err.filename is None:  # no local file named: the remote side failed
                raise self._file_error("downloading", remote_dir, err) from None
            raise RemoteError(f"cannot write {err.filename}: {err.strerror or err}",
                              hint="free space or fix permissions there, then retry the fetch") from None

    def _resume_dir(self, root: str, local: Path, skip: Callable[[str], None]) -> list[Path]:
        sftp = self._sftp()
        got: list[Path] = []
        missing: list[str] = []

        def walk(rel: str) -> None:
            for entry in sftp.listdir_attr(f"{root}/{rel}" if rel else root):
                name = f"{rel}/{entry.filename}" if rel else entry.filename
                target, mode = local / name, entry.st_mode or 0
                if stat.S_ISDIR(mode):
                    if not target.is_dir() or target.is_symlink():
                        if os.path.lexists(target):
                            raise _in_the_way(local, target)
                        target.mkdir(parents=True)
                    walk(name)
                elif stat.S_ISREG(mode) and target.is_file() and not target.is_symlink():
                    signals.check()
                    self._get_file(sftp, f"{root}/{name}", target, entry.st_size or 0)  # kept or continued
                    got.append(target)
                elif os.path.lexists(target):
                    if stat.S_ISREG(mode):  # a directory, link or other thing where a file goes
                        raise _in_the_way(local, target)
                else:  # missing here (or a link / special file: the tar filter decides)
                    missing.append(name)

        try:
            walk("")
        except FileNotFoundError:
            if not got and not missing:
                return []
            raise
        if missing:
            got += self._get_tar(root, local, missing, skip)
        return got

    def _get_tar(self, root: str, local: Path, names: list[str] | None, skip: Callable[[str], None]) -> list[Path]:
        """``tar c`` of root (or of just ``names``, relative to it) unpacked into local as it streams."""
        q = shlex.quote
        if names is None:
            cmd, stdin = f"cd {q(root)} 2>/dev/null || exit 3; exec tar -cf - .", b""
        else:
            cmd = f"cd {q(root)} && exec tar -cf - --null --no-recursion -T -"
            stdin = b"".join(n.encode() + b"\0" for n in names)
        got: list[Path] = []
        chan = self._session_channel()
        try:
            chan.exec_command(cmd)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            chan.settimeout(1.0)
            reader = _ChannelReader(chan, self._alive, DEAD_LINK_S * 4)  # as SFTP's channel timeout
            try:
                with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20, copybufsize=1 << 20) as tar:
                    for member in tar:
                        got += _extract(tar, member, local, skip)
            except tarfile.ReadError as err:
                if reader.total:  # a stream cut short: not an empty or missing directory
                    raise EOFError(f"the tar stream broke off: {err}") from None
            reader.drain()
            end = time.monotonic() + STATUS_WAIT_S
            while not chan.exit_status_ready() and time.monotonic() < end and self._alive():
                chan.status_event.wait(0.1)
            status = chan.recv_exit_status() if chan.exit_status_ready() else -1
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        finally:
            chan.close()
        if status == 3 and names is None and not got:
            return []  # no such directory: the job wrote nothing there
        if status != 0:
            if status == -1:
                raise SSHConnectError(f"connection to {self.label} lost during download of {root}")
            raise RemoteCommandFailed(f"tar of {root}", status, err.decode("utf-8", "replace")[-2000:])
        return got

    # -- the detached job ------------------------------------------------------------------

    def start_detached(
        self,
        command: str,
        workdir: str,
        log_path: str,
        exit_path: str,
        env: dict[str, str] | None = None,
        started_file: str | None = None,
    ) -> int:
        """Start ``command`` in its own session so a dropped connection kills nothing.

        stdout+stderr go to log_path; the exit status appears in exit_path atomically (tmp
        then rename) once the command ends, also after kill_job's TERM. Env values travel in
        a 0600 file that the job sources and deletes, never on a command line, so they reach
        neither `ps` nor any error message. Returns the pid, which is also the process group.
        ``started_file`` (when its directory exists) gets "PGID ABSOLUTE_EXIT_PATH" from the same
        remote shell that starts the job, so the machine's guard learns of it even if we die now.
        """
        env = env or {}
        bad = [k for k in env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise RemoteError(f"invalid environment variable name(s): {', '.join(map(repr, bad))}")
        q = shlex.quote
        log, ex, wd = _rpath(log_path), _rpath(exit_path), _rpath(workdir)
        lines = ["trap : TERM INT"]  # the wrapper outlives a TERM to write the exit file
        env_path = f"{ex}.env"
        if env:
            self.put_bytes("".join(f"export {k}={q(str(v))}\n" for k, v in env.items()).encode(), env_path)
            lines += [f". {q(env_path)}; rm -f {q(env_path)}"]
        # the command runs in its own bash so an `exit` inside it cannot skip the exit file
        lines += [
            f"cd {q(wd)} && bash -c {q(command)}",
            f"echo $? > {q(ex + '.tmp')} && mv -f {q(ex + '.tmp')} {q(ex)}",
        ]
        wrapper = "\n".join(lines)
        dirs = " ".join(q(d) for d in {str(PurePosixPath(log).parent), str(PurePosixPath(ex).parent)})
        give_up = f"rm -f {q(env_path)}; exit 2"  # a job that never starts leaves no secrets
        # Separate lines: an `a && b &` list would background a subshell and $! would be its pid.
        launch = (
            f"test -d {q(wd)} || {{ echo no such directory: {q(wd)} >&2; {give_up}; }}\n"
            f"mkdir -p {dirs} && rm -f {q(ex)} {q(ex + '.tmp')} && : > {q(log)} || {{ {give_up}; }}\n"
            f"setsid nohup bash -c {q(wrapper)} > {q(log)} 2>&1 < /dev/null &\n"
            "pid=$!\n"
            + (_record_start(started_file, ex) if started_file else "")
            + "echo $pid"
        )
        status, out, err = self._exec(launch, None, 60, f"start job in {wd}")
        if status != 0:
            raise RemoteCommandFailed(f"start job in {wd}", status, err.decode("utf-8", "replace"))
        try:
            return int(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteError(f"starting the job on {self.label} printed no pid") from None

    @staticmethod
    def _group_alive_sh(pgid: int) -> str:
        """Shell test: does the group hold a live (non-zombie) process? Zombies count as
        gone, since an init that does not reap would keep them forever."""
        g = int(pgid)
        return (
            "{ if command -v ps >/dev/null 2>&1; then "
            f"ps -e -o pgid= -o stat= | awk '$1 == {g} && $2 !~ /^Z/ {{f = 1}} END {{exit !f}}'; "
            f"else kill -0 -- -{g} 2>/dev/null; fi; }}"
        )

    def kill_job(self, pid_or_pgid: int, signal: str = "TERM") -> bool:
        """Signal the job's process group; False when it is already gone."""
        sig = str(signal).upper().removeprefix("SIG")
        if not _SIGNAL.fullmatch(sig):
            raise RemoteError(f"invalid signal name {signal!r}")
        g = int(pid_or_pgid)
        cmd = f"{self._group_alive_sh(g)} && kill -{sig} -- -{g}"
        return self.run(cmd, timeout=30, check=False)[0] == 0

    def is_running(self, pid_or_pgid: int) -> bool:
        return self.run(self._group_alive_sh(pid_or_pgid), timeout=30, check=False)[0] == 0

    def _follow(self, cur: _Cursor, log: str, ex: str, poll_s: float, pid: int | None) -> int:
        """One long-lived `tail -f` channel: data is pushed as the job writes it. A watcher
        loop in the same script ends it once the exit file exists (or the job is gone).
        Returns the script's status: 0 done, 3 tail died or absent, -1 link dropped."""
        q = shlex.quote
        alive = f" && {self._group_alive_sh(pid)}" if pid is not None else ""
        script = (
            f"[ -e {q(ex)} ] && exit 0\n"
            f"tail -c +{cur.offset + 1} -f {q(log)} & t=$!\n"
            f"while [ ! -e {q(ex)} ] && kill -0 $t 2>/dev/null{alive}; do sleep {poll_s:g}; done\n"
            "kill $t 2>/dev/null; wait $t 2>/dev/null\n"
            f"[ -e {q(ex)} ] && exit 0\n"
            f"{self._group_alive_sh(pid) + ' || exit 0' if pid is not None else ':'}\n"
            "exit 3"
        )
        chan = self._session_channel()
        try:
            chan.exec_command(f"bash -c {q(script)}")  # bash reaps a dead tail; dash may not
            chan.shutdown_write()
            chan.settimeout(1.0)
            while True:
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    if not self._alive():
                        raise EOFError("SSH transport closed")
                    signals.check()
                    continue
                if not data:
                    break
                cur.feed(data)
                signals.check()
            end = time.monotonic() + STATUS_WAIT_S
            while not chan.exit_status_ready() and time.monotonic() < end and self._alive():
                chan.status_event.wait(0.1)
            return chan.recv_exit_status() if chan.exit_status_ready() else -1
        finally:
            chan.close()

    def _read_log(self, cur: _Cursor, log: str) -> None:
        try:
            with self._sftp().open(log, "rb") as f:
                f.seek(cur.offset)
                while chunk := f.read(1 << 20):
                    cur.feed(chunk)
        except FileNotFoundError:
            return
        except (paramiko.SSHException, EOFError):
            raise
        except OSError as err:
            if not self._alive():
                raise
            raise self._file_error("reading", log, err) from None

    def _drain(self, cur: _Cursor, log: str, ex: str, pid: int | None) -> int | None:
        """Read the log from the cursor to its end; the job's status if it has ended.

        The exit file is read first: once it exists the job wrote all it will, so the log
        read after it is complete."""
        raw = self.read_file(ex)
        self._read_log(cur, log)
        if raw is None and pid is not None and not self.is_running(pid):
            raw = self.read_file(ex)  # it may have appeared between the two checks
            self._read_log(cur, log)
            if raw is None:
                raise RemoteError(
                    f"job process group {pid} on {self.label} ended without writing {ex}",
                    hint="it was killed with SIGKILL or the machine restarted",
                )
        if raw is None:
            return None
        try:
            return int(raw.decode("ascii", "replace").strip())
        except ValueError:
            raise RemoteError(f"unreadable exit status in {ex} on {self.label}: {raw[:20]!r}") from None

    def stream(
        self,
        log_path: str,
        exit_path: str,
        on_text: Callable[[str], None],
        offset: int = 0,
        poll_s: float = 0.5,
        reconnect_deadline_s: float = 120,
        pid: int | None = None,
    ) -> tuple[int, int]:
        """Follow the job's log from byte ``offset`` until its exit file exists and the log is
        drained; returns (exit_status, final_offset).

        on_text gets decoded text as it arrives. A dropped link is reopened (same pinned key)
        and the log resumes at the byte offset reached, so nothing is lost or repeated. Given
        ``pid``, a job that vanished without an exit file raises RemoteError instead of
        waiting forever.
        """
        log, ex = _rpath(log_path), _rpath(exit_path)
        cur = _Cursor(offset, on_text)
        follow = True
        while True:
            try:
                if follow and self._follow(cur, log, ex, poll_s, pid) not in (0, -1):
                    follow = False  # no usable tail -f there: poll by SFTP instead
                status = self._drain(cur, log, ex, pid)
                if status is not None:
                    cur.finish()
                    return status, cur.offset
                if not follow:
                    signals.sleep(poll_s)
            except (paramiko.SSHException, EOFError, OSError, SSHConnectError) as err:
                if self._alive():
                    raise  # not a link problem (e.g. raised by on_text): not ours to retry
                self._reconnect(reconnect_deadline_s, err)


def _record_start(started_file: str, exit_path: str) -> str:
    """Shell lines: write "$pid ABSOLUTE_EXIT_PATH" to started_file when its directory exists."""
    q = shlex.quote
    f, parent = _rpath(started_file), str(PurePosixPath(_rpath(started_file)).parent)
    return (f"e={q(exit_path)}; case $e in /*) ;; *) e=$HOME/$e ;; esac\n"
            f"[ ! -d {q(parent)} ] || {{ printf '%s %s\\n' \"$pid\" \"$e\" > {q(f + '.tmp')} && "
            f"mv -f {q(f + '.tmp')} {q(f)}; }} || true\n")


def _in_the_way(local: Path, target: Path) -> RemoteError:
    """The error for a local path that blocks a download: the first non-directory on the way."""
    chain = [local] + [p for p in reversed(target.parents) if local in p.parents] + [target]
    blocker = next((p for p in chain if os.path.lexists(p) and (p.is_symlink() or not p.is_dir())), target)
    kind = "a link" if blocker.is_symlink() else "a directory" if blocker.is_dir() else "a file"
    return RemoteError(f"cannot download {target}: {blocker} is already there ({kind})",
                       hint=f"move {blocker} aside (nothing is overwritten), then retry the fetch")


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, local: Path, skip: Callable[[str], None]) -> list[Path]:
    """Unpack one streamed member into local through the "data" filter; [path] for a regular file."""
    try:
        safe = tarfile.data_filter(member, str(local))
    except tarfile.FilterError as err:
        skip(f"{member.name}: {err}")
        return []
    target = local / safe.name
    if safe.isdir() and target.is_dir() and not target.is_symlink():
        return []  # "." or a directory an earlier fetch made
    if os.path.lexists(target):
        raise _in_the_way(local, target)
    try:
        tar.extract(safe, str(local), set_attrs=not safe.isdir(), filter="data")
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _in_the_way(local, target) from None
    except tarfile.ReadError as err:  # the stream ended inside the member: the link broke
        raise EOFError(f"the tar stream broke off in {member.name}: {err}") from None
    except tarfile.TarError as err:  # e.g. a hard link whose target was refused
        skip(f"{member.name}: {err}")
        return []
    signals.check()  # between members: a signal never cuts a header in half
    return [target] if safe.isreg() else []


class _ChannelReader:
    """The file-like ``read`` that tarfile's stream mode needs, from an SSH channel (timeout set);
    a signal is checked between reads; a dead link, or ``stall_s`` seconds without a byte (a peer
    that stopped answering while its kernel still acks), ends the wait with EOFError."""

    def __init__(self, chan: paramiko.Channel, alive: Callable[[], bool], stall_s: float = 60.0):
        self._chan, self._alive, self._stall_s = chan, alive, stall_s
        self._last = time.monotonic()
        self.total = 0

    def read(self, size: int = 1 << 20) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            try:
                data = self._chan.recv(min(size - len(buf), 1 << 20))
            except socket.timeout:
                if not self._alive():
                    raise EOFError("SSH transport closed") from None
                if time.monotonic() - self._last > self._stall_s:
                    raise EOFError(f"no data for {self._stall_s:g} s") from None
                signals.check()
                continue
            self._last = time.monotonic()
            if not data:
                break
            buf += data
        self.total += len(buf)
        signals.check()  # between reads (at most 1 MiB): a big file never holds off a second Ctrl-C
        return bytes(buf)

    def drain(self) -> None:
        """Read what follows the archive's end marker (tar pads its last record) until EOF."""
        while self.read(1 << 16):
            pass


class _ChannelWriter:
    """The file-like ``write`` that tarfile's stream mode needs, onto an SSH channel."""

    def __init__(self, chan: paramiko.Channel):
        self._chan = chan

    def write(self, data: bytes) -> int:
        signals.check()  # between writes, never inside one
        self._chan.sendall(data)
        return len(data)
