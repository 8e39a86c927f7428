"""The machine's guard (templates/gpujob-guard.sh, launcher/guard.py): the real script, run here with
grace and idle times of about a second and a "power off" that writes a marker file.

Its rules: a running job is never touched; results fetched and no client attached -> off at once;
the job ended and nobody fetched within the grace -> off; no client attached for the idle timeout
while no job runs -> off. "Attached" is an established connection to the machine's sshd, here a
real OpenSSH sshd on loopback. The end-to-end cases run the guard exactly as the boot script
(EC2 user data, GCE startup script) embeds it, next to the real Runner under moto / the fake GCE.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher import guard
from launcher.keys import generate_ed25519, write_private_key
from launcher.spec import parse_spec
from tests.aws_fixtures import aws, aws_env  # noqa: F401 - fixtures
from tests.sshd import Sshd, free_port

WAIT_S = 60  # how long a test waits for a behaviour before it fails (never a speed assertion)


class Guard:
    """One guard process (its own process group), powering off by writing ``dir/off``."""

    def __init__(self, script: Path, gdir: Path, port: int, grace: float = 1, idle: float = 1):
        self.dir = gdir
        self.marker = gdir / "off"
        gdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["bash", str(script), "--dir", str(gdir), "--ssh-port", str(port), "--unfetched-grace", str(grace),
             "--idle-timeout", str(idle), "--poll", "0.1", "--poweroff", f"echo off >> {gdir / 'off'}"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_off(self) -> str:
        """Wait for the power-off; returns its reason."""
        end = time.monotonic() + WAIT_S
        while not self.marker.exists():
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < end, f"the guard never powered off:\n{self.log()}"
            time.sleep(0.05)
        self.proc.wait(WAIT_S)
        return (self.dir / "poweroff").read_text()

    def wait_log(self, text: str) -> None:
        end = time.monotonic() + WAIT_S
        while text not in self.log():
            assert time.monotonic() < end, f"{text!r} never logged:\n{self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.dir / "guard.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def guards(tmp_path):
    made: list[Guard] = []

    def start(gdir: Path | None = None, port: int | None = None, script: Path | None = None, **kw) -> Guard:
        path = script or tmp_path / "gpujob-guard.sh"
        if script is None:
            path.write_text(guard.script_text())
        made.append(Guard(path, gdir or tmp_path / "guard", port or free_port(), **kw))
        return made[-1]

    yield start
    for g in made:
        g.stop()


def start_job(gdir: Path, seconds: float) -> subprocess.Popen:
    """A detached job in its own process group, recorded for the guard as the runner's start does."""
    proc = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    (gdir / "job").write_text(f"{proc.pid} {gdir / 'job.exit'}\n")
    return proc


def test_no_client_and_no_job_powers_off_after_the_idle_timeout(guards):
    g = guards(idle=1)
    assert "no client attached for 1s and no job running" in g.wait_off()
    assert g.marker.read_text() == "off\n"  # once


def test_a_running_job_is_left_alone_then_unfetched_results_wait_out_the_grace(guards, tmp_path):
    g = guards(idle=0.5, grace=1)
    job = start_job(g.dir, 300)
    try:
        g.wait_log("started")
        time.sleep(1.5)  # three idle timeouts with no client: a running job keeps the machine
        assert not g.marker.exists(), g.log()
    finally:
        job.kill()
        job.wait()
    g.wait_log("the job ended; results not fetched yet")
    assert "no client fetched the results" in g.wait_off()


def test_the_exit_file_ends_the_job_even_if_its_group_lingers(guards):
    g = guards(grace=1)
    job = start_job(g.dir, 300)
    try:
        (g.dir / "job.exit").write_text("0\n")
        assert "no client fetched the results" in g.wait_off()
    finally:
        job.kill()
        job.wait()


def test_fetched_results_power_off_at_once(guards):
    g = guards(grace=3600, idle=3600)
    (g.dir / "job").write_text(f"999999999 {g.dir / 'job.exit'}\n")  # no such group: ended
    (g.dir / "fetched").write_text("release")
    assert "the results were fetched" in g.wait_off()


def test_a_kept_machine_follows_the_idle_rule(guards):
    g = guards(grace=3600, idle=1)
    (g.dir / "job").write_text(f"999999999 {g.dir / 'job.exit'}\n")
    (g.dir / "fetched").write_text("keep")
    assert "no client attached for 1s" in g.wait_off()


def test_bad_arguments_are_one_line_errors(tmp_path):
    script = tmp_path / "g.sh"
    script.write_text(guard.script_text())
    for args, said in ((["--bogus", "1"], "unknown argument --bogus"), ([], "--dir is required"),
                       (["--dir"], "--dir needs a value")):
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stderr.strip() == f"gpujob-guard: {said}", proc.stderr


