"""The client's own overhead for a run against a real sshd on loopback.

Prints JSON: seconds from "SSH reachable" to "first training step" (split into the client's
part - upload, config, detached start - and the payload's own start-up), seconds from the
last step to "teardown done", and how many SSH connections the run opened (target: one).

    python bench/ssh_overhead.py [--runs 3]     (needs root and OpenSSH's sshd)
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

from launcher.keys import generate_ed25519, write_private_key  # noqa: E402
from launcher.runner import RunOptions, Runner  # noqa: E402
from launcher.spec import parse_spec  # noqa: E402
from launcher.store import Store  # noqa: E402
from tests.sshd import Sshd  # noqa: E402

SPEC = f"""
name: bench-ssh
workload: {{model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits,
           samples_per_epoch: 512, epochs: 1, batch_size: 64, precision: fp32}}
payload: {{python: {sys.executable}, args: ["--log-every", "1"]}}
limits: {{max_duration: 5m}}
"""


def one_run(tmp: Path, server: Sshd, key: Path) -> dict:
    known = tmp / "known_hosts"
    known.write_text(server.known_hosts_line() + "\n")
    marks: dict[str, float] = {}
    steps: list[float] = []
    connections = [0]

    def on_event(kind, **f):
        now = time.perf_counter()
        if kind == "log" or kind == "progress" or kind == "payload":
            ev = f.get("event") if kind == "payload" else None
            if kind == "progress":
                steps.append(now)
            elif ev and ev.get("event") == "step":
                steps.append(now)
        elif kind == "connections":
            connections[0] = f["opened"]
        marks.setdefault(kind, now)
        if kind in ("teardown-done",):
            marks[kind] = now

    runner = Runner(store=Store(tmp / "runs.db"), on_event=on_event)
    opts = RunOptions(provider="ssh", baseline=False, artifacts_dir=str(tmp / "out"),
                      provider_config={"host": server.host, "port": server.port, "user": server.user,
                                       "identity": str(key), "known_hosts": str(known)})
    runner.run(parse_spec(SPEC), opts)
    return {
        "client_reachable_to_job_started_s": marks["job-started"] - marks["connected"],
        "payload_startup_to_first_step_s": steps[0] - marks["job-started"],
        "reachable_to_first_step_s": steps[0] - marks["connected"],
        "last_step_to_teardown_done_s": marks["teardown-done"] - steps[-1],
        "ssh_connections": connections[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    why = Sshd.available()
    if why:
        print(json.dumps({"skipped": why}))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["GPUJOB_HOME"] = str(tmp / "home")
        pem, pub = generate_ed25519("bench")
        key = write_private_key(tmp / "id_ed25519", pem)
        with Sshd(tmp / "sshd", authorized_keys=[pub]).start() as server:
            runs = []
            for i in range(args.runs):
                sub = tmp / f"run{i}"
                sub.mkdir()
                runs.append(one_run(sub, server, key))
    keys = runs[0].keys()
    print(json.dumps({"runs": runs, "median": {k: statistics.median(r[k] for r in runs) for k in keys},
                      "python": sys.version.split()[0], "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
