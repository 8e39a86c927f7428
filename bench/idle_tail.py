"""The billed idle tail after a normal run: seconds from the payload's last training step to the
call that ends the machine (EC2 TerminateInstances, Compute Engine instances.delete).

A normal run through the real Runner and provider: AWS under moto, GCP against tests/fake_gce.py,
the machine a real OpenSSH sshd on a 127.0.0.x address (as in tests/test_e2e_*.py). The last
step's time is the payload's own `step` event (logged every step); the end call's time is taken
where the provider makes it (a botocore before-call hook; the fake endpoint's delete handler).
The tail splits into: last step -> the payload's `end` event (final evaluation and checkpoint),
-> the client sees the exit (job_ended_at), -> results home (fetched_at), -> the end call.
Goal: at most 60 s.

    python bench/idle_tail.py [--runs 3] [--providers aws,gcp] [--out bench/results/idle_tail.json]
                                                                  (root, OpenSSH's sshd, moto)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ssh_bench import write_json  # noqa: E402
from launcher.runner import RunOptions  # noqa: E402
from launcher.spec import parse_spec  # noqa: E402
from tests.e2e_support import E2E, TINY_WORKLOAD  # noqa: E402
from tests.sshd import Sshd, free_port  # noqa: E402

SPEC = """name: idle-tail
workload: {workload}
payload: {{python: {python}, args: ["--log-every", "1"]}}
resources: {resources}
limits: {{max_duration: 5m}}
"""
RESOURCES = {"aws": "{accelerators: 'T4:1', regions: [us-east-1]}",
             "gcp": "{accelerators: 'T4:1', regions: [us-central1]}"}


def payload_times(log: str) -> dict[str, float]:
    """Wall-clock times of the payload's last `step` and its `end` event (from its JSON lines)."""
    found: dict[str, float] = {}
    for line in log.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") in ("step", "end") and "time" in ev:
            found[ev["event"]] = float(ev["time"])
    return found


def measure(e2e: E2E, provider: str, ended: list[float]) -> dict:
    ended.clear()
    spec = parse_spec(SPEC.format(workload=TINY_WORKLOAD, python=sys.executable, resources=RESOURCES[provider]))
    result = e2e.runner.run(spec, RunOptions(provider=provider, provider_config={"ssh_cidr": "127.0.0.1/32"},
                                             baseline=False, launch_deadline_s=60, ssh_deadline_s=30))
    rec = result.run
    assert rec.state == "succeeded", rec.reason
    t = payload_times(e2e.runner.store.log_text(rec.id))
    end_call = ended[0]
    return {
        "last_step_to_end_call_s": round(end_call - t["step"], 3),
        "last_step_to_payload_end_s": round(t["end"] - t["step"], 3),
        "payload_end_to_exit_seen_s": round(rec.job_ended_at - t["end"], 3),
        "exit_seen_to_fetched_s": round(rec.fetched_at - rec.job_ended_at, 3),
        "fetched_to_end_call_s": round(end_call - rec.fetched_at, 3),
    }


def measure_runs(e2e: E2E, provider: str, ended: list[float], runs: int) -> list[dict]:
    """``runs`` normal runs one after the other on the same fake cloud; its machines stop at the end."""
    try:
        return [measure(e2e, provider, ended) for _ in range(runs)]
    finally:
        e2e.stop()


def aws_runs(tmp: Path, runs: int) -> list[dict]:
    from moto import mock_aws

    from launcher.providers.aws.launch import AwsProvider
    from tests.aws_fixtures import (booted_sshd_for, fast_session, loopback_addresses, placement_groups,
                                    register_dlami)

    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true"),
                       ("AWS_CONFIG_FILE", "/nonexistent"), ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
                       ("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")):
        os.environ[var] = value
    with mock_aws(), placement_groups(), loopback_addresses(first=200):
        register_dlami("us-east-1")
        session = fast_session()
        ended: list[float] = []
        session.events.register("before-call.ec2.TerminateInstances", lambda **kw: ended.append(time.time()))
        provider = AwsProvider(regions=["us-east-1"], ssh_cidr="127.0.0.1/32", session=session,
                               sleep=lambda s: time.sleep(min(s, 0.05)))
        e2e = E2E(provider, lambda m: booted_sshd_for(m.id, tmp / f"sshd-{m.id}", port=free_port(m.host)))
        return measure_runs(e2e, "aws", ended, runs)


def gcp_runs(tmp: Path, runs: int) -> list[dict]:
    from launcher.providers.gcp.launch import GcpProvider
    from tests.fake_gce import FakeGce

    with FakeGce(project="bench-project", first_host=220) as fake:
        os.environ["GPUJOB_GCP_API_ENDPOINT"] = fake.url
        ended: list[float] = []
        delete = fake._delete_instance
        fake._delete_instance = lambda *a, **k: (ended.append(time.time()), delete(*a, **k))[1]
        provider = GcpProvider(project="bench-project", ssh_cidr="127.0.0.1/32", sleep=lambda s: time.sleep(min(s, 0.05)))
        e2e = E2E(provider, lambda m: Sshd(tmp / f"sshd-{m.id}", authorized_keys=fake.authorized_keys(m.id),
                                           host=m.host, port=free_port(m.host),
                                           host_key_pem=fake.host_key_pem(m.id)).start())
        return measure_runs(e2e, "gcp", ended, runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--providers", default="aws,gcp")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    out = str(Path(a.out).resolve()) if a.out else None  # before the run moves into its project dir
    why = Sshd.available()
    if why:
        print(json.dumps({"skipped": why}))
        return
    report: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "goal_s": 60, "providers": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["GPUJOB_HOME"] = str(tmp / "state")
        os.environ["HOME"] = str(tmp / "home")  # no ~/.ssh/known_hosts: the run must pin the provider's key
        (tmp / "home").mkdir()
        project = tmp / "project"
        project.mkdir()
        os.chdir(project)
        for name in a.providers.split(","):
            runs = {"aws": aws_runs, "gcp": gcp_runs}[name](tmp / name, a.runs)
            report["providers"][name] = {"runs": runs, "median": {k: round(statistics.median(r[k] for r in runs), 3)
                                                                  for k in runs[0]}}
    report["max_last_step_to_end_call_s"] = max(r["last_step_to_end_call_s"] for p in report["providers"].values()
                                                 for r in p["runs"])
    write_json(report, out)


if __name__ == "__main__":
    main()
