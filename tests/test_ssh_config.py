"""The ssh provider reads ~/.ssh/config (paramiko.SSHConfig): aliases, HostName, User, Port,
IdentityFile, ProxyJump; an ssh-agent key when no identity is given. Real sshd on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.errors import ProviderError, UsageError
from launcher.providers.ssh import SshProvider
from launcher.remote import Session
from launcher.sshconfig import resolve_host
from tests.sshd import Sshd


def test_resolve_alias_and_defaults(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host gpu-box gb\n  HostName 10.1.2.3\n  User ubuntu\n  Port 2222\n  IdentityFile ~/.ssh/gpu_key\n"
        "  ProxyJump bastion,ops@edge:2200\n"
        "Host bastion\n  HostName bastion.example.org\n  User jumper\n  IdentityFile /keys/bastion\n"
        "Host *\n  User fallback\n  Port 2022\n")
    t = resolve_host("gb", cfg)
    assert (t.hostname, t.user, t.port) == ("10.1.2.3", "ubuntu", 2222)  # first value wins, as in OpenSSH
    assert t.identities == (os.path.expanduser("~/.ssh/gpu_key"),) and t.config_path == str(cfg)
    assert [(h.host, h.port, h.user, h.identities) for h in t.jumps] == [
        ("bastion.example.org", 2022, "jumper", ("/keys/bastion",)), ("edge", 2200, "ops", ())]
    other = resolve_host("plain.example.org", cfg)  # only Host * applies
    assert (other.hostname, other.user, other.port, other.jumps) == ("plain.example.org", "fallback", 2022, ())


def test_missing_default_config_is_fine_but_named_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    t = resolve_host("box")
    assert (t.hostname, t.user, t.port, t.config_path) == ("box", None, None, None)
    with pytest.raises(UsageError, match="does not exist"):
        resolve_host("box", tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_text("Host box\n  Port many\n")
    with pytest.raises(UsageError, match="port 'many'"):
        resolve_host("box", bad)


def test_explicit_options_beat_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = tmp_path / "config"
    key = tmp_path / "cfg_key"
    key.write_text("x")
    cfg.write_text(f"Host box\n  HostName 10.9.9.9\n  User cfguser\n  Port 2200\n  IdentityFile {key}\n")
    p = SshProvider("box", ssh_config=cfg, known_hosts=tmp_path / "kh")
    assert (p.host, p.user, p.port, p.resolve_identity()) == ("10.9.9.9", "cfguser", 2200, key)
    p = SshProvider("box", "me", port=22, identity=tmp_path / "mine", ssh_config=cfg, known_hosts=tmp_path / "kh")
    assert (p.user, p.port) == ("me", 22)
    with pytest.raises(ProviderError, match="mine does not exist"):
        p.resolve_identity()
    plan = p.plan(None, None)
    assert plan["alias"] == "box" and plan["host"] == "10.9.9.9" and plan["ssh_config"] == str(cfg)


def _config(tmp_path, text):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(text)
    return cfg


@pytest.mark.sshd
def test_alias_from_config_connects(sshd, client_key, tmp_path):
    cfg = _config(tmp_path, f"Host trainer\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
                            f"  IdentityFile {client_key.path}\n")
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line() + "\n")
    machine = SshProvider("trainer", ssh_config=cfg, known_hosts=kh).launch(None, None, 10)
    assert (machine.host, machine.port, machine.key_path) == (sshd.host, sshd.port, str(client_key.path))
    with Session.from_machine(machine) as s:
        assert s.run("echo via-alias")[1] == "via-alias\n"


class _ForwardingSshd(Sshd):
    """A jump host: the same loopback sshd, with TCP forwarding allowed."""

    def _write_config(self, port):
        super()._write_config(port)
        self.config_path.write_text(self.config_path.read_text().replace("AllowTcpForwarding no",
                                                                         "AllowTcpForwarding yes"))


@pytest.mark.sshd
def test_proxyjump_through_a_pinned_jump_host(sshd, client_key, tmp_path):
    jump = _ForwardingSshd(tmp_path / "jump", authorized_keys=[client_key.public]).start()
    try:
        cfg = _config(tmp_path, f"Host bastion\n  HostName {jump.host}\n  Port {jump.port}\n  User {jump.user}\n"
                                f"Host inner\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
                                f"  IdentityFile {client_key.path}\n  ProxyJump bastion\n")
        kh = tmp_path / "known_hosts"
        kh.write_text(sshd.known_hosts_line() + "\n")  # the jump host's key is not known yet
        machine = SshProvider("inner", ssh_config=cfg, known_hosts=kh).launch(None, None, 10)
        assert machine.extra["jumps"] == [{"host": jump.host, "port": jump.port, "user": jump.user,
                                           "key_path": str(client_key.path)}]
        from launcher.errors import HostKeyError

        with pytest.raises(HostKeyError, match=f"{jump.port}.*not known"):
            Session.from_machine(machine).connect()  # the jump host is pinned too
        kh.write_text(sshd.known_hosts_line() + "\n" + jump.known_hosts_line() + "\n")
        with Session.from_machine(machine) as s:
            assert s.run("echo through-the-jump")[1] == "through-the-jump\n"
            s.wait_until_reachable(5)
        assert "direct-tcpip" in jump.log_text() or "Accepted publickey" in jump.log_text()
    finally:
        jump.stop()


@pytest.fixture
def agent(tmp_path, client_key, monkeypatch):
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(client_key.path)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.sshd
def test_agent_key_when_no_identity(sshd, agent, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* and no ~/.ssh/config
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line() + "\n")
    p = SshProvider(sshd.host, sshd.user, port=sshd.port, known_hosts=kh)
    assert p.resolve_identity() is None
    machine = p.launch(None, None, 10)
    assert machine.key_path == ""
    with Session.from_machine(machine) as s:
        assert s.run("echo agent")[1] == "agent\n"


def test_cli_dry_run_shows_the_resolved_host(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "k"
    key.write_text("x")
    cfg = _config(tmp_path, f"Host gpu-box\n  HostName 192.0.2.10\n  User ubuntu\n  Port 2222\n  IdentityFile {key}\n")
    spec = tmp_path / "job.yaml"
    spec.write_text("name: t\n")
    res = CliRunner().invoke(app, ["run", str(spec), "--provider", "ssh", "--host", "gpu-box", "--ssh-config",
                                   str(cfg), "--dry-run", "--json", "--force"])  # not refused over max_duration
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    text = json.dumps(plan)
    assert "192.0.2.10" in text and "ubuntu" in text and "2222" in text and str(key) in text