@pytest.mark.sshd
def test_an_attached_ssh_client_holds_the_machine_until_it_leaves(guards, tmp_path):
    """Results fetched, job ended: the guard still waits while an SSH connection is established."""
    from launcher.remote import Session

    if Sshd.available():
        pytest.skip(Sshd.available())
    pem, pub = generate_ed25519("client")
    key = write_private_key(tmp_path / "id", pem)
    with Sshd(tmp_path / "sshd", authorized_keys=[pub]) as server:
        session = Session(server.host, server.port, server.user, key, host_keys=[server.host_public])
        session.connect()
        g = guards(port=server.port, grace=0.5, idle=0.5)
        (g.dir / "job").write_text(f"999999999 {g.dir / 'job.exit'}\n")
        (g.dir / "fetched").write_text("release")
        g.wait_log("started")
        time.sleep(1.5)  # past every timer: the attached client keeps the machine
        assert not g.marker.exists(), g.log()
        session.close()
        assert "the results were fetched and no client is attached" in g.wait_off()


# --- what the boot scripts embed, and the client's side -----------------------------------------


def test_limits_are_validated_with_one_line_errors():
    from launcher.errors import SpecError

    spec = parse_spec("name: x\nlimits: {unfetched_grace: 20m, idle_timeout: 2m}\n")
    assert (spec.limits.unfetched_grace, spec.limits.idle_timeout) == (1200, 120)
    default = parse_spec("name: x\n").limits
    assert (default.unfetched_grace, default.idle_timeout) == (900, 600)
    for text, said in (("unfetched_grace: 5s", "at least 1m"), ("idle_timeout: later", "not a duration"),
                       ("idle_timeout: -3m", "not a duration")):
        with pytest.raises(SpecError) as info:
            parse_spec(f"name: x\nlimits: {{{text}}}\n")
        assert said in str(info.value) and "\n" not in str(info.value), str(info.value)


def embedded_guard(boot_script: str, dest: Path) -> Path:
    """The guard script exactly as a boot script installs it."""
    found = re.search(r"<<'GPUJOB_GUARD_END'\n(.*?)\nGPUJOB_GUARD_END\n", boot_script, re.S)
    assert found, "the boot script installs no guard"
    dest.write_text(found.group(1) + "\n")
    return dest


def test_both_boot_scripts_start_the_guard_with_the_spec_limits():
    from launcher.providers.aws.common import render_user_data
    from launcher.providers.gcp.selection import render_startup

    limits = parse_spec("name: x\nlimits: {unfetched_grace: 20m, idle_timeout: 3m}\n").limits
    priv, pub = generate_ed25519("host")
    for text in (render_user_data(priv, pub, limits), render_startup("r1", priv, pub, limits)):
        assert f"--dir {guard.GUARD_DIR} --ssh-port 22 --unfetched-grace 1200 --idle-timeout 180" in text
        assert "install -d -m 1777 " + guard.GUARD_DIR in text and "systemd-run --unit=gpujob-guard" in text
        assert "ClientAliveInterval 15" in text  # dead clients stop counting as attached
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
        found = re.search(r"<<'GPUJOB_GUARD_END'\n(.*?)\nGPUJOB_GUARD_END\n", text, re.S)
        assert found and found.group(1) == guard.script_text().rstrip("\n")


def test_the_job_start_records_the_job_for_the_guard_locally(tmp_path):
    from launcher.localhost import LocalHost

    gdir = tmp_path / "g"
    gdir.mkdir()
    host = LocalHost()
    pid = host.start_detached("true", tmp_path, tmp_path / "log", tmp_path / "exit", started_file=gdir / "job")
    assert (gdir / "job").read_text() == f"{pid} {tmp_path / 'exit'}\n"
    guard.mark_fetched(host, {guard.EXTRA_KEY: str(gdir)}, keep=False)
    assert (gdir / "fetched").read_text() == "release"
    guard.mark_fetched(host, {guard.EXTRA_KEY: str(gdir)}, keep=True)
    assert (gdir / "fetched").read_text() == "keep"
    guard.mark_fetched(host, {guard.EXTRA_KEY: str(tmp_path / "absent")}, keep=False)  # no guard dir: no-op
    assert not (tmp_path / "absent").exists()


# --- end to end: the Runner, a fake cloud, the guard from the boot script ----------------------


