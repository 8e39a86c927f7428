"""The interruption matrix (issue 14): aws (moto server) / gcp (tests/fake_gce.py, the real
google-cloud-compute client) / ssh (loopback sshd) x SIGINT, SIGTERM, SIGHUP, SIGKILL x the stages
provisioning, waiting for SSH, upload, running, fetch: 60 cells.

Each cell runs the real CLI as a child process (tests/cli_child.py: `gpujob run`, a cloud machine
booting as a loopback sshd), started as a user starts it: SIGINT at its default (a background job
of a non-interactive shell would ignore it). The child announces the stage and holds inside it
until the signal arrives (`running`: once the job's log is stored, the job goes on), so every signal
lands in its stage. Then:
- SIGINT / SIGTERM / SIGHUP: the CLI exits 130, the record is `interrupted` naming the signal;
- SIGKILL (`kill -9`): the run is left behind; `gpujob gc --yes` (another child) finds it orphaned
  through the dead client's lease, stops its job, brings its results home and releases it;
and in every cell: no instance, security group / firewall rule or key pair of the run exists in the
cloud, the store holds no live resource, the job's processes are gone, the ssh host keeps no
~/gpujob/RUN, nothing printed a traceback or "internal error"; a signal during the fetch still
brings the results home.

For speed one moto server and one sshd serve the module and the cells run CELL_WORKERS at a time
in one module fixture; each cell stays its own test, with its own outcome. Each aws cell has a
moto account of its own and each gcp cell a fake endpoint of its own: `gc` sweeps every tagged
resource of no live run it can see, so a shared cloud would let one cell's gc clean up (and
hide) another cell's leftovers; and "nothing left" is checked over the cell's whole cloud.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import itertools
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from launcher.localhost import group_alive
from launcher.store import Store
from tests.e2e_support import REPO, require_sshd
from tests.sshd import Sshd, free_port

pytestmark = [pytest.mark.sshd, pytest.mark.slow, pytest.mark.timeout(900)]

PROVIDERS = ("aws", "gcp", "ssh")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
STAGES = ("provisioning", "connecting", "uploading", "running", "fetching")
CELL_WORKERS = 8  # cells in flight at once: mostly waiting on sockets and children
WAIT_S = 120.0  # bound on any one wait (a hang fails the cell instead of the suite)
PROJECT = "test-project"  # the fake GCE project
REGION = {"aws": "us-east-1", "gcp": "us-central1"}
SLOW_PY = ("import os, time\nos.makedirs('outputs', exist_ok=True)\n"
           "for i in range(600):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"
           "open('outputs/done.txt', 'w').write('x')\n")
QUICK_PY = SLOW_PY.replace("range(600)", "range(3)")  # ends at once: the signal lands in the fetch


def cell_id(provider: str, sig: int, stage: str) -> str:
    return f"{provider}-{signal.Signals(sig).name}-{stage}"


CELLS = [(p, sig, st) for p in PROVIDERS for sig in SIGNALS for st in STAGES]


class Servers:
    """What the cells share: a moto server, a fake GCE endpoint, an sshd for the ssh provider."""

    def __init__(self, root: Path, stack: ExitStack):
        self.root = root
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "GPUJOB_"))}
        self.base_env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.lock = threading.Lock()
        self.aws_env = self._start_moto(stack)
        self.gce_hosts = itertools.count(100, 2)  # a fake per cell, its VMs at 127.0.0.100..
        self._start_sshd(stack)

    def _start_moto(self, stack: ExitStack) -> dict[str, str]:
        pytest.importorskip("moto")
        from moto.server import ThreadedMotoServer

        from tests.aws_fixtures import loopback_addresses, placement_groups

        port = free_port()
        env = {"AWS_DEFAULT_REGION": REGION["aws"], "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/gpujob-test-aws-config",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/gpujob-test-aws-credentials",
               "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for k in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(k)
        for k, v in {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            mp.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        stack.callback(server.stop)
        stack.enter_context(loopback_addresses(first=2))  # instances at 127.0.0.2..
        stack.enter_context(placement_groups())  # moto 5.2.1 lacks the API; gc lists placement groups
        self.accounts = itertools.count(100000000001)
        return env

    def aws_account(self) -> dict[str, str]:
        """A moto account of its own (its access key selects it): a cell's `gc` sweeps by tag and
        must neither see nor clean up another cell's resources."""
        from moto.iam.models import iam_backends

        from tests.aws_fixtures import register_dlami

        with self.lock:
            account = str(next(self.accounts))
        iam = iam_backends[account]["aws"]
        iam.create_user(REGION["aws"], "matrix")
        key = iam.create_access_key("matrix")
        creds = {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key}
        register_dlami(REGION["aws"], account=account, ec2=self.ec2(creds))
        return creds

    def ec2(self, creds: dict[str, str]):
        import boto3

        return boto3.client("ec2", region_name=REGION["aws"], endpoint_url=self.aws_env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])

    def gce(self, stack: ExitStack) -> tuple[Any, dict[str, str]]:
        """A fake Compute Engine of the cell's own (its VMs at their own 127.0.0.x addresses)."""
        pytest.importorskip("google.cloud.compute_v1")
        from tests.fake_gce import FakeGce

        with self.lock:
            first = next(self.gce_hosts)
        fake = FakeGce(project=PROJECT, first_host=first).start()
        stack.callback(fake.stop)
        return fake, {"GPUJOB_GCP_API_ENDPOINT": fake.url, "CLOUDSDK_CONFIG": str(self.root / "gcloud")}

    def _start_sshd(self, stack: ExitStack) -> None:
        from launcher.keys import generate_ed25519, write_private_key

        pem, public = generate_ed25519("gpujob-matrix")
        self.client_key = write_private_key(self.root / "id_ed25519", pem)
        self.sshd = Sshd(self.root / "sshd", authorized_keys=[public]).start()
        stack.callback(self.sshd.stop)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(self.sshd.known_hosts_line() + "\n")

    def provider_args(self, provider: str) -> list[str]:
        if provider == "ssh":
            return ["--host", self.sshd.host, "--port", str(self.sshd.port), "--user", self.sshd.user,
                    "-i", str(self.client_key), "--known-hosts", str(self.known_hosts)]
        args = ["--region", REGION[provider], "--ssh-cidr", "127.0.0.1/32"]
        return args + (["--project", PROJECT] if provider == "gcp" else [])

    def aws_leftovers(self, creds: dict[str, str]) -> list[str]:
        """What the cell's own account still holds: live instances, security groups, key pairs."""
        ec2 = self.ec2(creds)
        live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": [
            "pending", "running", "stopping", "stopped", "shutting-down"]}])
        left = [f"instance {i['InstanceId']}" for r in live["Reservations"] for i in r["Instances"]]
        left += [f"security-group {g['GroupId']}" for g in ec2.describe_security_groups()["SecurityGroups"]
                 if g["GroupName"] != "default"]
        return left + [f"key-pair {k['KeyName']}" for k in ec2.describe_key_pairs()["KeyPairs"]]


