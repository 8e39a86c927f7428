"""The ssh provider: an existing machine, pinned through known_hosts."""

from __future__ import annotations

import pytest

from launcher.errors import HostKeyError, ProviderError
from launcher.keys import fingerprint
from launcher.providers.ssh import SshProvider
from launcher.remote import Session


def test_launch_needs_an_existing_identity(tmp_path):
    p = SshProvider("example.org", "ubuntu", identity=tmp_path / "missing")
    with pytest.raises(ProviderError, match="does not exist"):
        p.launch(None, None, 10)
    assert p.plan(None, None)["identity_exists"] is False


def test_identity_defaults_to_ed25519_then_rsa(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    p = SshProvider("example.org", "ubuntu")
    with pytest.raises(ProviderError, match="id_ed25519 nor"):
        p.resolve_identity()
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("x")
    assert p.resolve_identity().name == "id_rsa"
    (tmp_path / ".ssh" / "id_ed25519").write_text("x")
    assert p.resolve_identity().name == "id_ed25519"


def test_plan_reports_host_key_status(tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    p = SshProvider("10.0.0.5", "ubuntu", port=2200, known_hosts=kh)
    assert p.plan(None, None)["host_key"].startswith("unknown")
    assert "ssh-keyscan -p 2200 10.0.0.5" in p.plan(None, None)["host_key"]
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZsEN1xhkbU2Zb3dpBxDOmpqyPtmRJeQp4HfmSNT1cr"
    kh.write_text(f"[10.0.0.5]:2200 {line}\n")
    plan = p.plan(None, None)
    assert plan["host_key"] == f"known ({fingerprint(line)})"
    assert plan["machine"] == "ubuntu@10.0.0.5:2200" and plan["creates"] == []
    assert p.poll(None) is None and p.teardown("r1", [], None) == [] and p.find(None) == []


@pytest.mark.sshd
def test_machine_connects_with_known_hosts_pin(sshd, client_key, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    p = SshProvider(sshd.host, sshd.user, port=sshd.port, identity=client_key.path,
                    known_hosts=kh, price_per_hour=0.5)
    machine = p.launch(None, None, 10)
    assert machine.id == f"{sshd.user}@{sshd.host}:{sshd.port}" and machine.host_keys == []
    assert machine.price_per_hour == 0.5 and machine.extra["known_hosts"] == str(kh)
    with pytest.raises(HostKeyError, match="ssh-keyscan"):
        Session.from_machine(machine).connect()
    kh.write_text(sshd.known_hosts_line() + "\n")
    with Session.from_machine(machine) as s:
        assert s.run("echo hi")[1] == "hi\n"