def guarded(e2e, tmp_path: Path, guards, user_data_of, **timers):
    """Make each machine the E2E runner launches run its boot script's guard, watching a test
    directory and the machine's loopback sshd. Returns the list of started guards."""
    started: list[Guard] = []
    launch = e2e.provider.launch

    def with_guard(spec, ctx, deadline_s):
        m = launch(spec, ctx, deadline_s)
        assert m.extra[guard.EXTRA_KEY] == guard.GUARD_DIR  # the provider says the machine has one
        gdir = tmp_path / f"guard-{m.id}"
        script = embedded_guard(user_data_of(m), tmp_path / f"guard-{m.id}.sh")
        started.append(guards(gdir=gdir, port=m.port, script=script, **timers))
        return dataclasses.replace(m, extra={**m.extra, guard.EXTRA_KEY: str(gdir)})

    e2e.provider.launch = with_guard
    return started


@pytest.fixture
def aws_e2e(aws, tmp_path, monkeypatch):
    from launcher.providers.aws.launch import AwsProvider
    from tests.aws_fixtures import booted_sshd_for, fast_session
    from tests.e2e_support import E2E, guard_loopback, isolate, require_sshd

    require_sshd()
    guard_loopback(monkeypatch)
    isolate(tmp_path, monkeypatch)
    provider = AwsProvider(regions=["us-east-1"], ssh_cidr="127.0.0.1/32", session=fast_session(),
                           sleep=lambda s: time.sleep(min(s, 0.05)))
    run = E2E(provider, lambda m: booted_sshd_for(m.id, tmp_path / f"sshd-{m.id}", port=free_port(m.host)))
    yield run
    run.stop()


def aws_user_data(m) -> str:
    import base64

    import boto3

    attr = boto3.client("ec2", region_name=m.region).describe_instance_attribute(
        InstanceId=m.id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


@pytest.mark.sshd
def test_aws_normal_run_marks_the_results_fetched_and_the_guard_powers_off(aws_e2e, tmp_path, guards):
    from tests.aws_fixtures import loopback_addresses
    from tests.e2e_support import assert_trained, tiny_spec

    started = guarded(aws_e2e, tmp_path, guards, aws_user_data, grace=3600, idle=3600)
    with loopback_addresses(first=180):
        result = aws_e2e.run(tiny_spec("guard-aws", "{accelerators: 'T4:1', regions: [us-east-1]}"),
                             ssh_cidr="127.0.0.1/32")
    assert_trained(aws_e2e, result)
    (g,) = started
    pgid, exit_file = (g.dir / "job").read_text().split()
    assert int(pgid) == result.run.machine["pid"] and exit_file.endswith("/job.exit")
    assert (g.dir / "fetched").read_text() == "release"
    assert "the results were fetched" in g.wait_off()  # the client left: off at once, not after an hour


@pytest.mark.sshd
def test_gcp_detached_run_nobody_fetches_the_guard_powers_off_after_the_grace(tmp_path, monkeypatch, guards):
    pytest.importorskip("google.cloud.compute_v1")
    from launcher.providers.gcp.launch import GcpProvider
    from launcher.runner import RunOptions
    from tests.e2e_support import E2E, guard_loopback, isolate, require_sshd, tiny_spec
    from tests.fake_gce import FakeGce

    require_sshd()
    guard_loopback(monkeypatch)
    isolate(tmp_path, monkeypatch)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with FakeGce(project="test-project", first_host=190) as fake:
        monkeypatch.setenv("GPUJOB_GCP_API_ENDPOINT", fake.url)
        provider = GcpProvider(project="test-project", ssh_cidr="127.0.0.1/32",
                               sleep=lambda s: time.sleep(min(s, 0.05)))
        e2e = E2E(provider, lambda m: Sshd(tmp_path / f"sshd-{m.id}", authorized_keys=fake.authorized_keys(m.id),
                                           host=m.host, port=free_port(m.host),
                                           host_key_pem=fake.host_key_pem(m.id)).start())
        try:
            started = guarded(e2e, tmp_path, guards, lambda m: fake.metadata(m.id)["startup-script"],
                              grace=1, idle=3600)
            spec = tiny_spec("guard-gcp", "{accelerators: 'T4:1', regions: [us-central1]}")
            result = e2e.runner.run(spec, RunOptions(provider="gcp", provider_config={"ssh_cidr": "127.0.0.1/32"},
                                                     detach=True, baseline=False, launch_deadline_s=60,
                                                     ssh_deadline_s=30))
            assert result.run.state == "running"  # the client is gone; the job goes on
            (g,) = started
            assert "no client fetched the results" in g.wait_off()
            assert (Path(result.run.machine["workdir"]) / "job.exit").read_text().strip() == "0"
            assert not (g.dir / "fetched").exists()
        finally:
            e2e.stop()