def _wait(what: str, ready, proc: subprocess.Popen, out: Path) -> None:
    end = time.monotonic() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the CLI exited {proc.returncode} before {what}:\n{out.read_text()[-3000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"never reached {what} in {WAIT_S:.0f} s:\n{out.read_text()[-3000:]}")
        time.sleep(0.05)


def _start_sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _reap_booted(boot_dir: Path) -> None:
    """Stop the sshd that each booted machine is (the child started them; a killed child can't)."""
    for pid_file in boot_dir.glob("*/sshd.pid"):
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass


def run_cell(servers: Servers, provider: str, sig: int, stage: str) -> None:
    """One cell; raises AssertionError saying what went wrong."""
    d = servers.root / cell_id(provider, sig, stage)
    project, home, boot = d / "project", d / "home", d / "machines"
    for p in (project, home, boot):
        p.mkdir(parents=True)
    (project / "slow.py").write_text(QUICK_PY if stage == "fetching" else SLOW_PY)
    accel = "{accelerators: 'T4:1'}" if provider != "ssh" else "{}"
    (project / "job.yaml").write_text(f"name: m-{provider}\npayload: {{entrypoint: slow.py, python: {sys.executable}}}\n"
                                      f"resources: {accel}\nlimits: {{max_duration: 10m}}\n")
    cloud: dict[str, str] = {}
    with ExitStack() as stack:
        if provider == "aws":
            cloud = {**servers.aws_env, **servers.aws_account()}
            leftovers = lambda: servers.aws_leftovers(cloud)  # noqa: E731
        elif provider == "gcp":
            fake, cloud = servers.gce(stack)
            leftovers = fake.leftovers
        else:
            leftovers = list
        _run_cell(servers, provider, sig, stage, d, {**servers.base_env, **cloud}, leftovers)


def _run_cell(servers: Servers, provider: str, sig: int, stage: str, d: Path, env: dict[str, str], leftovers) -> None:
    project, home, boot, announce = d / "project", d / "home", d / "machines", d / "stage"
    env = {**env, "GPUJOB_HOME": str(d / "state"),
           "HOME": str(home), "GPUJOB_TEST_HOLD": stage,
           "GPUJOB_TEST_ANNOUNCE": str(announce), "GPUJOB_TEST_BOOT_DIR": str(boot) if provider != "ssh" else ""}
    out = d / "cli.out"
    args = ["run", "job.yaml", "--provider", provider, "--no-baseline", *servers.provider_args(provider)]
    try:
        with open(out, "w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "tests.cli_child", *args], cwd=project, env=env,
                                    stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_start_sigint_default)
        try:
            db = d / "state" / "runs.db"
            # announced by the child: the parent never opens the run database while the CLI runs
            _wait(f"stage {stage}", announce.exists, proc, out)
            os.kill(proc.pid, sig)
            proc.wait(WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = out.read_text()
        gc_text = ""
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
            gc_args = ["gc", "--provider", provider, "--yes"]
            if provider != "ssh":
                gc_args += ["--region", REGION[provider]] + (["--project", PROJECT] if provider == "gcp" else [])
            gc = subprocess.run([sys.executable, "-m", "launcher", *gc_args], cwd=project, capture_output=True,
                                text=True, timeout=WAIT_S, env={k: v for k, v in env.items()
                                                                if not k.startswith("GPUJOB_TEST_")})
            gc_text = gc.stdout + gc.stderr
            assert gc.returncode == 0, f"gc exited {gc.returncode}:\n{gc_text}"
        else:
            assert proc.returncode == 130, f"exit {proc.returncode}, not 130:\n{text[-3000:]}"
        for what, said in (("the CLI", text), ("gc", gc_text)):
            assert "Traceback" not in said and "internal error" not in said, f"{what} printed:\n{said[-3000:]}"
        store = Store(db)
        (rec,) = store.list_runs()
        assert rec.state == "interrupted", (rec.state, rec.reason, text[-2000:], gc_text)
        if sig == signal.SIGKILL:
            assert "collected by gpujob gc" in (rec.reason or ""), rec.reason
        else:
            assert signal.Signals(sig).name in (rec.reason or ""), rec.reason
        assert store.resources(rec.id) == [], store.resources(rec.id)
        assert leftovers() == []  # the cell's own account / fake: nothing of any run is left
        pid = (rec.machine or {}).get("pid")
        if pid:  # the job was started (on this machine, through loopback sshd): it is stopped
            end = time.monotonic() + WAIT_S
            while group_alive(pid) and time.monotonic() < end:
                time.sleep(0.1)
            assert not group_alive(pid), f"job process group {pid} still runs"
        if provider == "ssh":  # failure 10: nothing of the run stays on the user's own machine
            workdir = Path(pwd.getpwnam(servers.sshd.user).pw_dir) / "gpujob" / rec.id
            assert not workdir.exists(), f"{workdir} left behind: {sorted(p.name for p in workdir.iterdir())}"
        if stage == "fetching":  # the job had ended: its results came home before the release
            assert rec.exit_status == 0 and rec.fetched_at, (rec.exit_status, rec.fetched_at)
            assert (Path(rec.artifacts_dir) / "outputs" / "done.txt").is_file()
    finally:
        _reap_booted(boot)


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    """Run the selected cells concurrently; {cell id: None (passed) or what failed}."""
    require_sshd()
    wanted = {item.callspec.id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")}
    # providers interleaved: the cells that import the heavier SDK are spread out
    cells = sorted((c for c in CELLS if cell_id(*c) in wanted), key=lambda c: (STAGES.index(c[2]), c[1], c[0]))
    results: dict[str, str | None] = {}
    with ExitStack() as stack:
        servers = Servers(tmp_path_factory.mktemp("matrix"), stack)

        def one(cell):
            start = time.monotonic()
            try:
                run_cell(servers, *cell)
                results[cell_id(*cell)] = None
            except BaseException as exc:  # noqa: BLE001 - reported by the cell's own test
                results[cell_id(*cell)] = "".join(traceback.format_exception_only(type(exc), exc)) or repr(exc)
            finally:
                (servers.root / cell_id(*cell) / "seconds").write_text(f"{time.monotonic() - start:.1f}")

        with ThreadPoolExecutor(CELL_WORKERS) as pool:
            list(pool.map(one, cells))
    return results


@pytest.mark.parametrize("provider,sig,stage", [pytest.param(*c, id=cell_id(*c)) for c in CELLS])
def test_signal_at_every_stage_releases_everything(matrix, provider, sig, stage):
    problem = matrix.get(cell_id(provider, sig, stage), "the cell did not run")
    if problem:
        pytest.fail(problem, pytrace=False)
