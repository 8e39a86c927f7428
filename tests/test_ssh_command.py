"""`gpujob ssh RUN [-- CMD]`: the system ssh with the run's key and pinned host key (loopback sshd)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from launcher import runshell
from launcher.cli import app
from launcher.errors import UsageError
from launcher.keys import generate_ed25519, host_key_line
from launcher.store import Store

cli = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return tmp_path


def _run(store: Store, run_id: str, provider: str, machine: dict | None, state: str = "running") -> None:
    store.create_run(run_id, "t", provider, spec_path=None, spec_text=None, spec={}, provider_config={})
    store.update_run(run_id, state=state, **({"machine": machine} if machine else {}))


def _machine(sshd, client_key, host_keys, workdir=None) -> dict:
    return {"provider": "aws", "id": "i-1", "host": sshd.host, "port": sshd.port, "user": sshd.user,
            "key_path": str(client_key.path), "host_keys": host_keys, "extra": {},
            **({"workdir": str(workdir)} if workdir else {})}


@pytest.mark.sshd
def test_ssh_runs_a_command_with_the_pinned_key(sshd, client_key, tmp_path, capfd):
    store = Store()
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.log").write_text("step 1\n")
    _run(store, "r-ssh1", "aws", _machine(sshd, client_key, [sshd.host_public], work))
    res = cli.invoke(app, ["ssh", "r-ssh1", "--", "cat", "job.log", "&&", "echo", "remote-ok"])
    out = capfd.readouterr().out
    assert res.exit_code == 0, res.output
    assert "step 1" in out and "remote-ok" in out  # ran in the run's workdir on the machine
    res = cli.invoke(app, ["ssh", "r-ssh1", "--", "exit", "7"])
    assert res.exit_code == 7  # the remote command's status is ours
    import glob
    import tempfile

    assert not glob.glob(os.path.join(tempfile.gettempdir(), "gpujob-ssh-r-ssh1-*"))  # temporary config removed


@pytest.mark.sshd
def test_ssh_refuses_a_host_key_that_is_not_the_pinned_one(sshd, client_key, capfd):
    store = Store()
    other = host_key_line(generate_ed25519("someone-else")[0])
    _run(store, "r-ssh2", "aws", _machine(sshd, client_key, [other]))
    res = cli.invoke(app, ["ssh", "r-ssh2", "--", "echo", "should-not-run"])
    captured = capfd.readouterr()
    assert res.exit_code == 255 and "should-not-run" not in captured.out
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in captured.err or "Host key verification failed" in captured.err


def test_generated_config_pins_and_never_disables_checking(tmp_path):
    store = Store()
    line = host_key_line(generate_ed25519("h")[0])
    machine = {"provider": "ssh", "id": "u@10.0.0.5:2200", "host": "10.0.0.5", "port": 2200, "user": "ubuntu",
               "key_path": "", "host_keys": [], "workdir": "/home/u/gpujob/r-cfg",
               "extra": {"known_hosts": str(tmp_path / "kh"),
                         "jumps": [{"host": "10.0.0.1", "port": 22, "user": "jump", "key_path": "/k/jump"}]}}
    (tmp_path / "kh").write_text(f"[10.0.0.5]:2200 {line}\n10.0.0.1 {line}\n")
    _run(store, "r-cfg", "ssh", machine, state="succeeded")
    inv = runshell.prepare("r-cfg", ["nvidia-smi"], store=store)
    try:
        config = open(os.path.join(inv.tmpdir, "config")).read()
        known = open(os.path.join(inv.tmpdir, "known_hosts")).read()
        assert "StrictHostKeyChecking yes" in config and "StrictHostKeyChecking no" not in config
        assert "ProxyJump gpujob-jump0" in config and "IdentityFile /k/jump" in config
        assert "IdentityFile" not in config.split("Host gpujob-r-cfg")[1]  # agent keys, as the run used
        assert known.splitlines() == [f"[10.0.0.5]:2200 {line}", f"10.0.0.1 {line}"]
        assert oct(os.stat(inv.tmpdir).st_mode & 0o777) == "0o700"
        assert inv.argv[-2:] == ["gpujob-r-cfg", "cd /home/u/gpujob/r-cfg 2>/dev/null; nvidia-smi"]
        assert inv.notes and "gpujob down r-cfg" in inv.notes[0]
    finally:
        inv.cleanup()
    assert not os.path.exists(inv.tmpdir)


@pytest.mark.parametrize("provider, machine, state, text", [
    ("local", {"host": None}, "running", "ran on this machine"),
    ("aws", None, "provisioning", "has no machine yet"),
    ("aws", {"host": "203.0.113.9", "port": 22, "user": "ubuntu", "key_path": "/k", "host_keys": ["x y"]},
     "succeeded", "its machine was released"),
])
def test_unreachable_runs_are_one_clear_line(provider, machine, state, text):
    store = Store()
    _run(store, "r-bad", provider, machine, state=state)
    res = cli.invoke(app, ["ssh", "r-bad"])
    assert res.exit_code == 2 and text in res.output and "Traceback" not in res.output
    res = cli.invoke(app, ["ssh", "r-nope"])
    assert res.exit_code != 0 and "no run with id" in res.output


def test_kept_cloud_run_is_reachable_until_released(tmp_path):
    store = Store()
    line = host_key_line(generate_ed25519("h")[0])
    _run(store, "r-kept", "aws", {"host": "203.0.113.9", "port": 22, "user": "ubuntu", "key_path": "/k",
                                  "host_keys": [line], "extra": {}}, state="succeeded")
    handle = store.intent("r-kept", "aws", "instance", "gpujob-r-kept", "us-east-1")
    store.created(handle, "i-123")
    inv = runshell.prepare("r-kept", None, store=store)
    inv.cleanup()
    assert "-t" in inv.argv and "gpujob down r-kept" in inv.notes[0]
    store.deleted("r-kept", "i-123")
    with pytest.raises(UsageError, match="released"):
        runshell.prepare("r-kept", None, store=store)
