"""`gpujob run --provider ssh` against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from launcher.localhost import group_alive
from tests.runs import SLOW_JOB, sigint_after_first_log
from launcher.errors import Interrupted, JobFailed
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parent.parent
TINY = f"""
name: tiny-ssh
workload: {{model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits,
           samples_per_epoch: 512, epochs: 1, batch_size: 64, precision: fp32}}
payload: {{python: {sys.executable}}}
limits: {{max_duration: 5m}}
"""


@pytest.fixture
def ssh_runner(tmp_path, monkeypatch, sshd, client_key):
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    config = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity": str(client_key.path),
              "known_hosts": str(known)}
    events: list[tuple[str, dict]] = []
    runner = Runner(store=Store(), on_event=lambda kind, **f: events.append((kind, f)))
    runner.events = events
    return runner, RunOptions(provider="ssh", provider_config=config, baseline=False)


def test_ssh_run_trains_streams_and_fetches(ssh_runner):
    runner, opts = ssh_runner
    result = runner.run(parse_spec(TINY), opts)
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    out = Path(rec.artifacts_dir)
    assert (out / "outputs" / "metrics.json").is_file() and (out / "outputs" / "model.pt").is_file()
    log = runner.store.log_text(rec.id)
    assert log.count('"event": "end"') + log.count('"event":"end"') == 1
    assert result.report["actual"]["samples"] >= 512
    # issue 14, failure 10: the results are home, so ~/gpujob/RUN is gone from the user's machine
    assert not Path(rec.machine["workdir"]).exists()


def test_ssh_keep_keeps_the_remote_work_dir(ssh_runner):
    runner, opts = ssh_runner
    opts.keep = True
    rec = runner.run(parse_spec(TINY), opts).run
    assert rec.state == "succeeded" and Path(rec.machine["workdir"], "outputs", "model.pt").is_file()


def test_ssh_job_failure_still_fetches_logs_and_artifacts(ssh_runner, tmp_path):
    runner, opts = ssh_runner
    (tmp_path / "fail.py").write_text(
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/partial.txt','w').write('x')\n"
        "print('about to fail', flush=True)\nraise SystemExit(3)\n")
    spec = parse_spec(f"name: failing\npayload: {{entrypoint: fail.py, python: {sys.executable}}}\n")
    with pytest.raises(JobFailed) as info:
        runner.run(spec, opts)
    assert info.value.exit_status == 3
    rec = runner.store.list_runs()[0]
    assert (Path(rec.artifacts_dir) / "outputs" / "partial.txt").is_file()
    assert "about to fail" in (Path(rec.artifacts_dir) / "job.log").read_text()


def test_ssh_sigint_stops_the_remote_job(ssh_runner, tmp_path):
    runner, opts = ssh_runner
    (tmp_path / "slow.py").write_text(SLOW_JOB)
    spec = parse_spec(f"name: slow\npayload: {{entrypoint: slow.py, python: {sys.executable}}}\n")

    sigint_after_first_log(runner.events)
    with pytest.raises(Interrupted):
        runner.run(spec, opts)
    rec = runner.store.list_runs()[0]
    assert rec.state == "interrupted"
    assert not group_alive(rec.machine["pid"])  # same host: the remote job was stopped, not left running


def test_ssh_detach_then_logs_follow(ssh_runner):
    runner, opts = ssh_runner
    opts.detach = True
    rec = runner.run(parse_spec(TINY), opts).run
    assert rec.state == "running"
    result = Runner(store=runner.store, on_event=lambda *a, **k: None).attach(rec.id, follow=True)
    assert result.run.state == "succeeded"
    log = runner.store.log_text(rec.id)
    assert log.count('"event": "start"') + log.count('"event":"start"') == 1


def test_kept_run_says_how_to_reach_and_release_and_gpujob_ssh_reaches_it(ssh_runner, tmp_path, capfd):
    from dataclasses import replace

    from typer.testing import CliRunner

    from launcher.cli import app

    runner, opts = ssh_runner
    (tmp_path / "job.py").write_text("print('kept job', flush=True)\n")
    spec = parse_spec(f"name: kept\npayload: {{entrypoint: job.py, python: {sys.executable}}}\n")
    rec = runner.run(spec, replace(opts, keep=True)).run
    kept = dict(runner.events)["kept"]
    assert kept["reach"] == f"gpujob ssh {rec.id}" and kept["release"] == f"gpujob down {rec.id}"
    res = CliRunner().invoke(app, ["ssh", rec.id, "--", "cat", "job.log"])  # the run's workdir, kept
    captured = capfd.readouterr()
    assert res.exit_code == 0, res.output + captured.err
    assert "kept job" in captured.out and f"gpujob down {rec.id}" in captured.err + res.output
