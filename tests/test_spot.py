"""Spot interruption (issue 14, failure 7): a reclaimed machine is reported as such, at once, with its
own state and exit code, not as a timeout of the SSH reconnect."""

from __future__ import annotations

import sys

import pytest

from launcher.errors import MachineGone
from launcher.localhost import group_alive
from launcher.providers.ssh import SshProvider
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store

SLOW_PY = "import time\nfor i in range(400):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"


class Reclaimed(SshProvider):
    """The ssh provider, whose machine the cloud reclaims at the third look."""

    looks = 0

    def poll(self, machine):
        Reclaimed.looks += 1
        return "spot-interrupted" if Reclaimed.looks >= 3 else None


@pytest.mark.sshd
def test_spot_reclaim_is_reported_as_such_not_as_a_timeout(tmp_path, monkeypatch, sshd, client_key):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_PY)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    config = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity": str(client_key.path),
              "known_hosts": str(known)}
    Reclaimed.looks = 0
    events: list = []
    runner = Runner(store=Store(), provider_factory=lambda name, **cfg: Reclaimed(**cfg),
                    on_event=lambda kind, **f: events.append((kind, f)))
    spec = parse_spec(f"name: spot\npayload: {{entrypoint: slow.py, python: {sys.executable}}}\n")
    with pytest.raises(MachineGone) as info:
        runner.run(spec, RunOptions(provider="ssh", provider_config=config, baseline=False, poll_every_s=0.2))
    err = info.value
    assert err.exit_code == 10 and "spot instance was reclaimed" in str(err) and "timed out" not in str(err)
    (rec,) = runner.store.list_runs()
    assert rec.state == "spot-interrupted" and "timed out" not in rec.reason
    assert ("warning", {"run_id": rec.id, "message": "machine spot-interrupted"}) in events
    # here the "reclaimed" machine is still this one: the job is not left running by the client
    group_alive(rec.machine["pid"]) and __import__("os").killpg(rec.machine["pid"], 9)
