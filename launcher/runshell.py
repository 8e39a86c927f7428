"""`gpujob ssh RUN [-- CMD]`: the system ``ssh`` into a run's machine, with that run's key and
its pinned host key, and nothing from ~/.ssh/config or ~/.ssh/known_hosts leaking in.

A temporary directory (0700, removed afterwards) holds a known_hosts with exactly the pinned
keys (cloud runs: the host key the client generated and installed; ssh provider: the lines
of the known_hosts file the run used) and an ssh config with ``StrictHostKeyChecking yes``:
an unknown or changed key is refused by ssh itself (never ``StrictHostKeyChecking=no``).
ProxyJump hops of an ssh-provider run are written as their own Host blocks, pinned the same way.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import GpujobError, UsageError

ALIAS_PREFIX = "gpujob-"


@dataclass
class SshInvocation:
    """What to run: ``argv`` (the system ssh; commands start in the run's workdir), with its
    config and known_hosts in ``tmpdir`` (delete with ``cleanup()``)."""
    run_id: str
    argv: list[str]
    tmpdir: str
    target: str  # user@host:port, for the user
    workdir: str | None = None
    notes: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _known_lines(machine: dict, host: str, port: int) -> list[str]:
    """known_hosts lines pinning ``host:port``: the run's installed keys, else the lines of
    the run's known_hosts file that match."""
    name = host if port == 22 else f"[{host}]:{port}"
    pinned = [k.strip() for k in machine.get("host_keys") or [] if k.strip()]
    if not pinned:
        from launcher.remote import DEFAULT_KNOWN_HOSTS, known_host_keys

        pinned = known_host_keys((machine.get("extra") or {}).get("known_hosts") or DEFAULT_KNOWN_HOSTS, host, port)
    return [f"{name} {' '.join(k.split()[:2])}" for k in pinned]


def _block(alias: str, host: str, port: int, user: str | None, key: str, known: Path, jump: str | None) -> str:
    lines = [f"Host {alias}", f"  HostName {host}", f"  Port {port}"]
    if user:
        lines.append(f"  User {user}")
    if key:  # else: the ssh-agent's keys, as the run used
        lines += [f"  IdentityFile {key}", "  IdentitiesOnly yes"]
    lines += [f"  UserKnownHostsFile {known}", "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes",
              "  UpdateHostKeys no", "  CheckHostIP no", "  ForwardAgent no", "  LogLevel ERROR"]
    if jump:
        lines.append(f"  ProxyJump {jump}")
    return "\n".join(lines) + "\n"


def _reachable(rec, store) -> None:
    """A finished run is reachable only if its machine was kept (not released)."""
    if rec.provider == "local":
        raise UsageError(f"run {rec.id} ran on this machine; there is nothing to ssh into",
                         f"its results are in {rec.artifacts_dir or './gpujob-runs/' + rec.id}")
    if not rec.machine or not rec.machine.get("host"):
        raise UsageError(f"run {rec.id} has no machine yet (state {rec.state})",
                         f"wait for it to start: `gpujob logs {rec.id} --follow`")
    if rec.finished and rec.provider != "ssh" and not store.resources(rec.id, live_only=True):
        raise UsageError(f"run {rec.id} is {rec.state} and its machine was released",
                         "`gpujob run --keep` keeps a machine for ssh after the job")


def prepare(run_id: str, command: list[str] | None = None, store=None, ssh: str = "ssh") -> SshInvocation:
    """The ssh command line for a run's machine. Raises UsageError when the run has no
    reachable machine, GpujobError when ssh is missing or the host key is not pinned."""
    from launcher.store import Store

    store = store or Store()
    rec = store.get_run(run_id)
    _reachable(rec, store)
    if shutil.which(ssh) is None:
        raise GpujobError(f"no `{ssh}` command on PATH", "install the OpenSSH client")
    m = rec.machine
    host, port, user, key = m["host"], int(m.get("port") or 22), m.get("user"), m.get("key_path") or ""
    extra = m.get("extra") or {}
    tmp = tempfile.mkdtemp(prefix=f"gpujob-ssh-{rec.id}-")
    os.chmod(tmp, 0o700)
    try:
        known = Path(tmp) / "known_hosts"
        lines = _known_lines(m, host, port)
        blocks, jump_alias = [], None
        for i, hop in enumerate(extra.get("jumps") or []):
            alias = f"{ALIAS_PREFIX}jump{i}"
            lines += _known_lines({"extra": extra}, hop["host"], int(hop.get("port") or 22))
            blocks.append(_block(alias, hop["host"], int(hop.get("port") or 22), hop.get("user") or user,
                                 hop.get("key_path") or key, known, jump_alias))
            jump_alias = alias
        if not _known_lines(m, host, port):
            raise GpujobError(f"no pinned host key for {host}:{port}",
                              f"add it to {extra.get('known_hosts') or '~/.ssh/known_hosts'} after checking it "
                              f"(`ssh-keyscan -p {port} {host}`)")
        known.write_text("".join(line + "\n" for line in lines))
        alias = ALIAS_PREFIX + rec.id
        blocks.append(_block(alias, host, port, user, key, known, jump_alias))
        config = Path(tmp) / "config"
        config.write_text("".join(blocks))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    workdir = m.get("workdir")
    cd = f"cd {shlex.quote(workdir)} 2>/dev/null; " if workdir else ""
    if command:  # ssh joins the words with spaces, as plain `ssh host CMD...` does
        argv = [ssh, "-F", str(config), "--", alias, cd + command[0], *command[1:]]
    else:
        argv = [ssh, "-F", str(config), "-t", "--", alias, cd + 'exec "${SHELL:-/bin/sh}" -l']
    notes = [] if not rec.finished else [f"run {rec.id} is {rec.state}; its machine was kept: "
                                         f"`gpujob down {rec.id}` releases it"]
    return SshInvocation(rec.id, argv, tmp, f"{user + '@' if user else ''}{host}:{port}", workdir, notes)


def run(inv: SshInvocation) -> int:
    """Run the system ssh on this terminal (stdin/stdout/stderr inherited); its exit status."""
    try:
        return subprocess.call(inv.argv)
    finally:
        inv.cleanup()
